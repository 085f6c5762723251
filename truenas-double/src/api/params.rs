//! Checks of positional parameters, with the messages pydantic gives the middleware.

use serde_json::{Map, Value};

use super::error::{CallFailure, FieldError, EINVAL};

/// Collects field errors, so that one call reports all of them like pydantic does.
#[derive(Default)]
pub struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    pub fn fail(&mut self, loc: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            attribute: Some(loc.into()),
            message: message.into(),
            errno: EINVAL,
        });
    }

    pub fn finish(self) -> Result<(), CallFailure> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(CallFailure::Validation(self.errors))
        }
    }

    /// A string field; records an error and answers `None` when it is not one.
    pub fn string<'v>(&mut self, value: &'v Value, loc: &str) -> Option<&'v str> {
        let text = value.as_str();
        if text.is_none() {
            self.fail(loc, "Input should be a valid string");
        }
        text
    }

    pub fn boolean(&mut self, value: &Value, loc: &str) -> Option<bool> {
        let flag = value.as_bool();
        if flag.is_none() {
            self.fail(loc, "Input should be a valid boolean");
        }
        flag
    }

    pub fn integer(&mut self, value: &Value, loc: &str) -> Option<i64> {
        let number = value.as_i64();
        if number.is_none() {
            self.fail(loc, "Input should be a valid integer");
        }
        number
    }

    /// A datetime, which arrives as extended JSON `{"$date": ms}`; `null` is allowed when
    /// `nullable`. Plain ISO strings are not decoded by the middleware's ejson and fail.
    pub fn datetime(&mut self, value: &Value, loc: &str, nullable: bool) -> Option<Option<i64>> {
        if value.is_null() && nullable {
            return Some(None);
        }
        let ms = value
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("$date"))
            .and_then(Value::as_i64);
        if ms.is_none() {
            self.fail(loc, "Input should be a valid datetime");
        }
        ms.map(Some)
    }

    /// Reports each key of `object` outside `allowed`.
    pub fn no_extra(&mut self, object: &Map<String, Value>, allowed: &[&str], prefix: &str) {
        for key in object.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.fail(format!("{prefix}.{key}"), "Extra inputs are not permitted");
        }
    }
}

/// Fails when more positional parameters arrive than the method takes.
pub fn check_count(params: &[Value], names: &[&str]) -> Result<(), CallFailure> {
    if params.len() > names.len() {
        return Err(CallFailure::Validation(vec![FieldError {
            attribute: Some(String::new()),
            message: format!(
                "Too many arguments (expected {}, found {})",
                names.len(),
                params.len()
            ),
            errno: EINVAL,
        }]));
    }
    Ok(())
}

/// The parameter at `index`, or a "Field required" error naming it.
pub fn required<'p>(
    params: &'p [Value],
    index: usize,
    name: &str,
) -> Result<&'p Value, CallFailure> {
    params
        .get(index)
        .ok_or_else(|| CallFailure::invalid(name, "Field required"))
}

/// An object parameter, or the pydantic error for a model given something else.
pub fn object<'p>(value: &'p Value, loc: &str) -> Result<&'p Map<String, Value>, CallFailure> {
    value.as_object().ok_or_else(|| {
        CallFailure::invalid(
            loc,
            "Input should be a valid dictionary or instance of Model",
        )
    })
}

/// An integer id parameter.
pub fn id(params: &[Value], index: usize, name: &str) -> Result<u64, CallFailure> {
    let value = required(params, index, name)?;
    value
        .as_u64()
        .ok_or_else(|| CallFailure::invalid(name, "Input should be a valid integer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn too_many_arguments_message() {
        let failure = check_count(&[json!(1), json!(2)], &["id"]).expect_err("too many");
        assert_eq!(
            failure.reason(),
            "[EINVAL] : Too many arguments (expected 1, found 2)\n"
        );
    }

    #[test]
    fn datetime_accepts_only_extended_json() {
        let mut c = Checker::default();
        assert_eq!(c.datetime(&json!({"$date": 5}), "x", true), Some(Some(5)));
        assert_eq!(c.datetime(&Value::Null, "x", true), Some(None));
        assert_eq!(c.datetime(&json!("2030-01-01T00:00:00Z"), "x", true), None);
        let failure = c.finish().expect_err("one error");
        assert_eq!(
            failure.extra(),
            json!([["x", "Input should be a valid datetime", 22]])
        );
    }
}
