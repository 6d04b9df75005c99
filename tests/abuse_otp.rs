//! Issue 6.4: abuse against a real daemon (`simgate serve` driving an external `simgate sim` on a
//! real pty, real SQLite, loopback HTTP): brute force of one OTP over several tokens, SMS pumping
//! (many numbers under one range) against the limits and the prefix lists, and secrets in the log
//! at trace level.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use faults::{ServeProcess, TOKEN, code_in, request};
use serde_json::{Value, json};
use support::SimProcess;

/// Four tokens, as a gateway shared by four apps would have; the first is `faults::TOKEN`.
const TOKENS: [&str; 4] = [
    TOKEN,
    "second-app-token-aaaaaaaaaaaaaaaa",
    "third-app-token-bbbbbbbbbbbbbbbbb",
    "fourth-app-token-cccccccccccccccc",
];

/// A config for one external modem with `limits` as the whole `[limits]` table and four tokens.
fn config(sim: &SimProcess, limits: &str) -> String {
    let tokens: Vec<String> = TOKENS.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "[api]\ntokens = [{}]\n\n[limits]\n{limits}\n\n[[modem]]\ndevice = \"{}\"\n\
         sends_per_minute = 0\nsend_timeout_seconds = 5\n",
        tokens.join(", "),
        sim.link.display()
    )
}

fn start(sim: &SimProcess, limits: &str, rust_log: &str) -> (tempfile::TempDir, ServeProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = ServeProcess::start(&dir.path().join("data"), &config(sim, limits), rust_log);
    d.wait_state("ready", Duration::from_secs(30));
    (dir, d)
}

