//! The ways a simulated method call fails, with the errno names and message shapes the
//! middleware sends.

use serde_json::{json, Value};

pub const EPERM: i32 = 1;
pub const ENOENT: i32 = 2;
pub const EAGAIN: i32 = 11;
pub const EACCES: i32 = 13;
pub const EFAULT: i32 = 14;
pub const EBUSY: i32 = 16;
pub const EINVAL: i32 = 22;
pub const EOPNOTSUPP: i32 = 95;
pub const ENOMETHOD: i32 = 201;
pub const ENOTAUTHENTICATED: i32 = 207;

/// The symbolic name of an errno, as Python's `errno.errorcode` and the middleware's own
/// additions give it.
pub fn errname(errno: i32) -> &'static str {
    match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        EAGAIN => "EAGAIN",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        17 => "EEXIST",
        EINVAL => "EINVAL",
        EOPNOTSUPP => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        ENOMETHOD => "ENOMETHOD",
        202 => "ESERVICESTARTFAILURE",
        203 => "EALERTCHECKERUNAVAILABLE",
        204 => "EREMOTENODEERROR",
        205 => "EDATASETISLOCKED",
        206 => "EINVALIDRRDTIMESTAMP",
        ENOTAUTHENTICATED => "ENOTAUTHENTICATED",
        208 => "ESSLCERTVERIFICATIONERROR",
        209 => "EREBOOTREQUIRED",
        210 => "EHAUNAVAILABLE",
        _ => "EUNKNOWN",
    }
}

/// One failed field: attribute (`None` prints as `None`, like Python), message, errno.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub attribute: Option<String>,
    pub message: String,
    pub errno: i32,
}

/// Why a method call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallFailure {
    /// A `CallError`: JSON-RPC -32001, reason `[ERRNAME] message`.
    Call { errno: i32, message: String },
    /// One or more `ValidationError`s: JSON-RPC -32602 "Invalid params".
    Validation(Vec<FieldError>),
    /// Any other exception the middleware lets escape: -32001 with errno EINVAL and
    /// `str(exc) or repr(exc)` as the reason.
    Exception { class: &'static str, reason: String },
}

impl CallFailure {
    pub fn call(errno: i32, message: impl Into<String>) -> Self {
        CallFailure::Call {
            errno,
            message: message.into(),
        }
    }

    pub fn not_authenticated() -> Self {
        Self::call(ENOTAUTHENTICATED, "Not authenticated")
    }

    pub fn not_authorized() -> Self {
        Self::call(EACCES, "Not authorized")
    }

    /// A single validation error with errno EINVAL.
    pub fn invalid(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        CallFailure::Validation(vec![FieldError {
            attribute: Some(attribute.into()),
            message: message.into(),
            errno: EINVAL,
        }])
    }

    /// `InstanceNotFound`: a validation error without attribute and with errno ENOENT.
    pub fn instance_not_found(message: impl Into<String>) -> Self {
        CallFailure::Validation(vec![FieldError {
            attribute: None,
            message: message.into(),
            errno: ENOENT,
        }])
    }

    /// `MatchNotFound` escaping a method: its `str()` is empty, so the reason is its `repr()`.
    pub fn match_not_found() -> Self {
        CallFailure::Exception {
            class: "MatchNotFound",
            reason: "MatchNotFound()".into(),
        }
    }

    pub fn errno(&self) -> i32 {
        match self {
            CallFailure::Call { errno, .. } => *errno,
            CallFailure::Validation(_) | CallFailure::Exception { .. } => EINVAL,
        }
    }

    /// The `reason` string, exactly as `str(exception)` renders it.
    pub fn reason(&self) -> String {
        match self {
            CallFailure::Call { errno, message } => format!("[{}] {message}", errname(*errno)),
            CallFailure::Validation(errors) => errors
                .iter()
                .map(|e| {
                    let attribute = e.attribute.as_deref().unwrap_or("None");
                    format!("[{}] {attribute}: {}\n", errname(e.errno), e.message)
                })
                .collect(),
            CallFailure::Exception { reason, .. } => reason.clone(),
        }
    }

