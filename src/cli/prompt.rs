//! Everything that asks the user something goes through [`Prompter`]: the terminal in real
//! use, a scripted implementation in tests. Secrets for scripts come from files, never from
//! the command line.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::CliError;
use crate::secret::{read_secret_file, Passphrase, Pin, RecoveryCode};
use crate::token::PinStatus;

/// Asks the user for input. Prompts and notices go to the terminal, never to stdout.
pub trait Prompter {
    /// Reads a line without echo.
    fn secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, CliError>;
    /// Reads a line with echo.
    fn line(&mut self, prompt: &str) -> Result<String, CliError>;
    /// Tells the user something they must see now (touch the key, a warning).
    fn notice(&mut self, text: &str);
    /// Shows a secret the user must write down (a new recovery code) on the terminal only,
    /// never on stdout or stderr, which may be a log file.
    fn show_secret(&mut self, _text: &str) -> Result<(), CliError> {
        Err(no_terminal_to_show())
    }
}

fn no_terminal_to_show() -> CliError {
    CliError::Usage(
        "there is no terminal to show the recovery code on.\n\
         For scripts, pass --save-recovery-code FILE (written with mode 0600), or --no-recovery-code."
            .into(),
    )
}

/// The controlling terminal (`/dev/tty`), so that prompts work with stdout piped.
pub struct Terminal;

fn no_terminal(what: &str) -> CliError {
    CliError::Usage(format!(
        "there is no terminal to ask for {what}.\n\
         For scripts, give it in a file: --passphrase-file, --pin-file, --password-file or --otp-file."
    ))
}

impl Prompter for Terminal {
    fn secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, CliError> {
        if !std::io::stdin().is_terminal()
            && OpenOptions::new().read(true).open("/dev/tty").is_err()
        {
            return Err(no_terminal(prompt.trim_end_matches([':', ' '])));
        }
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|_| no_terminal(prompt.trim_end_matches([':', ' '])))
    }

    fn line(&mut self, prompt: &str) -> Result<String, CliError> {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|_| no_terminal("an answer"))?;
        let mut out = &tty;
        let _ = write!(out, "{prompt}");
        let _ = out.flush();
        let mut answer = String::new();
        BufReader::new(&tty)
            .read_line(&mut answer)
            .map_err(|_| no_terminal("an answer"))?;
        Ok(answer.trim_end_matches(['\n', '\r']).to_string())
    }

    fn notice(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn show_secret(&mut self, text: &str) -> Result<(), CliError> {
        let tty = OpenOptions::new()
            .write(true)
            .open("/dev/tty")
            .map_err(|_| no_terminal_to_show())?;
        let mut out = &tty;
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|_| no_terminal_to_show())
    }
}

/// Where the passphrase and PIN come from: files named on the command line or in the
/// environment, else the prompter.
#[derive(Clone, Debug, Default)]
pub struct SecretSources {
    pub passphrase_file: Option<PathBuf>,
    pub pin_file: Option<PathBuf>,
    /// Open with the recovery code from this file instead of a token.
    pub recovery_code_file: Option<PathBuf>,
    /// Open with the recovery code, asked, instead of a token.
    pub ask_recovery_code: bool,
}

fn read_file_secret(path: &Path, what: &str) -> Result<Zeroizing<String>, CliError> {
    let text = read_secret_file(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the {what} file {}: {e}",
            path.display()
        ))
    })?;
    if text.is_empty() {
        return Err(CliError::Usage(format!(
            "the {what} file {} is empty",
            path.display()
        )));
    }
    Ok(text)
}

/// What `init` asks of a new passphrase.
#[derive(Clone, Copy, Debug)]
pub struct NewPassphrasePolicy {
    pub accept_weak: bool,
}

impl SecretSources {
    /// True when the user asked to open the keyring with the recovery code.
    pub fn wants_recovery(&self) -> bool {
        self.ask_recovery_code || self.recovery_code_file.is_some()
    }

    /// The recovery code, from its file or asked without echo.
    pub fn recovery_code(
        &self,
        ui: &mut dyn Prompter,
        keyring: &str,
    ) -> Result<RecoveryCode, CliError> {
        let text = match &self.recovery_code_file {
            Some(path) => read_file_secret(path, "recovery code")?,
            None => ui.secret(&format!("Recovery code for keyring \"{keyring}\": "))?,
        };
        Ok(RecoveryCode::new(text.trim().to_string()))
    }

    /// The passphrase of an existing keyring.
    pub fn passphrase(&self, ui: &mut dyn Prompter, keyring: &str) -> Result<Passphrase, CliError> {
        let text = match &self.passphrase_file {
            Some(path) => read_file_secret(path, "passphrase")?,
            None => ui.secret(&format!("Passphrase for keyring \"{keyring}\": "))?,
        };
        if text.is_empty() {
            return Err(CliError::Usage("the passphrase is empty".into()));
        }
        Ok(Passphrase::new(text.as_str().to_string()))
    }

    /// A new passphrase, typed twice, checked for strength.
    pub fn new_passphrase(
        &self,
        ui: &mut dyn Prompter,
        policy: NewPassphrasePolicy,
        context: &[&str],
    ) -> Result<Passphrase, CliError> {
        let text = match &self.passphrase_file {
            Some(path) => read_file_secret(path, "passphrase")?,
            None => {
                let first = ui.secret("New keyring passphrase: ")?;
                if first.is_empty() {
                    return Err(CliError::Usage(
                        "the passphrase is empty; choose one".into(),
                    ));
                }
                let second = ui.secret("Type it again: ")?;
                if first.as_str() != second.as_str() {
                    return Err(CliError::Usage(
                        "the two passphrases do not match; nothing was created. Try again.".into(),
                    ));
                }
                first
            }
        };
        if text.is_empty() {
            return Err(CliError::Usage(
                "the passphrase is empty; choose one".into(),
            ));
        }
        check_strength(&text, context, policy)?;
        Ok(Passphrase::new(text.as_str().to_string()))
    }

