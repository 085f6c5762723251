//! No secret reaches output, errors or trace logs, and the keyring file never holds one in clear.

mod common;

use common::*;

#[test]
fn no_secret_in_output_errors_or_trace_logs() {
    let w = World::new();
    let pin = "5731-separate-pin";
    let pin_file = w.write("pin", &format!("{pin}\n"));
    let hsm = SoftHsm::new(&w.path("pinhsm"), "pin-token", &pin_file, false);
    let key_file = w.write("key", &format!("{API_KEY}\n"));
    let inventory = w.write(
        "inv.jsonl",
        "{\"name\":\"bulk\",\"url\":\"https://127.0.0.1:9\",\"username\":\"u\",\"api_key\":\"99-BulkSecretKeyMaterial0123456789\"}\n",
    );
    let wrong = w.write("wrong", "not-the-passphrase-at-all-42\n");
    let fp = format!("sha256:{}", "ef".repeat(32));
    let code_file = w.path("recovery-code");
    let new_code_file = w.path("recovery-code-2");
    let runs: Vec<(Vec<&str>, Option<&std::path::Path>)> = vec![
        (
            vec![
                "init",
                "--name",
                "lab",
                "--token",
                &hsm.uri,
                "--generate-key",
                "--separate-pin",
                "--kdf-memory-mib",
                "8",
                "--save-recovery-code",
                code_file.to_str().expect("p"),
            ],
            None,
        ),
        (
            vec![
                "add",
                "nas1",
                "--url",
                "https://127.0.0.1:9",
                "--username",
                "admin",
                "--api-key-file",
                key_file.to_str().expect("p"),
                "--tls-fingerprint",
                &fp,
                "--no-check",
            ],
            None,
        ),
        (vec!["import", inventory.to_str().expect("p")], None),
        (vec!["unlock", "--offline", "--json"], None),
        (vec!["unlock", "--offline"], Some(&wrong)),
        (vec!["list", "--json"], None),
        (vec!["info"], None),
        (vec!["token", "list"], None),
        (vec!["rekey"], None),
        (
            vec![
                "unlock",
                "--offline",
                "--recovery-code-file",
                code_file.to_str().expect("p"),
            ],
            None,
        ),
        (
            vec![
                "recovery",
                "regenerate",
                "--save-recovery-code",
                new_code_file.to_str().expect("p"),
            ],
            None,
        ),
        (vec!["remove", "nas1"], None),
        (vec!["reset", "--yes"], None),
    ];
    let mut all = String::new();
    for (args, passphrase) in runs {
        let mut cmd = w.cmd();
        cmd.env("RUST_LOG", "trace")
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("NASRING_PIN_FILE", &pin_file)
            .args(&args);
        if let Some(p) = passphrase {
            cmd.env("NASRING_PASSPHRASE_FILE", p);
        }
        let out = cmd.output().expect("run");
        all.push_str(&text(&out));
        if args[0] == "init" {
            assert_ok(&out, "init");
        }
    }
    assert!(
        all.contains("TRACE") || all.contains("DEBUG"),
        "trace logging produced nothing"
    );
    let api_secret = API_KEY.split_once('-').expect("key").1;
    let code = std::fs::read_to_string(&code_file).expect("recovery code");
    let new_code = std::fs::read_to_string(&new_code_file).expect("new recovery code");
    let code_bare = code.trim().replace('-', "");
    let new_code_bare = new_code.trim().replace('-', "");
    for secret in [
        code.trim(),
        &code_bare,
        new_code.trim(),
        &new_code_bare,
        PASSPHRASE,
        pin,
        api_secret,
        "BulkSecretKeyMaterial0123456789",
        "not-the-passphrase-at-all-42",
    ] {
        assert!(
            !all.contains(secret),
            "a secret appeared in the output:\n{all}"
        );
    }
}
