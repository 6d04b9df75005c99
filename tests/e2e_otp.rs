//! End to end: the real `simgate serve --simulate` binary over loopback HTTP, its SQLite file,
//! and its built-in simulated modem on a pty. The code a test verifies is the one the simulated
//! phone received (read from the simulator's log), never one the daemon revealed.

#[path = "support/daemon.rs"]
mod daemon;

use std::time::Duration;

use daemon::{Daemon, code_in};
use serde_json::{Value, json};

const SMS_WAIT: Duration = Duration::from_secs(20);

/// The text of the `nth` (1-based) SMS the simulated phone `to` received, once it arrives.
fn received_text(d: &Daemon, to: &str, nth: usize) -> String {
    let deadline = std::time::Instant::now() + SMS_WAIT;
    loop {
        let lines = d.sim_log();
        let mine: Vec<&Value> = lines.iter().filter(|l| l["to"] == to).collect();
        if let Some(line) = mine.get(nth - 1) {
            return line["text"].as_str().expect("text").to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no SMS #{nth} to {to} in {lines:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_otp(d: &Daemon, body: Value) -> Value {
    let a = d.post("/v1/otp", &body);
    assert_eq!(a.status, 202, "{:?}", a.body);
    assert_eq!(a.body["status"], "pending");
    a.body
}

#[test]
fn otp_code_received_by_the_phone_verifies_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let otp = create_otp(&d, json!({"to": "+15551230001"}));
    let id = otp["id"].as_str().unwrap();
    let text = received_text(&d, "+15551230001", 1);
    assert!(text.contains("expires in 5 minutes"), "{text}");
    let code = code_in(&text);
    assert_eq!(code.len(), 6);

    let ok = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": code}));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["status"], "approved");
    assert_eq!(ok.body["verified"], true);

    let again = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": code}));
    assert_eq!(again.status, 409, "a code verifies once: {:?}", again.body);
    assert_eq!(again.body["verified"], false);
    assert_eq!(again.body["otp_status"], "approved");

    // The message behind it reached `sent` (or `delivered`: the simulator reports after 1 s).
    let msg_id = otp["message_id"].as_str().unwrap();
    let msg = d.wait_for(&format!("/v1/messages/{msg_id}"), SMS_WAIT, |m| {
        m["status"] == "delivered"
    });
    assert_eq!(msg["status"], "delivered", "{msg}");
    // The delivery log never shows the code.
    assert!(!msg.to_string().contains(&code), "{msg}");
    let log = d.get("/v1/messages?to=%2B15551230001");
    assert!(!log.body.to_string().contains(&code), "{:?}", log.body);
    // Nor does the daemon's own log (it runs at debug level here).
    assert!(!d.log().contains(&code), "the daemon logged the code");
}

#[test]
fn wrong_codes_end_in_max_attempts_reached() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let otp = create_otp(&d, json!({"to": "+15551230002"}));
    let id = otp["id"].as_str().unwrap();
    let code = code_in(&received_text(&d, "+15551230002", 1));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for remaining in (0..5).rev() {
        let a = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": wrong}));
        assert_eq!(a.status, 200, "{:?}", a.body);
        assert_eq!(a.body["verified"], false);
        assert_eq!(a.body["attempts_remaining"], remaining, "{:?}", a.body);
    }
    let a = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": code}));
    assert_eq!(
        a.status, 409,
        "the right code after the limit: {:?}",
        a.body
    );
    assert_eq!(a.body["verified"], false);
    assert_eq!(a.body["otp_status"], "max_attempts_reached");
    assert_eq!(
        d.get(&format!("/v1/otp/{id}")).body["status"],
        "max_attempts_reached"
    );
}