    /// A token PIN that differs from the passphrase, asked after showing the tries left.
    pub fn pin(
        &self,
        ui: &mut dyn Prompter,
        token: &str,
        status: &PinStatus,
    ) -> Result<Pin, CliError> {
        if let Some(path) = &self.pin_file {
            return Ok(Pin::new(
                read_file_secret(path, "PIN")?.as_str().to_string(),
            ));
        }
        if let Some(warning) = pin_warning(status) {
            ui.notice(&warning);
        }
        let tries = match status.tries_left {
            Some(1) => " (1 try left)".to_string(),
            Some(n) => format!(" ({n} tries left)"),
            None => String::new(),
        };
        let text = ui.secret(&format!("PIN for {token}{tries}: "))?;
        if text.is_empty() {
            return Err(CliError::Usage("the PIN is empty".into()));
        }
        Ok(Pin::new(text.as_str().to_string()))
    }
}

/// The warning to show before a PIN is used, if the token says tries are running out.
pub fn pin_warning(status: &PinStatus) -> Option<String> {
    if status.final_try || status.tries_left == Some(1) {
        Some("Warning: this is the token's final PIN try; a wrong PIN blocks it.".into())
    } else if status.count_low {
        Some("Warning: the token reports earlier wrong PINs; check before typing.".into())
    } else {
        None
    }
}

/// Refuses a guessable passphrase unless the user accepts it explicitly.
fn check_strength(
    text: &str,
    context: &[&str],
    policy: NewPassphrasePolicy,
) -> Result<(), CliError> {
    let entropy = zxcvbn::zxcvbn(text, context);
    let score = u8::from(entropy.score());
    if score >= 3 || policy.accept_weak {
        return Ok(());
    }
    let hint = entropy
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| format!(" ({w})"))
        .unwrap_or_default();
    Err(CliError::WeakPassphrase {
        detail: format!("it scores {score} of 4{hint}"),
    })
}

#[cfg(test)]
pub mod scripted {
    //! A prompter that answers from a list, for tests of interactive flows.
    use super::*;

    pub struct Scripted {
        pub answers: Vec<String>,
        pub notices: Vec<String>,
        pub prompts: Vec<String>,
    }

    impl Scripted {
        pub fn new(answers: &[&str]) -> Self {
            Self {
                answers: answers.iter().rev().map(|s| s.to_string()).collect(),
                notices: Vec::new(),
                prompts: Vec::new(),
            }
        }
    }

    impl Prompter for Scripted {
        fn secret(&mut self, prompt: &str) -> Result<Zeroizing<String>, CliError> {
            self.prompts.push(prompt.to_string());
            self.answers
                .pop()
                .map(Zeroizing::new)
                .ok_or_else(|| no_terminal("a secret"))
        }
        fn line(&mut self, prompt: &str) -> Result<String, CliError> {
            self.prompts.push(prompt.to_string());
            self.answers.pop().ok_or_else(|| no_terminal("an answer"))
        }
        fn notice(&mut self, text: &str) {
            self.notices.push(text.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scripted::Scripted;
    use super::*;

    const STRONG: &str = "tarnished-otter-violin-97-quietly";
    const STRICT: NewPassphrasePolicy = NewPassphrasePolicy { accept_weak: false };

    #[test]
    fn new_passphrase_must_be_typed_twice_alike() {
        let mut ui = Scripted::new(&[STRONG, "something else"]);
        let err = SecretSources::default()
            .new_passphrase(&mut ui, STRICT, &[])
            .err()
            .expect("mismatch refused");
        assert!(err.to_string().contains("do not match"));
        let mut ui = Scripted::new(&[STRONG, STRONG]);
        let p = SecretSources::default()
            .new_passphrase(&mut ui, STRICT, &[])
            .expect("accepted");
        assert_eq!(p.expose(), STRONG);
    }

    #[test]
    fn empty_passphrase_is_refused() {
        let mut ui = Scripted::new(&[""]);
        let err = SecretSources::default()
            .new_passphrase(&mut ui, STRICT, &[])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("empty"));
    }

    #[test]
    fn weak_passphrase_needs_explicit_acceptance() {
        let mut ui = Scripted::new(&["password1", "password1"]);
        let err = SecretSources::default()
            .new_passphrase(&mut ui, STRICT, &[])
            .err()
            .expect("weak");
        assert!(matches!(err, CliError::WeakPassphrase { .. }));
        assert!(!err.to_string().contains("password1"));
        let mut ui = Scripted::new(&["password1", "password1"]);
        let lax = NewPassphrasePolicy { accept_weak: true };
        assert!(SecretSources::default()
            .new_passphrase(&mut ui, lax, &[])
            .is_ok());
    }

    #[test]
    fn pin_prompt_shows_tries_and_warns_on_final_try() {
        let mut ui = Scripted::new(&["123456"]);
        let status = PinStatus {
            tries_left: Some(1),
            final_try: true,
            ..PinStatus::default()
        };
        SecretSources::default()
            .pin(&mut ui, "card", &status)
            .expect("pin");
        assert!(ui.prompts[0].contains("1 try left"), "{:?}", ui.prompts);
        assert!(ui.notices[0].contains("final PIN try"));
    }
}
