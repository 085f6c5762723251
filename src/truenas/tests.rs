//! The client against the fake NAS, over 127.0.0.1.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fake::{
    call_error, handler, notification, reply, Behaviour, Ca, FakeNas, Identity, Out,
};
use super::*;
use crate::secret::{ApiKey, OtpCode, Password};

const KEY: &str = "7-uz8DhKHFhRIUQIvjzabPYtpy5wf1DJ3ZBLlDgNVhRAFT7Y6pJGUlm0n3apwxWEU4";

/// Generous limits, so that a busy machine does not fail the tests that expect success.
fn quick() -> Limits {
    Limits {
        connect_timeout: Duration::from_secs(10),
        call_timeout: Duration::from_secs(10),
        max_message_bytes: 64 * 1024,
    }
}

/// A short call timeout, for the tests that expect a reply to time out.
fn short_calls() -> Limits {
    Limits {
        call_timeout: Duration::from_millis(400),
        ..quick()
    }
}

/// Short limits, for the tests that expect connecting to time out.
fn impatient() -> Limits {
    Limits {
        connect_timeout: Duration::from_millis(400),
        call_timeout: Duration::from_millis(400),
        ..quick()
    }
}

/// Answers `core.ping` and nothing else.
fn pinger() -> Behaviour {
    handler(|request| match request["method"].as_str() {
        Some("core.ping") => vec![reply(request, json!("pong"))],
        _ => Vec::new(),
    })
}

async fn tls_fake(behaviour: Behaviour) -> (FakeNas, Identity) {
    let identity = Identity::localhost();
    let fake = FakeNas::start(Some(&identity), behaviour).await;
    (fake, identity)
}