#[test]
fn expiry_superseding_idempotency_auth_and_rate_limits() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[otp]
min_ttl_seconds = 1
"#;
    let d = Daemon::start(&dir.path().join("data"), Some(config));
    d.wait_ready();

    // Expiry: a code past its TTL is refused and the OTP reads `expired` (not 404).
    let short = create_otp(&d, json!({"to": "+15551230003", "ttl_seconds": 1}));
    let short_id = short["id"].as_str().unwrap();
    let code = code_in(&received_text(&d, "+15551230003", 1));
    std::thread::sleep(Duration::from_millis(1500));
    let a = d.post(
        &format!("/v1/otp/{short_id}/verify"),
        &json!({"code": code}),
    );
    assert_eq!(a.status, 410, "{:?}", a.body);
    assert_eq!(a.body["verified"], false);
    assert_eq!(a.body["otp_status"], "expired");
    assert_eq!(
        d.get(&format!("/v1/otp/{short_id}")).body["status"],
        "expired"
    );

    // Superseding, when asked for: a new OTP for the number cancels the pending one.
    let first = create_otp(&d, json!({"to": "+15551230004"}));
    let first_code = code_in(&received_text(&d, "+15551230004", 1));
    let second = create_otp(&d, json!({"to": "+15551230004", "on_pending": "supersede"}));
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(
        d.get(&format!("/v1/otp/{first_id}")).body["status"],
        "canceled"
    );
    let a = d.post(
        &format!("/v1/otp/{first_id}/verify"),
        &json!({"code": first_code}),
    );
    assert_eq!(a.status, 409, "{:?}", a.body);
    assert_eq!(a.body["otp_status"], "canceled");
    assert_ne!(first["id"], second["id"]);

    // Idempotency: the same key and body answer the same OTP and send one SMS.
    let body = json!({"to": "+15551230005"}).to_string();
    let key = [
        ("Authorization", d.bearer()),
        ("Idempotency-Key", "login-42".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = key.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let one = d.request("POST", "/v1/otp", Some(body.clone()), &headers);
    let two = d.request("POST", "/v1/otp", Some(body), &headers);
    assert_eq!(one.status, 202, "{:?}", one.body);
    assert_eq!(two.status, 202, "{:?}", two.body);
    assert_eq!(one.body["id"], two.body["id"]);
    let other = d.request(
        "POST",
        "/v1/otp",
        Some(json!({"to": "+15551230006"}).to_string()),
        &headers,
    );
    assert_eq!(other.status, 422, "same key, other body: {:?}", other.body);
    received_text(&d, "+15551230005", 1);
    std::thread::sleep(Duration::from_millis(500));
    let sent_to_5 = d
        .sim_log()
        .iter()
        .filter(|l| l["to"] == "+15551230005")
        .count();
    assert_eq!(
        sent_to_5, 1,
        "an idempotent retry must not send a second SMS"
    );

    // Auth: no token, a wrong token.
    let a = d.request(
        "POST",
        "/v1/otp",
        Some(json!({"to": "+15551230007"}).to_string()),
        &[],
    );
    assert_eq!(a.status, 401);
    assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
    let a = d.request(
        "GET",
        "/v1/modems",
        None,
        &[("Authorization", "Bearer not-the-token")],
    );
    assert_eq!(a.status, 401);

    // Rate limit: the default is 3 OTPs per number per 10 minutes (superseding, so the
    // per-OTP resend cap is not what refuses).
    let fresh = json!({"to": "+15551230008", "on_pending": "supersede"});
    for _ in 0..3 {
        create_otp(&d, fresh.clone());
    }
    let a = d.post("/v1/otp", &fresh);
    assert_eq!(a.status, 429, "{:?}", a.body);
    assert_eq!(a.body["limit"], "otp_per_number", "{:?}", a.body);
    assert_eq!(a.content_type.as_deref(), Some("application/problem+json"));
    let retry: u64 = a.retry_after.expect("Retry-After").parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, None);
    d.wait_ready();
    let otp = create_otp(&d, json!({"to": "+15551230009"}));
    let id = otp["id"].as_str().unwrap().to_owned();
    let code = code_in(&received_text(&d, "+15551230009", 1));
    let token = d.token.clone();
    assert!(d.terminate(), "clean shutdown on SIGTERM:\n{}", d.log());

    let d = Daemon::start(&data, None);
    assert_eq!(d.token, token, "the token file is reused");
    let got = d.get(&format!("/v1/otp/{id}"));
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["status"], "pending");
    let a = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": code}));
    assert_eq!(a.body["status"], "approved", "{:?}", a.body);
    let modems = d.get("/v1/modems");
    assert_eq!(modems.status, 200);
    assert_eq!(modems.body["modems"][0]["id"], "sim0");
}

