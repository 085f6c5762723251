//! Logging in with `auth.login_ex`: password (with its one-time code) or API key.

use serde::{Deserialize, Serialize};

use super::rpc::parse;
use super::{ClientError, Session};
use crate::secret::{ApiKey, OtpCode, Password};

/// How far a password login got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordLogin {
    /// The session is logged in.
    Success,
    /// The account uses two-factor authentication: call [`Session::continue_otp`].
    OtpRequired,
}

/// The argument of `auth.login_ex`; borrowed, so the secret is copied only into the request.
#[derive(Serialize)]
#[serde(tag = "mechanism", rename_all = "SCREAMING_SNAKE_CASE")]
enum LoginData<'a> {
    PasswordPlain {
        username: &'a str,
        password: &'a str,
    },
    ApiKeyPlain {
        username: &'a str,
        api_key: &'a str,
    },
    OtpToken {
        otp_token: &'a str,
    },
}

#[derive(Debug, Deserialize)]
#[serde(tag = "response_type", rename_all = "SCREAMING_SNAKE_CASE")]
enum LoginReply {
    Success,
    OtpRequired,
    AuthErr,
    Expired,
    Denied,
    Redirect {
        #[serde(default)]
        urls: Vec<String>,
    },
}

/// The secret kind a login used, which decides what AUTH_ERR and EXPIRED mean.
#[derive(Clone, Copy)]
enum Credential {
    Password,
    ApiKey,
}

impl Session {
    /// Logs in with a user name and password (`PASSWORD_PLAIN`).
    pub async fn login_password(
        &mut self,
        username: &str,
        password: &Password,
    ) -> Result<PasswordLogin, ClientError> {
        let secret = password.expose();
        let data = LoginData::PasswordPlain {
            username,
            password: secret,
        };
        self.login("auth.login_ex", &data, secret, Credential::Password)
            .await
    }

    /// Sends the one-time code after [`PasswordLogin::OtpRequired`].
    ///
    /// `OtpRequired` again means the code was wrong and TrueNAS allows another try.
    pub async fn continue_otp(&mut self, code: &OtpCode) -> Result<PasswordLogin, ClientError> {
        let secret = code.expose();
        let data = LoginData::OtpToken { otp_token: secret };
        self.login(
            "auth.login_ex_continue",
            &data,
            secret,
            Credential::Password,
        )
        .await
    }

    /// Logs in with the API key of `username` (`API_KEY_PLAIN`).
    pub async fn login_api_key(&mut self, username: &str, key: &ApiKey) -> Result<(), ClientError> {
        let secret = key.expose();
        let data = LoginData::ApiKeyPlain {
            username,
            api_key: secret,
        };
        match self
            .login("auth.login_ex", &data, secret, Credential::ApiKey)
            .await?
        {
            PasswordLogin::Success => Ok(()),
            PasswordLogin::OtpRequired => Err(ClientError::protocol(
                "the NAS asked for a one-time code after an API key",
            )),
        }
    }

    async fn login(
        &mut self,
        method: &str,
        data: &LoginData<'_>,
        secret: &str,
        credential: Credential,
    ) -> Result<PasswordLogin, ClientError> {
        let reply = self.call_with_secret(method, &[data], secret).await?;
        let reply: LoginReply = parse(method, reply)?;
        tracing::debug!(method, ?reply, "login answered");
        outcome(reply, credential)
    }
}

fn outcome(reply: LoginReply, credential: Credential) -> Result<PasswordLogin, ClientError> {
    match (reply, credential) {
        (LoginReply::Success, _) => Ok(PasswordLogin::Success),
        (LoginReply::OtpRequired, _) => Ok(PasswordLogin::OtpRequired),
        (LoginReply::AuthErr, Credential::Password) => Err(ClientError::AuthFailed),
        (LoginReply::AuthErr, Credential::ApiKey) => Err(ClientError::KeyRejected),
        (LoginReply::Expired, Credential::Password) => Err(ClientError::PasswordExpired),
        (LoginReply::Expired, Credential::ApiKey) => Err(ClientError::KeyExpired),
        (LoginReply::Denied, _) => Err(ClientError::Denied),
        (LoginReply::Redirect { urls }, _) => Err(ClientError::Redirect { urls }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn login_data_has_the_shape_login_ex_wants() {
        let data = LoginData::ApiKeyPlain {
            username: "svc",
            api_key: "1-abc",
        };
        let expected = json!({"mechanism": "API_KEY_PLAIN", "username": "svc", "api_key": "1-abc"});
        assert_eq!(serde_json::to_value(&data).expect("json"), expected);
        let otp = serde_json::to_value(LoginData::OtpToken {
            otp_token: "123456",
        })
        .expect("json");
        assert_eq!(
            otp,
            json!({"mechanism": "OTP_TOKEN", "otp_token": "123456"})
        );
    }

    #[test]
    fn an_unknown_response_type_does_not_parse() {
        let reply = json!({"response_type": "SCRAM_RESPONSE"});
        assert!(parse::<LoginReply>("auth.login_ex", reply).is_err());
    }
}