async fn pinned_session(fake: &FakeNas, identity: &Identity, limits: Limits) -> Session {
    let trust = TlsTrust::Pin(identity.fingerprint());
    Session::connect(&fake.url(), &trust, &limits)
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_pinned_certificate_is_accepted() {
    let (fake, identity) = tls_fake(pinger()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let pong = session.call("core.ping", Value::Null).await.expect("ping");
    session.close().await;

    assert_eq!(pong, json!("pong"));
    assert_eq!(fake.requests()[0]["params"], json!([]));
}

#[tokio::test]
async fn a_wrong_pin_is_refused_before_anything_is_sent() {
    let (fake, identity) = tls_fake(pinger()).await;
    let expected = CertFingerprint::from_bytes([0xab; 32]);

    let err = Session::connect(&fake.url(), &TlsTrust::Pin(expected), &quick())
        .await
        .expect_err("wrong pin");

    match err {
        ClientError::PinMismatch {
            expected: e,
            presented,
        } => assert_eq!((e, presented), (expected, identity.fingerprint())),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!((fake.upgrades(), fake.frames().len()), (0, 0));
}

#[tokio::test]
async fn a_ca_signed_certificate_for_the_host_is_accepted() {
    let ca = Ca::new("Test CA");
    let fake = FakeNas::start(Some(&ca.issue(&["127.0.0.1"])), pinger()).await;

    let trust = TlsTrust::Ca(ca.pem.clone());
    let mut session = Session::connect(&fake.url(), &trust, &quick())
        .await
        .expect("connect");

    assert_eq!(
        session.call("core.ping", json!([])).await.expect("ping"),
        json!("pong")
    );
}

#[tokio::test]
async fn ca_trust_refuses_other_names_and_other_cas() {
    let ca = Ca::new("Test CA");
    let other_name = FakeNas::start(Some(&ca.issue(&["nas.example"])), pinger()).await;
    let self_signed = FakeNas::start(Some(&Identity::localhost()), pinger()).await;
    let trust = TlsTrust::Ca(ca.pem.clone());

    for fake in [&other_name, &self_signed] {
        let err = Session::connect(&fake.url(), &trust, &quick())
            .await
            .expect_err("untrusted");
        assert!(matches!(err, ClientError::TlsUntrusted { .. }), "{err:?}");
        assert_eq!((fake.upgrades(), fake.frames().len()), (0, 0));
    }
}

#[tokio::test]
async fn fetch_certificate_shows_what_to_pin_and_sends_nothing() {
    let (fake, identity) = tls_fake(pinger()).await;

    let cert = fetch_certificate(&fake.url(), &quick())
        .await
        .expect("certificate");

    assert_eq!(cert.fingerprint, identity.fingerprint());
    assert!(cert.subject.contains("CN=localhost"), "{}", cert.subject);
    assert_eq!(cert.subject, cert.issuer);
    assert_eq!(cert.subject_alt_names, vec!["localhost".to_owned()]);
    let now = time::OffsetDateTime::now_utc();
    assert!(cert.not_before <= now && now < cert.not_after);
    assert_eq!(fake.upgrades(), 0);
}

#[tokio::test]
async fn a_silent_server_times_out_within_the_limit() {
    let fake = FakeNas::start(None, Behaviour::Silent).await;
    let trust = TlsTrust::Pin(CertFingerprint::from_bytes([1; 32]));

    let started = Instant::now();
    let tls = Session::connect(&fake.url(), &trust, &impatient())
        .await
        .expect_err("tls");
    let plain = Session::connect(&fake.plain_url(), &TlsTrust::PlainLoopback, &impatient())
        .await
        .expect_err("upgrade");
    let fetch = fetch_certificate(&fake.url(), &impatient())
        .await
        .expect_err("fetch");

    assert!(
        matches!(tls, ClientError::TimedOut { phase: Phase::Tls }),
        "{tls:?}"
    );
    assert!(
        matches!(
            plain,
            ClientError::TimedOut {
                phase: Phase::Upgrade
            }
        ),
        "{plain:?}"
    );
    assert!(
        matches!(fetch, ClientError::TimedOut { phase: Phase::Tls }),
        "{fetch:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let url = SystemUrl::parse(&format!("http://{addr}")).expect("url");

    let err = Session::connect(&url, &TlsTrust::PlainLoopback, &quick())
        .await
        .expect_err("closed");

    assert!(matches!(err, ClientError::Refused), "{err:?}");
    assert_eq!(err.kind(), "unreachable");
}

#[tokio::test]
async fn a_404_on_upgrade_means_truenas_24_10() {
    let (fake, identity) = tls_fake(Behaviour::NotFound).await;

    let err = Session::connect(
        &fake.url(),
        &TlsTrust::Pin(identity.fingerprint()),
        &quick(),
    )
    .await
    .expect_err("404");

    assert_eq!(err.kind(), "unsupported_version", "{err:?}");
    assert!(err.remedy("nas1").contains("25.04"));
}

#[tokio::test]
async fn a_missing_reply_times_out() {
    let (fake, identity) = tls_fake(pinger()).await;
    let mut session = pinned_session(&fake, &identity, short_calls()).await;

    let err = session
        .call("system.info", json!([]))
        .await
        .expect_err("no reply");

    assert!(
        matches!(
            err,
            ClientError::TimedOut {
                phase: Phase::Reply
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn notifications_do_not_stretch_the_wait() {
    let chatty = handler(|_| {
        let pause = || Out::Pause(Duration::from_millis(50));
        (0..60).flat_map(|_| [notification(), pause()]).collect()
    });
    let (fake, identity) = tls_fake(chatty).await;
    let mut session = pinned_session(&fake, &identity, short_calls()).await;

    let started = Instant::now();
    let err = session
        .call("system.info", json!([]))
        .await
        .expect_err("no reply");

    assert!(
        matches!(
            err,
            ClientError::TimedOut {
                phase: Phase::Reply
            }
        ),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn notifications_and_wrong_ids_are_skipped() {
    let noisy = handler(|request| {
        let other = json!({"id": request["id"].as_u64().unwrap_or(0) + 100});
        vec![
            notification(),
            reply(&other, json!("not ours")),
            reply(request, json!("ours")),
        ]
    });
    let (fake, identity) = tls_fake(noisy).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    assert_eq!(
        session.call("core.ping", json!([])).await.expect("first"),
        json!("ours")
    );
    assert_eq!(
        session.call("core.ping", json!([])).await.expect("second"),
        json!("ours")
    );
}

#[tokio::test]
async fn an_oversized_message_is_refused() {
    let big = handler(|request| vec![reply(request, json!("x".repeat(4096)))]);
    let (fake, identity) = tls_fake(big).await;
    let limits = Limits {
        max_message_bytes: 1024,
        ..quick()
    };
    let mut session = pinned_session(&fake, &identity, limits).await;

    let err = session
        .call("system.info", json!([]))
        .await
        .expect_err("too big");

    assert!(matches!(err, ClientError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("1024"), "{err}");
}

#[tokio::test]
async fn a_message_that_is_not_json_is_refused() {
    let garbled = handler(|_| vec![Out::Text("<html>".into())]);
    let (fake, identity) = tls_fake(garbled).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let err = session
        .call("system.info", json!([]))
        .await
        .expect_err("garbled");

    assert_eq!(err.kind(), "protocol", "{err:?}");
}

#[tokio::test]
async fn rpc_errors_carry_method_code_and_reason() {
    let refusing =
        handler(|request| vec![call_error(request, "EACCES", "[EACCES] Not authorized")]);
    let (fake, identity) = tls_fake(refusing).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let err = session
        .call("pool.query", json!([]))
        .await
        .expect_err("refused");

    assert_eq!(
        err.to_string(),
        "The NAS refused pool.query: [EACCES] Not authorized"
    );
    assert!(matches!(err, ClientError::Rpc { code: -32001, .. }));
}

/// Answers `auth.login_ex` with the response type named by the user name.
fn login_answers() -> Behaviour {
    handler(|request| {
        let data = &request["params"][0];
        let answer = match data["username"].as_str().unwrap_or_default() {
            "REDIRECT" => json!({"response_type": "REDIRECT", "urls": ["10.0.0.2"]}),
            "SUCCESS" => json!({"response_type": "SUCCESS", "user_info": null,
                "authenticator": "LEVEL_1"}),
            name => json!({"response_type": name}),
        };
        vec![reply(request, answer)]
    })
}

#[tokio::test]
async fn each_login_answer_is_mapped() {
    let (fake, identity) = tls_fake(login_answers()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;
    let password = Password::new("pw".into());
    let key = ApiKey::new(KEY.into());
    let cases = [
        ("SUCCESS", "ok:Success", "ok"),
        ("OTP_REQUIRED", "ok:OtpRequired", "protocol"),
        ("AUTH_ERR", "auth_failed", "key_rejected"),
        ("EXPIRED", "password_expired", "key_expired"),
        ("DENIED", "denied", "denied"),
        ("REDIRECT", "redirect", "redirect"),
        ("SCRAM_RESPONSE", "protocol", "protocol"),
    ];

    for (answer, by_password, by_key) in cases {
        let got = match session.login_password(answer, &password).await {
            Ok(outcome) => format!("ok:{outcome:?}"),
            Err(e) => e.kind().to_owned(),
        };
        assert_eq!(got, by_password, "password login answered {answer}");
        let got = session
            .login_api_key(answer, &key)
            .await
            .map_or_else(|e| e.kind(), |()| "ok");
        assert_eq!(got, by_key, "key login answered {answer}");
    }
}

#[tokio::test]
async fn a_key_login_sends_the_user_name_and_the_key() {
    let (fake, identity) = tls_fake(login_answers()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    session
        .login_api_key("SUCCESS", &ApiKey::new(KEY.into()))
        .await
        .expect("login");

    let request = &fake.requests()[0];
    assert_eq!(request["method"], "auth.login_ex");
    assert_eq!(
        request["params"],
        json!([{"mechanism": "API_KEY_PLAIN", "username": "SUCCESS", "api_key": KEY}])
    );
}

#[tokio::test]
async fn a_redirect_lists_the_other_controller() {
    let (fake, identity) = tls_fake(login_answers()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let err = session
        .login_password("REDIRECT", &Password::new("pw".into()))
        .await
        .expect_err("redirect");

    assert!(
        matches!(&err, ClientError::Redirect { urls } if urls == &["10.0.0.2"]),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_password_login_goes_through_the_one_time_code() {
    let otp = handler(|request| {
        let data = &request["params"][0];
        let answer = match (request["method"].as_str(), data["otp_token"].as_str()) {
            (Some("auth.login_ex"), _) => {
                json!({"response_type": "OTP_REQUIRED", "username": "admin"})
            }
            (Some("auth.login_ex_continue"), Some("123456")) => json!({"response_type": "SUCCESS"}),
            _ => json!({"response_type": "OTP_REQUIRED", "username": "admin"}),
        };
        vec![reply(request, answer)]
    });
    let (fake, identity) = tls_fake(otp).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let first = session
        .login_password("admin", &Password::new("pw".into()))
        .await;
    let wrong = session.continue_otp(&OtpCode::new("000000".into())).await;
    let right = session.continue_otp(&OtpCode::new("123456".into())).await;

    assert_eq!(first.expect("password"), PasswordLogin::OtpRequired);
    assert_eq!(wrong.expect("wrong code"), PasswordLogin::OtpRequired);
    assert_eq!(right.expect("right code"), PasswordLogin::Success);
    let last = &fake.requests()[2];
    assert_eq!(last["method"], "auth.login_ex_continue");
    assert_eq!(
        last["params"],
        json!([{"mechanism": "OTP_TOKEN", "otp_token": "123456"}])
    );
}

#[tokio::test]
async fn a_secret_echoed_in_an_error_is_blanked() {
    let echo = handler(|request| {
        let password = request["params"][0]["password"]
            .as_str()
            .unwrap_or_default();
        vec![call_error(
            request,
            "EINVAL",
            &format!("[EINVAL] bad value {password}"),
        )]
    });
    let (fake, identity) = tls_fake(echo).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let err = session
        .login_password("admin", &Password::new("hunter2-secret".into()))
        .await
        .expect_err("echo");

    assert!(
        !format!("{err} {err:?}").contains("hunter2-secret"),
        "{err:?}"
    );
    assert!(err.to_string().contains("********"));
}

#[tokio::test]
async fn plain_loopback_may_carry_a_key() {
    let fake = FakeNas::start(None, login_answers()).await;
    let mut session = Session::connect(&fake.plain_url(), &TlsTrust::PlainLoopback, &quick())
        .await
        .expect("connect");

    session
        .login_api_key("SUCCESS", &ApiKey::new(KEY.into()))
        .await
        .expect("login");

    assert!(fake.frames()[0].contains(KEY));
}

#[tokio::test]
async fn trust_that_does_not_fit_the_url_is_refused_before_connecting() {
    let (fake, identity) = tls_fake(pinger()).await;
    let pin = TlsTrust::Pin(identity.fingerprint());

    let no_tls = Session::connect(&fake.url(), &TlsTrust::PlainLoopback, &quick()).await;
    let plain_with_pin = Session::connect(&fake.plain_url(), &pin, &quick()).await;

    assert_eq!(no_tls.map(|_| ()).map_err(|e| e.kind()), Err("tls"));
    assert_eq!(
        plain_with_pin.map(|_| ()).map_err(|e| e.kind()),
        Err("bad_url")
    );
    assert_eq!(fake.upgrades(), 0);
}

/// A NAS with one API key (id 7) and the dashboard methods.
fn nas_with_keys() -> Behaviour {
    handler(|request| {
        let params = &request["params"];
        let result = match request["method"].as_str().unwrap_or_default() {
            "api_key.create" => json!({"id": 7, "name": params[0]["name"],
                "username": params[0]["username"], "user_identifier": 3001,
                "keyhash": "********", "created_at": {"$date": 1_735_689_600_000_i64},
                "expires_at": params[0]["expires_at"], "local": true, "revoked": false,
                "revoked_reason": null, "key": KEY}),
            "api_key.delete" => json!(true),
            "api_key.query" if params[0][0][2] == 7 => json!([{"id": 7, "name": "nasring",
                "username": "svc", "expires_at": null, "revoked": true,
                "revoked_reason": "Attempt to use over an insecure transport"}]),
            "api_key.query" => json!([]),
            _ => return vec![call_error(request, "ENOMETHOD", "Method does not exist")],
        };
        vec![reply(request, result)]
    })
}

#[tokio::test]
async fn an_api_key_is_created_and_deleted() {
    let (fake, identity) = tls_fake(nas_with_keys()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;
    let expires = time::macros::datetime!(2026-01-01 0:00 UTC);

    let created = session
        .create_api_key("nasring", "svc", Some(expires))
        .await
        .expect("create");
    session.delete_api_key(created.id).await.expect("delete");

    assert_eq!(
        (created.id, created.name.as_str(), created.username.as_str()),
        (7, "nasring", "svc")
    );
    assert_eq!(created.key.expose(), KEY);
    assert_eq!(created.expires_at, Some(expires));
    assert!(!format!("{created:?}").contains(KEY));
    let requests = fake.requests();
    assert_eq!(
        requests[0]["params"][0]["expires_at"],
        json!({"$date": 1_767_225_600_000_i64})
    );
    assert_eq!(
        (&requests[1]["method"], &requests[1]["params"]),
        (&json!("api_key.delete"), &json!([7]))
    );
}

#[tokio::test]
async fn api_key_info_reports_revocation_and_absence() {
    let (fake, identity) = tls_fake(nas_with_keys()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let info = session.api_key_info(7).await.expect("info");
    let missing = session.api_key_info(8).await.expect_err("missing");

    assert!(info.revoked);
    assert_eq!(
        info.revoked_reason.as_deref(),
        Some("Attempt to use over an insecure transport")
    );
    assert!(
        matches!(missing, ClientError::KeyNotFound { id: 8 }),
        "{missing:?}"
    );
    assert_eq!(fake.requests()[0]["params"], json!([[["id", "=", 7]]]));
}

fn dashboard() -> Behaviour {
    handler(|request| {
        let result = match request["method"].as_str().unwrap_or_default() {
            "system.info" => json!({"version": "25.10.1", "hostname": "nas1",
                "model": "AMD Ryzen 7 255", "uptime_seconds": 4278.2081,
                "boottime": {"$date": 1_787_288_024_000_i64}, "ecc_memory": false}),
            "pool.query" => json!([
                {"id": 1, "name": "tank", "status": "ONLINE", "healthy": true, "warning": false},
                {"id": 2, "name": "cold", "status": "DEGRADED", "healthy": false}]),
            "alert.list" => json!([
                {"level": "WARNING", "dismissed": false, "klass": "ApiKeyRevoked"},
                {"level": "CRITICAL", "dismissed": false, "klass": "PoolDegraded"},
                {"level": "CRITICAL", "dismissed": true, "klass": "Old"}]),
            _ => return Vec::new(),
        };
        vec![reply(request, result)]
    })
}

#[tokio::test]
async fn the_system_card_is_assembled() {
    let (fake, identity) = tls_fake(dashboard()).await;
    let mut session = pinned_session(&fake, &identity, quick()).await;

    let card = session.system_card().await.expect("card");

    let json = serde_json::to_value(&card).expect("json");
    assert_eq!(json["hostname"], "nas1");
    assert_eq!(json["version"], "25.10.1");
    assert_eq!(json["uptime_seconds"], 4278);
    assert_eq!(json["model"], "AMD Ryzen 7 255");
    assert_eq!(
        json["pools"][1],
        json!({"name": "cold", "status": "DEGRADED", "healthy": false})
    );
    assert_eq!(
        (
            card.alerts.warning,
            card.alerts.critical,
            card.alerts.total()
        ),
        (1, 1, 2)
    );
}

#[test]
fn every_error_names_its_remedy_and_kind() {
    let fp = CertFingerprint::from_bytes([2; 32]);
    let cases = [
        (
            ClientError::KeyRejected,
            "key_rejected",
            "nasring add nas1 --replace",
        ),
        (
            ClientError::KeyExpired,
            "key_expired",
            "nasring add nas1 --replace",
        ),
        (
            ClientError::PinMismatch {
                expected: fp,
                presented: fp,
            },
            "pin_mismatch",
            "nasring trust nas1",
        ),
        (
            ClientError::TimedOut {
                phase: Phase::Connect,
            },
            "unreachable",
            "nas1",
        ),
        (ClientError::Denied, "denied", "nas1"),
    ];
    for (err, kind, remedy) in cases {
        assert_eq!(err.kind(), kind);
        assert!(
            err.remedy("nas1").contains(remedy),
            "{}",
            err.remedy("nas1")
        );
        assert!(err.to_string().ends_with('.'), "{err}");
    }
}
