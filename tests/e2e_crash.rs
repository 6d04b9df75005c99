//! Crash safety: SIGKILL the real daemon at random moments while clients post texts and the
//! simulated modem sends them, restart it, and check that every message that got a `202`
//! reaches the phone, that duplicates come only from sends the kill interrupted, and that the
//! SQLite file is intact.

#[path = "support/daemon.rs"]
mod daemon;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use daemon::{Daemon, request};
use serde_json::json;

const ROUNDS: usize = 10;
const CLIENTS: usize = 4;

/// A small deterministic generator; the seed is printed so a failing run can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % bound
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_accepted_message() {
    let seed = std::env::var("SIMGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed {seed} (replay with SIMGATE_CRASH_SEED={seed})");
    let mut rng = Lcg(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // id → text of every message the daemon accepted with a 202.
    let accepted: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    for round in 0..ROUNDS {
        let mut d = Daemon::start(&data, None);
        let kill_after = Duration::from_millis(200 + rng.next(800));
        let stop_at = Instant::now() + kill_after;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let base = d.base.clone();
                let bearer = d.bearer();
                let accepted = accepted.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    // Keep posting until the daemon is gone (a refused connection).
                    loop {
                        let text = format!("crash r{round} c{c} n{n}");
                        n += 1;
                        let body = json!({"to": format!("+1555777{c:04}"), "text": text});
                        match request(
                            &base,
                            "POST",
                            "/v1/messages",
                            Some(body.to_string()),
                            &[("Authorization", &bearer)],
                        ) {
                            Ok(a) if a.status == 202 => {
                                let id = a.body["id"].as_str().expect("id").to_owned();
                                accepted.lock().unwrap().insert(id, text);
                            }
                            Ok(a) => panic!("unexpected answer {} {:?}", a.status, a.body),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        while Instant::now() < stop_at {
            std::thread::sleep(Duration::from_millis(10));
        }
        d.kill();
        for c in clients {
            c.join().expect("client thread");
        }
    }

    // A last start drains the queue.
    let d = Daemon::start(&data, None);
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > ROUNDS,
        "the load produced too few requests"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for line in d.sim_log() {
            *counts
                .entry(line["text"].as_str().unwrap_or("").to_owned())
                .or_default() += 1;
        }
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|(_, t)| !counts.contains_key(*t))
            .map(|(id, _)| id)
            .collect();
        if missing.is_empty() {
            break counts;
        }
        if Instant::now() >= deadline {
            // The daemon's log first: CI shows the end of the output, which should name the
            // lost messages and what the store says about them.
            let rows: Vec<String> = missing
                .iter()
                .take(5)
                .map(|id| d.get(&format!("/v1/messages/{id}")).body.to_string())
                .collect();
            panic!(
                "{}\n{} of {} accepted messages never reached the phone; the first of them:\n{}",
                d.log(),
                missing.len(),
                accepted.len(),
                rows.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    // Duplicates only where a send was interrupted: such a message was claimed more than once.
    let mut duplicates = 0;
    for (id, text) in &accepted {
        let times = counts[text];
        if times > 1 {
            duplicates += times - 1;
            let m = d.get(&format!("/v1/messages/{id}")).body;
            let attempts = m["attempts"].as_u64().unwrap_or(0) as usize;
            assert!(
                attempts >= times,
                "{id} arrived {times}× but was attempted {attempts}×: {m}"
            );
        }
    }
    // One modem sends one message at a time, so each kill can interrupt at most one send.
    assert!(
        duplicates <= ROUNDS,
        "{duplicates} duplicates after {ROUNDS} kills"
    );
    eprintln!(
        "crash test: {} accepted, all delivered to the simulator, {duplicates} duplicates",
        accepted.len()
    );
    drop(d);

    // PostgreSQL keeps its own files (pg_e2e_crash runs this scenario there).
    if daemon::postgres_mode() {
        return;
    }
    let conn = rusqlite::Connection::open(data.join("simgate.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
