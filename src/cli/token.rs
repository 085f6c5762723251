//! `nasring token …`: work with a security token itself, outside any keyring.

use serde::Serialize;

use super::args::{KeygenArgs, PinPolicyArg, TouchPolicyArg};
use super::{output, CliError, Context};
use crate::token::{self, AdminStatus, KeygenOptions, Token, TokenUri};

#[derive(Serialize)]
struct Made {
    token: String,
    token_uri: String,
    fingerprint: String,
    pin_policy: Option<&'static str>,
    touch_policy: Option<&'static str>,
    management_key: &'static str,
}

pub fn keygen(ctx: &mut Context, args: KeygenArgs) -> Result<(), CliError> {
    let uri = TokenUri::parse(&args.token)?;
    let mut tok = super::open::open_token(ctx, &uri, None)?;
    let label = tok.info().label;
    let status = tok.pin_status()?;
    if status.locked {
        return Err(super::open::pin_locked().into());
    }
    let pin = ctx.secrets.pin(ctx.ui, &label, &status)?;
    tok.login(&pin)?;
    refuse_overwrite(tok.as_mut(), &args)?;
    let admin = tok.admin_status();
    warn_defaults(ctx, &admin);
    let protect = protect_management_key(ctx, &admin, &args);
    let piv = matches!(uri, TokenUri::Piv(_));
    let options = KeygenOptions {
        pin_policy: piv.then(|| pin_policy_word(args.pin_policy).to_string()),
        touch_policy: piv.then(|| touch_policy_word(args.touch_policy).to_string()),
        overwrite: args.overwrite,
        protect_management_key: protect,
    };
    let key = tok.generate_key(&options)?;
    for warning in tok.warnings() {
        ctx.ui.notice(&format!("Warning: {warning}"));
    }
    let made = Made {
        token: tok.info().label,
        token_uri: tok.info().uri,
        fingerprint: token::fingerprint(&key),
        pin_policy: piv.then(|| pin_policy_word(args.pin_policy)),
        touch_policy: piv.then(|| touch_policy_word(args.touch_policy)),
        management_key: match (admin.default_management_key, protect) {
            (Some(true), true) => "moved to a PIN-protected key",
            (Some(true), false) => "factory default",
            (Some(false), _) => "not the factory default",
            (None, _) => "unknown",
        },
    };
    report(ctx, &made)
}

fn report(ctx: &mut Context, made: &Made) -> Result<(), CliError> {
    if ctx.json {
        return output::json(made);
    }
    let policies = match (made.pin_policy, made.touch_policy) {
        (Some(p), Some(t)) => format!(" (PIN {p}, touch {t})"),
        _ => String::new(),
    };
    output::say(&format!(
        "Made a P-256 key on {}{policies}: {}\nUse it: nasring init --name NAME --token {}",
        made.token, made.fingerprint, made.token_uri
    ))
}

/// A key already in the slot is kept unless `--overwrite` says otherwise.
fn refuse_overwrite(tok: &mut dyn Token, args: &KeygenArgs) -> Result<(), CliError> {
    if args.overwrite {
        return Ok(());
    }
    match tok.public_key() {
        Ok(existing) => Err(CliError::Failed(format!(
            "{} already holds key {}; nothing was changed.\n\
             Use it as it is (nasring init --token {}), or pass --overwrite to replace it \
             (the old key is then lost for good).",
            tok.info().label,
            token::fingerprint(&existing),
            tok.info().uri
        ))),
        Err(_) => Ok(()),
    }
}

fn warn_defaults(ctx: &mut Context, admin: &AdminStatus) {
    // A factory PIN is among the token's own warnings, shown after key generation.
    if admin.default_puk == Some(true) {
        ctx.ui.notice(
            "Warning: the card still has the factory PUK 12345678. Change it: ykman piv \
             access change-puk.",
        );
    }
}

/// Whether to replace a factory management key: by flag, else by asking, else not.
fn protect_management_key(ctx: &mut Context, admin: &AdminStatus, args: &KeygenArgs) -> bool {
    if admin.default_management_key != Some(true) {
        return false;
    }
    ctx.ui.notice(
        "Warning: the card still has the factory management key, which anyone can use to \
         replace its keys.",
    );
    if args.protect_management_key || args.keep_default_management_key {
        return args.protect_management_key;
    }
    match ctx
        .ui
        .line("Replace it by a random management key stored on the card under the PIN? [y/N] ")
    {
        Ok(answer) => matches!(answer.trim(), "y" | "Y" | "yes"),
        Err(_) => {
            ctx.ui.notice(
                "Kept it (no terminal to ask). Pass --protect-management-key to replace it.",
            );
            false
        }
    }
}

fn pin_policy_word(p: PinPolicyArg) -> &'static str {
    match p {
        PinPolicyArg::Once => "once",
        PinPolicyArg::Always => "always",
    }
}

fn touch_policy_word(t: TouchPolicyArg) -> &'static str {
    match t {
        TouchPolicyArg::Never => "never",
        TouchPolicyArg::Cached => "cached",
        TouchPolicyArg::Always => "always",
    }
}
