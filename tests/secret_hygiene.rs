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

/// The master key of the keyring at `vault`, worked out in this process from the token (which
/// does the key agreement), the PIN and the passphrase, the way `nasring` does it.
fn master_key(vault: &std::path::Path, conf: &std::path::Path, pin: &str) -> Vec<u8> {
    use nasring::secret::{Passphrase, Pin};
    use nasring::vault::crypto::{self, KdfCost};
    use nasring::vault::format::unb64;

    let sealed = nasring::vault::Vault::at(vault).load().expect("load");
    let doc = sealed.document().clone();
    let unlocker = &doc.unlockers[0];
    std::env::set_var("SOFTHSM2_CONF", conf);
    let record = unlocker
        .token
        .as_ref()
        .expect("the first unlocker is the token");
    let uri = nasring::token::TokenUri::parse(&record.uri).expect("uri");
    let mut token = nasring::token::open(&uri).expect("open the token");
    token.login(&Pin::new(pin.into())).expect("login");
    let token_key = token.public_key().expect("public key");
    let point = |field: &str, text: &str| {
        p256::PublicKey::from_sec1_bytes(&unb64(field, text).expect("b64")).expect("point")
    };
    let ephemeral = point("ephemeral", &unlocker.ephemeral_public_key);
    let shared = token.agree(&ephemeral).expect("agree");
    let cost = KdfCost {
        memory_kib: doc.kdf.memory_kib,
        iterations: doc.kdf.iterations,
        parallelism: doc.kdf.parallelism,
    };
    let salt = unb64("salt", &doc.kdf.salt).expect("salt");
    let stretched = crypto::stretch_passphrase(&Passphrase::new(PASSPHRASE.into()), &salt, cost)
        .expect("stretch");
    let keyring_id = hex::decode(&doc.keyring_id).expect("id");
    let masked: [u8; 32] = unb64("masked", &doc.masked_passphrase_key)
        .expect("masked key")
        .try_into()
        .expect("32 bytes");
    let passphrase_key = crypto::mask_passphrase_key(&keyring_id, &stretched, &masked);
    let kek = crypto::token_wrapping_key(
        &keyring_id,
        &unlocker.id,
        &shared,
        &passphrase_key,
        &ephemeral,
        &token_key,
    );
    let nonce = unb64("nonce", &unlocker.nonce).expect("nonce");
    let wrapped = unb64("wrapped", &unlocker.wrapped_master_key).expect("wrapped");
    let aad = nasring::vault::unlocker_aad(&keyring_id, &unlocker.id);
    crypto::open(&kek, &nonce, &wrapped, &aad)
        .expect("the master key unwraps")
        .to_vec()
}

