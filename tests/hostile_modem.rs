//! Hostile modems on a real pty (tests/support/hostile_modem.rs) against the real daemon: what a
//! device that misbehaves around `AT+CMGS` may cost, and what the daemon makes of it.

#[path = "support/faults.rs"]
mod faults;
#[path = "support/hostile_modem.rs"]
mod hostile_modem;

use std::time::{Duration, Instant};

use faults::{ServeProcess, config_for};
use hostile_modem::{Hostile, HostileModem};

const FINAL_WAIT: Duration = Duration::from_secs(60);

fn status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Waits until message `id` is final; panics with the daemon's log (HTTP lines left out).
fn wait_final(d: &ServeProcess, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + FINAL_WAIT;
    loop {
        let m = d.get(&format!("/v1/messages/{id}")).body;
        if !matches!(m["status"].as_str(), Some("queued" | "sending") | None) {
            return m;
        }
        if Instant::now() > deadline {
            let log: Vec<String> = d
                .log()
                .lines()
                .filter(|l| !l.contains("simgate::http"))
                .map(|l| l.chars().take(300).collect())
                .collect();
            panic!("message {id} not final: {m}\n{}", log.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start(modem: &HostileModem, rust_log: &str) -> (tempfile::TempDir, ServeProcess) {
    start_with(modem, rust_log, "")
}

/// As [`start`], with `extra` appended to the config (after the `[[modem]]` table).
fn start_with(
    modem: &HostileModem,
    rust_log: &str,
    extra: &str,
) -> (tempfile::TempDir, ServeProcess) {
    let dir = faults::fast_tempdir();
    let daemon = ServeProcess::start(
        &dir.path().join("data"),
        &config_for(&modem.link, "", extra),
        rust_log,
    );
    daemon.wait_state("ready", Duration::from_secs(30));
    (dir, daemon)
}

/// Issue 17.2: 3 s of 2,000-byte lines after the PDU, with no final result. The answer is
/// bounded (the daemon's peak RSS stays small), the send fails at once as outcome unknown
/// instead of holding every line until the send timeout, the driver re-syncs, and the resend
/// goes out.
#[test]
fn a_modem_that_floods_during_a_send_costs_bounded_memory() {
    let modem = HostileModem::start(Hostile::FloodAfterPdu {
        secs: 3,
        len: 2_000,
    });
    let (_dir, d) = start(&modem, "simgate=debug,info");
    let before = status_kib(d.pid(), "VmRSS:");
    let started = Instant::now();
    let id = d.create_otp("+15551230001");
    let m = wait_final(&d, &id);
    let took = started.elapsed();
    let peak = status_kib(d.pid(), "VmHWM:");
    eprintln!(
        "flood of {} bytes during AT+CMGS: RSS {before} kB before, peak {peak} kB; message {} \
         after {took:?}, attempts {}",
        modem.seen.lock().unwrap().flooded,
        m["status"],
        m["attempts"]
    );
    assert_eq!(m["status"], "sent", "{m}\n{}", d.log_tail(40));
    assert!(m["attempts"].as_u64().unwrap() >= 2, "{m}");
    let log = d.log();
    assert!(
        log.contains("answer outgrew the limit"),
        "{}",
        d.log_tail(40)
    );
    // What the daemon kept of the flood must stay small, however long it lasts.
    assert!(
        peak < before + 10 * 1024,
        "peak RSS {peak} kB (before {before} kB)"
    );
    // Re-synced: an `AT` after the flooded send, before the resend.
    let commands = modem.commands();
    let first = commands
        .iter()
        .position(|c| c.starts_with("AT+CMGS"))
        .unwrap();
    let resend = first
        + 1
        + commands[first + 1..]
            .iter()
            .position(|c| c.starts_with("AT+CMGS"))
            .expect("a resend");
    assert!(
        commands[first..resend].iter().any(|c| c == "AT"),
        "no re-sync between the sends: {:?}",
        &commands[first..resend]
    );
}

/// Issue 17.8: `OK` to `AT+CMGS` without a `> ` prompt. The PDU never reached the modem, so it is
/// not sent, and not "outcome unknown" either: even with `on_unknown_outcome = "fail"` the
/// message is retried (and then sent), where an unknown outcome would have failed it.
#[test]
fn ok_without_a_prompt_is_retried_as_not_sent() {
    let modem = HostileModem::start(Hostile::OkWithoutPrompt { times: 1 });
    let (_dir, d) = start_with(
        &modem,
        "simgate=debug,info",
        "\n[dispatch]\non_unknown_outcome = \"fail\"\n",
    );
    let id = d.create_otp("+15551230002");
    let m = wait_final(&d, &id);
    eprintln!("OK without prompt, then a normal send: {m}");
    assert_eq!(m["status"], "sent", "{m}\n{}", d.log_tail(40));
    assert_eq!(m["attempts"], 2, "{m}");
    assert_eq!(modem.pdus().len(), 1, "the PDU was written once");
    assert!(
        d.log().contains("without the > prompt"),
        "{}",
        d.log_tail(40)
    );
}

/// Issue 17.6: a modem that echoes the PDU in lower case. With `RUST_LOG=trace` the daemon's log
/// holds the AT traffic but neither the PDU (in any case) nor the code it carries.
#[test]
fn a_lower_case_echo_of_the_pdu_never_reaches_the_trace_log() {
    let modem = HostileModem::start(Hostile::LowercaseEcho);
    let (_dir, d) = start(&modem, "trace");
    // Ten digits, so no timestamp or counter can equal the code by chance.
    let a = d.post(
        "/v1/otp",
        &serde_json::json!({ "to": "+15551230003", "code_length": 10 }),
    );
    assert_eq!(a.status, 202, "{a:?}");
    let id = a.body["message_id"].as_str().unwrap().to_owned();
    let m = wait_final(&d, &id);
    assert_eq!(m["status"], "sent", "{m}");
    std::thread::sleep(Duration::from_millis(500));
    let pdus = modem.pdus();
    assert_eq!(pdus.len(), 1);
    let code = code_of(&pdus[0]);
    assert_eq!(code.len(), 10);
    assert_pdu_free(&d.log(), &pdus, &code);
}

/// The code inside a PDU, decoded with the binary's own `pdu decode`.
fn code_of(pdu: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["pdu", "decode", pdu])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    faults::code_in(v["text"].as_str().expect("text"))
}

/// The log has AT traffic and a `+CMGS`, and no PDU (any case, or a 16-digit piece of one) and
/// no code (as a whole digit run).
fn assert_pdu_free(log: &str, pdus: &[String], code: &str) {
    assert!(log.contains("AT+CMGS="), "no AT traffic in the log");
    let lower = log.to_ascii_lowercase();
    for pdu in pdus {
        let pdu = pdu.to_ascii_lowercase();
        for piece in pdu.as_bytes().chunks(16).filter(|c| c.len() == 16) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!lower.contains(piece), "PDU piece {piece} in the log");
        }
    }
    let runs: Vec<&str> = log.split(|c: char| !c.is_ascii_digit()).collect();
    assert!(!runs.contains(&code), "code {code} in the log");
    eprintln!(
        "trace log: {} lines, {} bytes; no PDU piece, no code",
        log.lines().count(),
        log.len()
    );
}

/// Issue 17.6: the built-in simulator (`serve --simulate`) runs in the daemon's process, so its
/// own tracing is the daemon's log: at trace level it must not print the PDUs it receives.
#[test]
fn the_built_in_simulator_keeps_pdus_out_of_the_trace_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = faults::daemon::Daemon::start_with(
        &dir.path().join("data"),
        None,
        &[("RUST_LOG", "trace")],
    );
    d.wait_ready();
    let a = d.post(
        "/v1/otp",
        &serde_json::json!({ "to": "+15551230004", "code_length": 10 }),
    );
    assert_eq!(a.status, 202, "{a:?}");
    let sent = d.wait_sim_log(1, Duration::from_secs(20));
    assert_eq!(sent.len(), 1, "{}", d.log());
    let pdus: Vec<String> = sent[0]["pdu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    let code = faults::code_in(sent[0]["text"].as_str().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let log = d.log();
    assert!(
        log.contains("sim: PDU received"),
        "the simulator did not trace"
    );
    assert_pdu_free(&log, &pdus, &code);
}