    /// `[[attribute, message, errno], ...]` for validation errors, `null` otherwise.
    pub fn extra(&self) -> Value {
        match self {
            CallFailure::Validation(errors) => errors
                .iter()
                .map(|e| json!([e.attribute, e.message, e.errno]))
                .collect(),
            _ => Value::Null,
        }
    }

    fn class(&self) -> &'static str {
        match self {
            CallFailure::Call { .. } => "CallError",
            CallFailure::Validation(_) => "ValidationErrors",
            CallFailure::Exception { class, .. } => class,
        }
    }

    /// A traceback object shaped like the middleware's; the double has no Python frames.
    pub fn trace(&self) -> Value {
        let class = self.class();
        let reason = self.reason();
        json!({
            "class": class,
            "frames": [],
            "formatted": format!("Traceback (most recent call last):\n{class}: {reason}\n"),
            "repr": format!("{class}({reason:?})"),
        })
    }

    /// The `data` member of a JSON-RPC error: `{error, errname, reason, trace, extra}`.
    pub fn rpc_data(&self) -> Value {
        let errno = self.errno();
        json!({
            "error": errno,
            "errname": errname(errno),
            "reason": self.reason(),
            "trace": self.trace(),
            "extra": self.extra(),
        })
    }

    /// The JSON-RPC error code and message for this failure.
    pub fn rpc_code(&self) -> (i64, &'static str) {
        match self {
            CallFailure::Validation(_) => (-32602, "Invalid params"),
            _ => (-32001, "Method call error"),
        }
    }

    /// The error object of the legacy `/websocket` protocol: validation errors carry
    /// `type: "VALIDATION"` and errno EAGAIN.
    pub fn legacy_error(&self) -> Value {
        let (errno, kind) = match self {
            CallFailure::Validation(_) => (EAGAIN, Value::from("VALIDATION")),
            _ => (self.errno(), Value::Null),
        };
        json!({
            "error": errno,
            "errname": errname(errno),
            "type": kind,
            "reason": self.reason(),
            "trace": self.trace(),
            "extra": self.extra(),
        })
    }
}

pub type CallResult = Result<Value, CallFailure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_error_reason_has_errname_prefix() {
        let failure = CallFailure::not_authenticated();
        let data = failure.rpc_data();
        assert_eq!(data["error"], 207);
        assert_eq!(data["errname"], "ENOTAUTHENTICATED");
        assert_eq!(data["reason"], "[ENOTAUTHENTICATED] Not authenticated");
        assert_eq!(data["extra"], Value::Null);
        assert_eq!(data["trace"]["class"], "CallError");
        assert_eq!(failure.rpc_code(), (-32001, "Method call error"));
    }

    #[test]
    fn validation_errors_join_lines_and_list_extra() {
        let failure = CallFailure::Validation(vec![
            FieldError {
                attribute: Some("api_key_create".into()),
                message: "name must be unique".into(),
                errno: EINVAL,
            },
            FieldError {
                attribute: None,
                message: "ApiKey 9 does not exist".into(),
                errno: ENOENT,
            },
        ]);
        let data = failure.rpc_data();
        assert_eq!(failure.rpc_code(), (-32602, "Invalid params"));
        assert_eq!(data["error"], EINVAL);
        assert_eq!(
            data["reason"],
            "[EINVAL] api_key_create: name must be unique\n[ENOENT] None: ApiKey 9 does not exist\n"
        );
        assert_eq!(
            data["extra"],
            json!([
                ["api_key_create", "name must be unique", 22],
                [null, "ApiKey 9 does not exist", 2]
            ])
        );
    }

    #[test]
    fn match_not_found_is_an_exception_with_repr_reason() {
        let data = CallFailure::match_not_found().rpc_data();
        assert_eq!(data["reason"], "MatchNotFound()");
        assert_eq!(data["error"], EINVAL);
    }

    #[test]
    fn legacy_validation_errors_use_eagain() {
        let legacy = CallFailure::invalid("x", "bad").legacy_error();
        assert_eq!(legacy["type"], "VALIDATION");
        assert_eq!(legacy["error"], EAGAIN);
        assert_eq!(
            CallFailure::not_authorized().legacy_error()["type"],
            Value::Null
        );
    }
}