/// Every file under `dir`, but those the test wrote as input.
fn files_written(dir: &std::path::Path, inputs: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if !inputs.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn every_command_traced_leaks_no_secret_to_output_logs_argv_or_files() {
    use common::imposter::{Imposter, Mode, CREATED_KEY};

    let w = World::new();
    let pin = "5731-separate-pin-value";
    let pin_file = w.write("pin", &format!("{pin}\n"));
    let hsm = SoftHsm::new(&w.path("pinhsm"), "pin-token", &pin_file, false);
    let nas = Imposter::start(Mode::Genuine);
    let url = nas.url();
    let fp = nas.fingerprint.clone();
    let password = "Tr0ub4dor-account-password";
    let bulk = "99-BulkSecretKeyMaterial0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
    let key_file = w.write("key", &format!("{API_KEY}\n"));
    let password_file = w.write("password", &format!("{password}\n"));
    let wrong = w.write("wrong", "not-the-passphrase-at-all-42\n");
    let code_file = w.path("recovery-code");
    let new_code_file = w.path("new-recovery-code");
    let new_passphrase = "quartz-meridian-lantern-88-softly";
    let new_passphrase_file = w.write("new-passphrase", &format!("{new_passphrase}\n"));
    let inventory = w.write(
        "inv.jsonl",
        &format!(
            "{{\"name\":\"bulk\",\"url\":\"{url}\",\"username\":\"u\",\"api_key\":\"{bulk}\",\
             \"tls_fingerprint\":\"{fp}\"}}\n"
        ),
    );
    let inputs = vec![
        w.passphrase_file.clone(),
        pin_file.clone(),
        key_file.clone(),
        password_file.clone(),
        wrong.clone(),
        inventory.clone(),
        new_passphrase_file.clone(),
        code_file.clone(),
        new_code_file.clone(),
        hsm.dir.join("so-pin"),
        w.hsm.dir.join("so-pin"),
    ];
    let p = |path: &std::path::Path| path.to_str().expect("utf8").to_owned();
    let man = w.path("man");
    let net = ["--connect-timeout", "2", "--deadline", "5"];
    let mut runs: Vec<Vec<String>> = vec![vec![
        "init",
        "--name",
        "lab",
        "--token",
        &hsm.uri,
        "--generate-key",
        "--separate-pin",
    ]
    .into_iter()
    .chain(["--kdf-memory-mib", "8", "--kdf-iterations", "1"])
    .map(String::from)
    .chain(["--save-recovery-code".to_string(), p(&code_file)])
    .collect()];
    let mut add = |args: &[&str]| runs.push(args.iter().map(|a| a.to_string()).collect());
    add(&["add", "nas1", "--url", &url, "--username", "admin"]);
    let last = runs.last_mut().expect("run");
    last.extend([
        "--api-key-file".into(),
        p(&key_file),
        "--tls-fingerprint".into(),
        fp.clone(),
    ]);
    last.extend(net.iter().map(|s| s.to_string()));
    let mut more: Vec<Vec<String>> = vec![
        vec![
            "add".into(),
            "nas2".into(),
            "--url".into(),
            url.clone(),
            "--username".into(),
            "admin".into(),
            "--password-file".into(),
            p(&password_file),
            "--tls-fingerprint".into(),
            fp.clone(),
        ],
        vec!["import".into(), p(&inventory)],
        vec!["list".into(), "--json".into()],
        vec!["info".into()],
        vec!["unlock".into()],
        vec!["status".into(), "--json".into()],
        vec!["unlock".into(), "--offline".into(), "--json".into()],
        vec![
            "trust".into(),
            "nas1".into(),
            "--tls-fingerprint".into(),
            fp.clone(),
        ],
        vec![
            "login".into(),
            "nas1".into(),
            "--password-file".into(),
            p(&password_file),
        ],
        vec![
            "add".into(),
            "nas1".into(),
            "--replace".into(),
            "--url".into(),
            url.clone(),
            "--username".into(),
            "admin".into(),
            "--password-file".into(),
            p(&password_file),
            "--tls-fingerprint".into(),
            fp.clone(),
        ],
        vec!["remove".into(), "nas2".into()],
        vec!["token".into(), "list".into()],
        vec!["rotate".into(), "nas1".into()],
        vec!["rekey".into()],
        vec![
            "recovery".into(),
            "regenerate".into(),
            "--save-recovery-code".into(),
            p(&new_code_file),
        ],
        vec!["completions".into(), "bash".into()],
        vec!["man".into(), "--out-dir".into(), p(&man)],
    ];
    for run in &mut more {
        if ["add", "unlock", "status", "trust", "login", "rotate"].contains(&run[0].as_str())
            && !run.contains(&"--offline".to_string())
        {
            run.extend(net.iter().map(|s| s.to_string()));
        }
    }
    runs.extend(more);

    let trace = w.path("exec.trace");
    let mut all = Vec::new();
    let mut master = None;
    for (i, args) in runs.iter().enumerate() {
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-qq", "-e", "trace=execve", "-s", "65535", "-o"])
            .arg(format!("{}.{i}", trace.display()))
            .arg(env!("CARGO_BIN_EXE_nasring"))
            .args(args);
        let base = w.cmd();
        cmd.env_clear()
            .envs(base.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .env("RUST_LOG", "trace")
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("NASRING_PIN_FILE", &pin_file)
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("run strace (apt-get install strace)");
        all.extend_from_slice(text(&out).as_bytes());
        let name = args[0].as_str();
        assert_ok(&out, &args.join(" "));
        if name == "init" {
            master = Some(master_key(&w.vault, &hsm.conf(), pin));
        }
        if name == "unlock" && args.contains(&"--offline".to_string()) {
            let out = w
                .cmd()
                .env("RUST_LOG", "trace")
                .env("SOFTHSM2_CONF", hsm.conf())
                .env("NASRING_PIN_FILE", &pin_file)
                .env("NASRING_PASSPHRASE_FILE", &wrong)
                .args(["unlock", "--offline"])
                .output()
                .expect("run");
            assert_code(&out, 3, "a wrong passphrase");
            all.extend_from_slice(text(&out).as_bytes());
        }
    }
    // The agent and the commands that use it. The agent outlives `unlock`, so that one unlock
    // runs outside strace (which would wait for the agent); its output is still scanned.
    let runtime = w.path("run");
    std::fs::create_dir(&runtime).expect("runtime folder");
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let agent_env = |cmd: &mut std::process::Command| {
        cmd.env("RUST_LOG", "trace")
            .env("SOFTHSM2_CONF", hsm.conf())
            .env("NASRING_PIN_FILE", &pin_file)
            .env("XDG_RUNTIME_DIR", &runtime);
    };
    let mut unlock = w.cmd();
    agent_env(&mut unlock);
    let out = unlock
        .args(["unlock", "--offline"])
        .output()
        .expect("unlock");
    assert_ok(&out, "unlock with an agent");
    all.extend_from_slice(text(&out).as_bytes());
    let agent_runs: Vec<Vec<&str>> = vec![
        vec!["agent", "--json"],
        vec!["exec", "nas1", "--", "true"],
        vec!["api", "nas1", "system.info"],
        vec!["log", "--json"],
        vec!["lock"],
        vec!["passwd", "--new-passphrase-file"],
        vec!["reset", "--yes"],
    ];
    let first_agent_run = runs.len();
    for (i, args) in agent_runs.iter().enumerate() {
        let mut cmd = std::process::Command::new("strace");
        cmd.args(["-f", "-qq", "-e", "trace=execve", "-s", "65535", "-o"])
            .arg(format!("{}.{}", trace.display(), first_agent_run + i))
            .arg(env!("CARGO_BIN_EXE_nasring"))
            .args(args);
        if args[0] == "passwd" {
            cmd.arg(&new_passphrase_file);
        }
        let base = w.cmd();
        cmd.env_clear()
            .envs(base.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .stdin(std::process::Stdio::null());
        agent_env(&mut cmd);
        let out = cmd.output().expect("run strace");
        assert_ok(&out, &args.join(" "));
        all.extend_from_slice(text(&out).as_bytes());
    }

    assert!(find(&all, b"DEBUG"), "trace logging produced nothing");
    let master = master.expect("init ran");
    let mut argv = Vec::new();
    for i in 0..first_agent_run + agent_runs.len() {
        argv.extend(std::fs::read(format!("{}.{i}", trace.display())).expect("trace"));
    }
    assert!(find(&argv, b"execve("), "strace recorded no exec");

    let key_secret = |k: &str| k.split_once('-').expect("key").1.to_owned();
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("passphrase".into(), PASSPHRASE.into()),
        ("PIN".into(), pin.into()),
        ("account password".into(), password.into()),
        (
            "wrong passphrase".into(),
            b"not-the-passphrase-at-all-42".to_vec(),
        ),
        ("imported API key".into(), key_secret(API_KEY).into_bytes()),
        (
            "created API key".into(),
            key_secret(CREATED_KEY).into_bytes(),
        ),
        ("bulk API key".into(), key_secret(bulk).into_bytes()),
        ("new passphrase".into(), new_passphrase.into()),
        (
            "recovery code".into(),
            std::fs::read_to_string(&code_file)
                .expect("code")
                .trim()
                .into(),
        ),
        (
            "new recovery code".into(),
            std::fs::read_to_string(&new_code_file)
                .expect("new code")
                .trim()
                .into(),
        ),
        ("master key hex".into(), hex::encode(&master).into_bytes()),
        (
            "master key base64".into(),
            nasring::vault::format::b64(&master).into_bytes(),
        ),
    ];
    let files = files_written(w.tmp.path(), &inputs);
    let mut haystacks: Vec<(String, Vec<u8>)> = vec![
        ("output and logs".into(), all.clone()),
        ("argv of every process".into(), argv),
    ];
    for f in &files {
        haystacks.push((
            f.display().to_string(),
            std::fs::read(f).unwrap_or_default(),
        ));
    }
    secrets.push(("master key bytes".into(), master.clone()));
    if let Ok(dump) = std::env::var("NASRING_HYGIENE_DUMP") {
        std::fs::write(dump, &all).expect("dump");
    }
    for (where_, hay) in &haystacks {
        for (what, secret) in &secrets {
            assert!(!find(hay, secret), "the {what} appeared in {where_}");
        }
    }
    eprintln!(
        "secret hygiene: {} commands traced, {} secrets looked for in output, logs, argv and \
         {} files written; none found",
        first_agent_run + agent_runs.len() + 2,
        secrets.len(),
        files.len()
    );
}