/// The text the simulator accepted for `to` (waits for it).
fn text_for(sim: &SimProcess, to: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(line) = sim.log_lines().iter().rev().find(|l| l["to"] == to) {
            return line["text"].as_str().expect("text").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no text for {to} reached the simulator"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post_with(d: &ServeProcess, token: &str, path: &str, body: &Value) -> faults::Answer {
    let bearer = format!("Bearer {token}");
    request(
        &d.base,
        "POST",
        path,
        Some(body.to_string()),
        &[("Authorization", &bearer)],
    )
    .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

#[test]
fn ten_thousand_wrong_codes_over_four_tokens_never_approve() {
    const GUESSES: usize = 10_000;
    const THREADS: usize = 8;
    const MAX_ATTEMPTS: u64 = 5;
    let sim = SimProcess::start(&[]);
    // Only the attempt counter stands in the way: the per-number verify limit is off, so this
    // shows what the counter alone does.
    let (_dir, d) = start(
        &sim,
        "otp_per_number = \"off\"\nverify_per_number = \"off\"",
        "simgate=debug,info",
    );
    let to = "+447700900123";
    let created = d.post("/v1/otp", &json!({ "to": to }));
    assert_eq!(created.status, 202, "{created:?}");
    let id = created.body["id"].as_str().expect("id").to_owned();
    let real = code_in(&text_for(&sim, to));

    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (next, base, id, real) = (next.clone(), d.base.clone(), id.clone(), real.clone());
            std::thread::spawn(move || {
                let mut answers: Vec<(u16, Value)> = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= GUESSES {
                        return answers;
                    }
                    let mut guess = format!("{i:06}");
                    if guess == real {
                        // Never the right code: this is about wrong guesses.
                        guess = format!("{:06}", GUESSES + i);
                    }
                    let bearer = format!("Bearer {}", TOKENS[i % TOKENS.len()]);
                    let path = format!("/v1/otp/{id}/verify");
                    let a = request(
                        &base,
                        "POST",
                        &path,
                        Some(json!({ "code": guess }).to_string()),
                        &[("Authorization", &bearer)],
                    )
                    .expect("daemon reachable");
                    answers.push((a.status, a.body));
                }
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("guessing thread"))
        .collect();
    assert_eq!(answers.len(), GUESSES);

    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    let mut counted = 0;
    for (status, body) in &answers {
        assert!(*status < 500, "a guess answered {status}: {body}");
        assert_ne!(body["verified"], true, "a wrong code verified: {body}");
        assert_ne!(body["status"], "approved", "a wrong code approved: {body}");
        if *status == 200 && body["attempts_remaining"].as_u64().is_some_and(|n| n > 0) {
            counted += 1;
        }
        *by_status
            .entry(format!(
                "{status} {}",
                body["status"]
                    .as_str()
                    .or(body["otp_status"].as_str())
                    .unwrap_or("-")
            ))
            .or_default() += 1;
    }
    eprintln!("brute force: {GUESSES} wrong guesses over 4 tokens answered {by_status:?}");
    // Exactly the configured wrong attempts were counted before the OTP ended, even with eight
    // guessers racing.
    assert_eq!(
        counted,
        (MAX_ATTEMPTS - 1) as usize,
        "answers that still left attempts"
    );
    // The guess that used the last attempt (and any racing it) answers 200 with the final
    // status; every later one a 409 problem naming it, with nothing counted.
    let final_answers = answers
        .iter()
        .filter(|(s, b)| {
            (*s == 200 && b["status"] == "max_attempts_reached")
                || (*s == 409 && b["otp_status"] == "max_attempts_reached")
        })
        .count();
    assert_eq!(
        final_answers,
        GUESSES - (MAX_ATTEMPTS - 1) as usize,
        "every guess after the last attempt must answer the final status: {by_status:?}"
    );

    let otp = d.get(&format!("/v1/otp/{id}"));
    assert_eq!(otp.body["status"], "max_attempts_reached", "{otp:?}");
    assert_eq!(otp.body["attempts_remaining"], 0, "{otp:?}");
    // Too late even for the right code, by id or by number.
    for (path, body) in [
        (format!("/v1/otp/{id}/verify"), json!({ "code": real })),
        (
            "/v1/otp/verify".to_owned(),
            json!({ "to": to, "code": real }),
        ),
    ] {
        let a = d.post(&path, &body);
        assert!(a.status < 500, "{a:?}");
        assert_ne!(
            a.body["verified"], true,
            "the right code after the limit: {a:?}"
        );
        assert_ne!(a.body["status"], "approved", "{a:?}");
    }
}

/// Sends `n` OTPs to distinct numbers under `range` and returns (accepted, answers refused with
/// 429 + Retry-After naming `limit`).
fn pump(d: &ServeProcess, range: &str, n: usize, limit: &str) -> (usize, usize) {
    let (mut accepted, mut limited) = (0, 0);
    for i in 0..n {
        let to = format!("{range}{i:05}");
        let a = d.post("/v1/otp", &json!({ "to": to }));
        match a.status {
            202 => accepted += 1,
            429 => {
                assert!(a.retry_after.is_some(), "429 without Retry-After: {a:?}");
                assert!(
                    a.body.to_string().contains(limit),
                    "429 does not name {limit}: {a:?}"
                );
                limited += 1;
            }
            s => panic!("pumping {to} answered {s}: {a:?}"),
        }
    }
    (accepted, limited)
}

#[test]
fn sms_pumping_is_stopped_by_the_range_limit_and_the_global_limit() {
    let sim = SimProcess::start(&[]);
    // The defaults (per-number 3/10m) with the per-range limit at its default of 30 per 10
    // minutes per 6-digit range: 500 numbers of one range within a minute.
    let (_dir, d) = start(&sim, "", "info");
    let t = Instant::now();
    let (accepted, limited) = pump(&d, "+4477009", 500, "otp_per_prefix");
    eprintln!(
        "pumping one range with defaults: {accepted} accepted, {limited} refused in {:?}",
        t.elapsed()
    );
    assert_eq!(accepted, 30, "otp_per_prefix default is 30/10m");
    assert_eq!(limited, 470);
    // Another range is not affected.
    let a = d.post("/v1/otp", &json!({ "to": "+447800900001" }));
    assert_eq!(a.status, 202, "{a:?}");
    drop(d);

    // With the range limit off, only sends_global bounds 500 numbers within a minute.
    let sim = SimProcess::start(&[]);
    let (_dir2, d) = start(
        &sim,
        "otp_per_prefix = \"off\"\nsends_global = \"20/1m\"",
        "info",
    );
    let t = Instant::now();
    let (accepted, limited) = pump(&d, "+4477009", 500, "sends_global");
    let elapsed = t.elapsed();
    eprintln!(
        "pumping with otp_per_prefix off, sends_global 20/1m: {accepted} accepted, {limited} \
         refused in {elapsed:?}"
    );
    // 20 at once, then one every 3 s while the loop runs.
    let bound = 20 + elapsed.as_secs() as usize / 3 + 1;
    assert!(
        (20..=bound).contains(&accepted),
        "{accepted} accepted, bound {bound}"
    );
    assert_eq!(accepted + limited, 500);
}

#[test]
fn prefix_lists_refuse_numbers_with_403() {
    let sim = SimProcess::start(&[]);
    let (_dir, d) = start(
        &sim,
        "allow_prefixes = [\"+44\"]\ndeny_prefixes = [\"+44909\"]",
        "info",
    );
    for (to, want) in [
        ("+15551234567", 403),
        ("+4490912345678", 403),
        ("+447700900555", 202),
    ] {
        for (path, body) in [
            ("/v1/otp", json!({ "to": to })),
            ("/v1/messages", json!({ "to": to, "text": "hello" })),
        ] {
            let a = d.post(path, &body);
            assert_eq!(a.status, want, "{path} to {to}: {a:?}");
            if want == 403 {
                assert_eq!(
                    a.content_type.as_deref(),
                    Some("application/problem+json"),
                    "{a:?}"
                );
                let detail = a.body["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("prefixes"), "{detail}");
            }
        }
    }
    // Nothing refused reached the modem.
    std::thread::sleep(Duration::from_secs(2));
    for line in sim.log_lines() {
        assert_eq!(line["to"], "+447700900555", "{line}");
    }
}

/// Every run of ASCII digits in `text`, whole (a code inside a longer number does not count as
/// a match, so timestamps cannot collide with a 10-digit code by accident).
fn digit_runs(text: &str) -> std::collections::HashSet<&str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn no_code_text_or_token_reaches_the_trace_log() {
    let sim = SimProcess::start(&[]);
    let (_dir, d) = start(&sim, "otp_per_number = \"off\"", "trace");
    let mut secrets: Vec<String> = TOKENS.iter().map(|t| t.to_string()).collect();
    let mut codes = Vec::new();
    for (i, token) in TOKENS.iter().enumerate() {
        let to = format!("+44770090{i:04}");
        // 10-digit codes, so no timestamp or counter in the log can equal one by chance.
        let a = post_with(
            &d,
            token,
            "/v1/otp",
            &json!({ "to": to, "code_length": 10 }),
        );
        assert_eq!(a.status, 202, "{a:?}");
        let id = a.body["id"].as_str().expect("id").to_owned();
        let text = text_for(&sim, &to);
        let code = code_in(&text);
        assert_eq!(code.len(), 10, "{text}");
        // A wrong guess, then the right code; then a resend's fresh code.
        let wrong = post_with(
            &d,
            token,
            &format!("/v1/otp/{id}/verify"),
            &json!({ "code": "0000000000" }),
        );
        assert_eq!(wrong.body["verified"], false, "{wrong:?}");
        let right = post_with(
            &d,
            token,
            "/v1/otp/verify",
            &json!({ "to": to, "code": code }),
        );
        assert_eq!(right.body["verified"], true, "{right:?}");
        secrets.push(text);
        codes.push(code);
    }
    let resent = d.post(
        "/v1/otp",
        &json!({ "to": "+447700909999", "code_length": 10 }),
    );
    let id = resent.body["id"].as_str().expect("id").to_owned();
    let first = code_in(&text_for(&sim, "+447700909999"));
    let again = d.post(&format!("/v1/otp/{id}/resend"), &json!({}));
    assert_eq!(again.status, 202, "{again:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sim.log_lines().len() < TOKENS.len() + 2 {
        assert!(
            Instant::now() < deadline,
            "resend never reached the simulator"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    codes.push(first);
    codes.push(code_in(
        sim.log_lines().last().expect("line")["text"]
            .as_str()
            .expect("text"),
    ));
    // The PDUs carry the code too (GSM 7-bit packed, TS 23.038): the AT trace must redact them.
    for line in sim.log_lines() {
        for pdu in line["pdu"].as_array().expect("pdu") {
            secrets.push(pdu.as_str().expect("hex").to_owned());
        }
    }
    let key = std::fs::read(d.data_dir.join("otp-keys")).expect("key file");
    secrets.push(hex::encode(&key));
    secrets.push(hex::encode_upper(&key));

    // Let late debug/trace lines (status reports, dispatcher) arrive.
    std::thread::sleep(Duration::from_secs(2));
    let log = d.log();
    assert!(
        log.lines().count() > 50 && log.contains("TRACE"),
        "the daemon did not log at trace level:\n{log}"
    );
    // The AT traffic is in the log, so the redaction of the CMGS payload was exercised.
    assert!(
        log.contains("AT+CMGS="),
        "no AT+CMGS in the trace log:\n{log}"
    );
    let runs = digit_runs(&log);
    for code in &codes {
        assert!(
            !runs.contains(code.as_str()),
            "code {code} appears in the log"
        );
    }
    for secret in &secrets {
        assert!(
            !log.to_lowercase().contains(&secret.to_lowercase()),
            "a secret appears in the log: {secret:?}"
        );
    }
    eprintln!(
        "trace log: {} lines, {} bytes; {} codes, {} texts/PDUs/tokens/keys absent",
        log.lines().count(),
        log.len(),
        codes.len(),
        secrets.len()
    );
}
