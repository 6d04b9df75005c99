//! The identity-server adapters against a real `simgate serve --simulate` on loopback: Supabase
//! Auth's Send SMS Hook signed by the official Standard Webhooks library (PyPI
//! `standardwebhooks`, through tests/identity_hooks.py), and Zitadel's HTTP SMS provider signed
//! here by Zitadel's published scheme (`pkg/actions/signing.go`: hex HMAC-SHA256 of
//! `"<t>.<body>"`; Zitadel ships no client library to sign with). A good request reaches the
//! simulator's log; a retry (signed anew, same request) is sent once; a bad signature, a replay
//! and a stale or future timestamp are refused 401 and queue nothing.

#[path = "support/daemon.rs"]
mod daemon;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

const SUPABASE: &str = "/hooks/supabase/send-sms";
const ZITADEL: &str = "/hooks/zitadel/sms";
const ZITADEL_KEY: &str = "zitadel-signing-key-5f0c1d2e3a4b";

fn python_with_standardwebhooks() -> Option<String> {
    daemon::python_with("standardwebhooks.webhooks")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A secret in Supabase's format, as `supabase gen` or the dashboard hands it out.
fn supabase_secret(seed: u8) -> String {
    let key: Vec<u8> = (0..32).map(|i| seed.wrapping_add(i)).collect();
    format!(
        "v1,whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// `webhook-signature` by the Standard Webhooks library.
fn sw_sign(py: &str, secret: &str, id: &str, ts: i64, body: &str, verify: bool) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/identity_hooks.py");
    let mut cmd = Command::new(py);
    cmd.arg(script).arg(secret).arg(id).arg(ts.to_string());
    if verify {
        cmd.arg("verify");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "signing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A Send SMS Hook body as Supabase Auth marshals `v0hooks.SendSMSInput` (phone without `+`).
fn supabase_body(uuid: &str, phone: &str, otp: &str) -> String {
    json!({
        "metadata": {
            "uuid": uuid,
            "time": "2026-12-04T18:00:00.000000Z",
            "name": "send-sms",
            "ip_address": "127.0.0.1"
        },
        "user": {
            "id": "6481a5c1-3d37-4a56-9f6a-bee08c554965",
            "aud": "authenticated",
            "role": "authenticated",
            "email": "",
            "phone": phone,
            "app_metadata": {"provider": "phone", "providers": ["phone"]},
            "user_metadata": {},
            "identities": [],
            "created_at": "2026-12-04T17:59:00Z",
            "updated_at": "2026-12-04T18:00:00Z",
            "is_anonymous": false
        },
        "sms": {"otp": otp}
    })
    .to_string()
}

fn post_signed(
    d: &daemon::Daemon,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> daemon::Answer {
    d.request("POST", path, Some(body.to_owned()), headers)
}

fn messages_to(d: &daemon::Daemon, to: &str) -> Vec<Value> {
    let a = d.get(&format!("/v1/messages?to={}", to.replace('+', "%2B")));
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["messages"].as_array().unwrap().clone()
}

fn assert_refused(a: &daemon::Answer, why: &str) {
    assert_eq!(a.status, 401, "{why}: {:?}", a.body);
    assert_eq!(
        a.content_type.as_deref(),
        Some("application/problem+json"),
        "{why}"
    );
}

fn config(dir: &Path, supabase: Option<&str>, zitadel: bool) -> String {
    let mut c = String::new();
    if let Some(secret) = supabase {
        let f = private_file(dir, "supabase-secret", &format!("{secret}\n"));
        c += &format!(
            "[supabase]\nenabled = true\nsecret_file = \"{}\"\notp_ttl_seconds = 120\n",
            f.display()
        );
    }
    if zitadel {
        let f = private_file(dir, "zitadel-key", ZITADEL_KEY);
        c += &format!(
            "[zitadel]\nenabled = true\nsigning_key_file = \"{}\"\n",
            f.display()
        );
    }
    c
}

#[test]
fn supabase_hooks_signed_by_standard_webhooks() {
    let Some(py) = python_with_standardwebhooks() else {
        eprintln!(
            "skipping: no python with the standardwebhooks package (pip install \
             standardwebhooks into /opt/simgate-venv)"
        );
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let secret = supabase_secret(11);
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        config(secrets.path(), Some(&secret), false) + "[limits]\notp_per_number_per_day = 1\n";
    let d = daemon::Daemon::start(dir.path(), Some(&cfg));
    d.wait_ready();

    // A good hook: 200 JSON, the code in simgate's template reaches the simulated modem.
    let body = supabase_body(
        "7d0b4c3e-11aa-4a5e-9e43-0f6f1c2b9a01",
        "15551230001",
        "482913",
    );
    let ts = now();
    let sig = sw_sign(&py, &secret, "msg_2Lh9f1", ts, &body, true);
    let ts_s = ts.to_string();
    let headers = [
        ("webhook-id", "msg_2Lh9f1"),
        ("webhook-timestamp", ts_s.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    let a = post_signed(&d, SUPABASE, &body, &headers);
    assert_eq!(a.status, 200, "{:?}\n{}", a.body, d.log());
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    let id = a.body["message_id"].as_str().unwrap().to_owned();
    assert!(a.body.get("error").is_none());
    let log = d.wait_sim_log(1, Duration::from_secs(30));
    assert_eq!(log.len(), 1, "{}", d.log());
    assert_eq!(log[0]["to"], "+15551230001");
    assert_eq!(
        log[0]["text"],
        "Your code is 482913. It expires in 2 minutes."
    );
    // The delivery log masks the code; the daemon's log never shows it.
    let m = d.get(&format!("/v1/messages/{id}"));
    assert_eq!(m.body["kind"], "otp");
    assert_eq!(
        m.body["text"],
        "Your code is ******. It expires in 2 minutes."
    );
    assert!(!d.log().contains("482913"));

    // Supabase's retry: same body, new webhook-id, new timestamp: answered alike, sent once.
    let ts2 = now();
    let sig2 = sw_sign(&py, &secret, "msg_2Lh9f2", ts2, &body, false);
    let ts2_s = ts2.to_string();
    let retry = post_signed(
        &d,
        SUPABASE,
        &body,
        &[
            ("webhook-id", "msg_2Lh9f2"),
            ("webhook-timestamp", ts2_s.as_str()),
            ("webhook-signature", sig2.as_str()),
        ],
    );
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["message_id"], id.as_str());
    assert_eq!(messages_to(&d, "+15551230001").len(), 1);

    // A replay of the very request: 401, nothing queued.
    let replay = post_signed(&d, SUPABASE, &body, &headers);
    assert_refused(&replay, "replay");
    assert!(replay.body["detail"].as_str().unwrap().contains("already"));
    assert_eq!(messages_to(&d, "+15551230001").len(), 1);

    // Refused before anything is queued: wrong secret, stale, future, unsigned, tampered.
    let other = supabase_body(
        "1c6e2f70-0000-4000-8000-000000000002",
        "15551230002",
        "111222",
    );
    let wrong = sw_sign(&py, &supabase_secret(99), "msg_w", now(), &other, false);
    let t = now().to_string();
    let a = post_signed(
        &d,
        SUPABASE,
        &other,
        &[
            ("webhook-id", "msg_w"),
            ("webhook-timestamp", t.as_str()),
            ("webhook-signature", wrong.as_str()),
        ],
    );
    assert_refused(&a, "wrong secret");
    for (name, off) in [("stale", -600), ("future", 600)] {
        let ts = now() + off;
        let sig = sw_sign(&py, &secret, "msg_t", ts, &other, false);
        let ts_s = ts.to_string();
        let a = post_signed(
            &d,
            SUPABASE,
            &other,
            &[
                ("webhook-id", "msg_t"),
                ("webhook-timestamp", ts_s.as_str()),
                ("webhook-signature", sig.as_str()),
            ],
        );
        assert_refused(&a, name);
        assert!(
            a.body["detail"].as_str().unwrap().contains("from now"),
            "{name}"
        );
    }
    let a = post_signed(&d, SUPABASE, &other, &[]);
    assert_refused(&a, "unsigned");
    let good = sw_sign(&py, &secret, "msg_x", now(), &other, false);
    let t = now().to_string();
    let tampered = other.replace("111222", "999999");
    let a = post_signed(
        &d,
        SUPABASE,
        &tampered,
        &[
            ("webhook-id", "msg_x"),
            ("webhook-timestamp", t.as_str()),
            ("webhook-signature", good.as_str()),
        ],
    );
    assert_refused(&a, "tampered");
    assert!(messages_to(&d, "+15551230002").is_empty());

    // A valid hook the service refuses answers in the shape Supabase passes to its client.
    let bad_phone = supabase_body("1c6e2f70-0000-4000-8000-000000000003", "12", "333444");
    let t = now();
    let sig = sw_sign(&py, &secret, "msg_p", t, &bad_phone, false);
    let t_s = t.to_string();
    let a = post_signed(
        &d,
        SUPABASE,
        &bad_phone,
        &[
            ("webhook-id", "msg_p"),
            ("webhook-timestamp", t_s.as_str()),
            ("webhook-signature", sig.as_str()),
        ],
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["error"]["http_code"], 422, "{:?}", a.body);
    assert!(a.body["error"]["message"].as_str().unwrap().contains("to"));

    // A new request (a new uuid) for the number that already had its code today: the daily
    // cap (1 in this config) holds, in the shape Supabase passes on, and nothing is queued.
    let again = supabase_body(
        "7d0b4c3e-11aa-4a5e-9e43-0f6f1c2b9a02",
        "15551230001",
        "551122",
    );
    let t = now();
    let sig = sw_sign(&py, &secret, "msg_cap", t, &again, false);
    let t_s = t.to_string();
    let a = post_signed(
        &d,
        SUPABASE,
        &again,
        &[
            ("webhook-id", "msg_cap"),
            ("webhook-timestamp", t_s.as_str()),
            ("webhook-signature", sig.as_str()),
        ],
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["error"]["http_code"], 429, "{:?}", a.body);
    let why = a.body["error"]["message"].as_str().unwrap();
    assert!(
        why.contains("per_day") && why.contains("retry after"),
        "{why}"
    );
    assert_eq!(messages_to(&d, "+15551230001").len(), 1);

    // The route answers only POST.
    let a = d.request("GET", SUPABASE, None, &[]);
    assert_eq!(a.status, 405);
    assert_eq!(d.sim_log().len(), 1, "only the first hook was ever sent");
}

fn zitadel_sign(key: &str, ts: i64, body: &str) -> String {
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    m.update(format!("{ts}.{body}").as_bytes());
    format!("t={ts},v1={}", hex::encode(m.finalize().into_bytes()))
}

/// The body Zitadel's webhook channel sends for an SMS (`serializableData` of
/// internal/notification/types: contextInfo, templateData, args with lower-cased keys).
fn zitadel_body(phone: &str, code: &str) -> String {
    json!({
        "contextInfo": {
            "eventType": "user.human.otp.sms.code.added",
            "provider": {"id": "285181292935381355", "description": "simgate"},
            "recipientPhoneNumber": phone
        },
        "templateData": {
            "title": "ZITADEL - One-time password",
            "preHeader": "Verify One-time password",
            "subject": "Verify One-time password",
            "greeting": "Hello Ada Lovelace,",
            "text": format!("Your one-time password for ZITADEL is {code}. Use it within the next 5 minutes."),
            "url": "",
            "buttonText": "",
            "primaryColor": "#5469d4",
            "backgroundColor": "#fafafa",
            "fontColor": "#000000",
            "fontFamily": "-apple-system, BlinkMacSystemFont, Segoe UI, Lato, Arial, Helvetica, sans-serif",
            "footerText": ""
        },
        "args": {
            "code": code,
            "displayName": "Ada Lovelace",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "lastPhone": phone,
            "verifiedPhone": phone,
            "preferredLoginName": "ada",
            "expiry": "5m0s"
        }
    })
    .to_string()
}

#[test]
fn zitadel_http_sms_provider_signed_by_zitadels_scheme() {
    let secrets = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), Some(&config(secrets.path(), None, true)));
    d.wait_ready();

    let body = zitadel_body("+15551240001", "739201");
    let sig = zitadel_sign(ZITADEL_KEY, now(), &body);
    let a = post_signed(&d, ZITADEL, &body, &[("ZITADEL-Signature", &sig)]);
    assert_eq!(a.status, 200, "{:?}\n{}", a.body, d.log());
    let id = a.body["message_id"].as_str().unwrap().to_owned();
    let log = d.wait_sim_log(1, Duration::from_secs(30));
    assert_eq!(log.len(), 1, "{}", d.log());
    assert_eq!(log[0]["to"], "+15551240001");
    assert_eq!(
        log[0]["text"],
        "Your one-time password for ZITADEL is 739201. Use it within the next 5 minutes."
    );
    let m = d.get(&format!("/v1/messages/{id}"));
    assert_eq!(
        m.body["text"],
        "Your one-time password for ZITADEL is ******. Use it within the next 5 minutes."
    );
    assert!(!d.log().contains("739201"));

    // Zitadel's retry signs the same body with a new timestamp: sent once. A different second
    // makes the header differ even on a fast machine.
    let sig2 = zitadel_sign(ZITADEL_KEY, now() + 1, &body);
    assert_ne!(sig, sig2);
    let retry = post_signed(&d, ZITADEL, &body, &[("ZITADEL-Signature", &sig2)]);
    assert_eq!(retry.status, 200, "{:?}", retry.body);
    assert_eq!(retry.body["message_id"], id.as_str());
    assert_eq!(messages_to(&d, "+15551240001").len(), 1);

    // A replay of the same signed request: 401, nothing queued.
    let replay = post_signed(&d, ZITADEL, &body, &[("ZITADEL-Signature", &sig)]);
    assert_refused(&replay, "replay");
    // The same signed request with its header entries reordered is still a replay.
    let (t_part, v_part) = sig.split_once(',').unwrap();
    let reordered = format!("{v_part},{t_part}");
    let replay = post_signed(&d, ZITADEL, &body, &[("ZITADEL-Signature", &reordered)]);
    assert_refused(&replay, "reordered replay");
    assert_eq!(messages_to(&d, "+15551240001").len(), 1);

    let other = zitadel_body("+15551240002", "551177");
    for (why, header) in [
        (
            "wrong key",
            zitadel_sign("another-key-0123456789abcdef", now(), &other),
        ),
        ("stale", zitadel_sign(ZITADEL_KEY, now() - 600, &other)),
        ("future", zitadel_sign(ZITADEL_KEY, now() + 600, &other)),
        ("no v1", format!("t={}", now())),
        ("over another body", zitadel_sign(ZITADEL_KEY, now(), &body)),
    ] {
        let a = post_signed(&d, ZITADEL, &other, &[("ZITADEL-Signature", &header)]);
        assert_refused(&a, why);
    }
    let a = post_signed(&d, ZITADEL, &other, &[]);
    assert_refused(&a, "unsigned");
    assert!(messages_to(&d, "+15551240002").is_empty());

    // A text that lost its code is refused rather than logged in clear.
    let no_code = zitadel_body("+15551240003", "246810").replace("is 246810. Use", "is ready. Use");
    let sig = zitadel_sign(ZITADEL_KEY, now(), &no_code);
    let a = post_signed(&d, ZITADEL, &no_code, &[("ZITADEL-Signature", &sig)]);
    assert_eq!(a.status, 422, "{:?}", a.body);
    assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
    assert_eq!(d.sim_log().len(), 1, "only the first request was ever sent");
}

#[test]
fn the_adapters_are_off_by_default_and_their_secrets_checked_at_start() {
    // Off: the routes do not exist.
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), None);
    let a = d.request("POST", SUPABASE, Some("{}".into()), &[]);
    assert_eq!(a.status, 404);
    let a = d.request("POST", ZITADEL, Some("{}".into()), &[]);
    assert_eq!(a.status, 404);
    drop(d);

    // A secret file others can read: config check and serve both refuse it, naming the key.
    let secrets = tempfile::tempdir().unwrap();
    let text = config(secrets.path(), Some(&supabase_secret(3)), true);
    std::fs::set_permissions(
        secrets.path().join("zitadel-key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let cfg = secrets.path().join("simgate.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("zitadel.signing_key_file"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains(ZITADEL_KEY));
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["serve", "--simulate", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("zitadel.signing_key_file"), "{stderr}");

    // A malformed Supabase secret is named too, without echoing it.
    std::fs::set_permissions(
        secrets.path().join("zitadel-key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    private_file(
        secrets.path(),
        "supabase-secret",
        "whsec_notsupabasesformat\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("supabase.secret_file"), "{stderr}");
    assert!(!stderr.contains("notsupabasesformat"), "{stderr}");
}