/// The text with its digits blanked: the shape a resend must keep.
fn shape(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

#[test]
fn a_resend_is_the_first_text_with_only_the_code_changed() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let to = "+15551230010";
    // Literal stars next to the code, and the code twice: the masked log text cannot say where
    // the code is, so a resend must not be worded from it.
    let otp = create_otp(
        &d,
        json!({"to": to, "code_length": 4, "template": "Code **{code}** (again: {code})",
               "origin": "example.com"}),
    );
    let id = otp["id"].as_str().unwrap();
    let first = received_text(&d, to, 1);
    assert_eq!(
        shape(&first),
        "Code **####** (again: ####)\n\n@example.com #####"
    );
    let r = d.post(&format!("/v1/otp/{id}/resend"), &json!({}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    let second = received_text(&d, to, 2);
    assert_eq!(shape(&second), shape(&first), "{first:?} then {second:?}");
    // Every place holds the same new code, of the first code's length.
    let codes: Vec<&str> = second
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(codes.len(), 3, "{second:?}");
    assert!(
        codes.iter().all(|c| *c == codes[0] && c.len() == 4),
        "{second:?}"
    );
    let a = d.post(&format!("/v1/otp/{id}/verify"), &json!({"code": codes[0]}));
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["verified"], true, "{:?}", a.body);

    // A star glued to the code: the resent code keeps its length.
    let to = "+15551230011";
    let otp = create_otp(&d, json!({"to": to, "template": "*{code}"}));
    let id = otp["id"].as_str().unwrap();
    assert_eq!(shape(&received_text(&d, to, 1)), "*######");
    assert_eq!(
        d.post(&format!("/v1/otp/{id}/resend"), &json!({})).status,
        202
    );
    let second = received_text(&d, to, 2);
    assert_eq!(shape(&second), "*######", "{second:?}");
    let a = d.post(
        &format!("/v1/otp/{id}/verify"),
        &json!({"code": &second[1..]}),
    );
    assert_eq!(a.body["verified"], true, "{:?}", a.body);
}

#[test]
fn a_second_request_reuses_the_pending_otp_and_resends_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let to = "+15551230012";
    let first = create_otp(&d, json!({"to": to, "ttl_seconds": 60}));
    let id = first["id"].as_str().unwrap();
    let first_text = received_text(&d, to, 1);
    // The default template reads right for a one-minute code.
    assert!(
        first_text.ends_with("It expires in 1 minute."),
        "{first_text}"
    );
    let first_code = code_in(&first_text);

    // The user asks again: the same OTP, one more text with a fresh code, same expiry.
    let again = create_otp(&d, json!({"to": to}));
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["expires_at"], first["expires_at"]);
    assert_ne!(again["message_id"], first["message_id"]);
    assert!(
        again["warnings"][0].as_str().unwrap().contains("reused"),
        "{again}"
    );
    let second_text = received_text(&d, to, 2);
    assert_eq!(shape(&second_text), shape(&first_text));
    assert_ne!(code_in(&second_text), first_code);

    // One resend more reaches the default otp.max_resends = 2; the next is refused.
    let r = d.post(&format!("/v1/otp/{id}/resend"), &json!({}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    for refused in [
        d.post(&format!("/v1/otp/{id}/resend"), &json!({})),
        d.post("/v1/otp", &json!({"to": to})),
    ] {
        assert_eq!(refused.status, 429, "{:?}", refused.body);
        assert_eq!(refused.body["limit"], "max_resends", "{:?}", refused.body);
        let detail = refused.body["detail"].as_str().unwrap();
        assert!(detail.contains("otp.max_resends = 2"), "{detail}");
        let retry: u64 = refused.retry_after.expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry), "until the expiry: {retry}");
    }
    assert_eq!(d.get(&format!("/v1/otp/{id}")).body["texts"], 3);

    // The late first text still works: reusing never invalidated it.
    let a = d.post(
        &format!("/v1/otp/{id}/verify"),
        &json!({"code": first_code}),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["verified"], true);
}
