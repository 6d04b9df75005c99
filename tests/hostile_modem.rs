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
