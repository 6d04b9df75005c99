//! Issue 6.3: load. `SIMGATE_LOAD_REQUESTS` (default 20,000) `POST /v1/otp` requests from 64
//! concurrent clients over loopback against one daemon driving one simulated modem on a real pty,
//! with per-number limits off, distinct numbers and `limits.queue_max` = `SIMGATE_LOAD_QUEUE_MAX`
//! (default 2,000). It proves: no 5xx other than the queue bound's 503, which carries
//! `Retry-After`; the queue never holds more than the bound (sampled from `/metrics`); the
//! daemon's peak RSS (`VmHWM`) stays bounded; every accepted OTP is sent exactly once, no refused
//! one is sent, and the backlog drains in creation order (the simulator's log order never puts a
//! message before one that was created, i.e. answered 202, before it was even requested).

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faults::{ServeProcess, config_for};
use support::SimProcess;

const CLIENTS: usize = 64;
/// Peak RSS allowed in the debug build: generous, it catches a queue or buffer growing with the
/// number of requests, not a few megabytes of allocator slack.
const RSS_BOUND_KIB: u64 = 200 * 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One accepted OTP as its client saw it.
struct Accepted {
    to: String,
    /// When the request was sent and when its 202 arrived, relative to the run's start.
    requested: Duration,
    answered: Duration,
}

/// What one client thread saw.
#[derive(Default)]
struct ClientResult {
    accepted: Vec<Accepted>,
    refused: Vec<String>,
    unexpected: Vec<String>,
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The `queue_depth` gauge from the Prometheus text.
fn queue_depth(metrics: &str) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.split_once(' ')?;
            name.ends_with("queue_depth")
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .map(|v| v as u64)
}

#[test]
fn twenty_thousand_otps_from_64_clients() {
    let total = env_usize("SIMGATE_LOAD_REQUESTS", 20_000);
    let queue_max = env_usize("SIMGATE_LOAD_QUEUE_MAX", 2_000);
    let sim = SimProcess::start(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    // Delivery reports off: the load is the API and the queue, not +CDS handling; info level so
    // the log is not the bottleneck.
    let config = config_for(&sim.link, &format!("queue_max = {queue_max}"), "")
        .replace("delivery_reports = true", "delivery_reports = false");
    let d = ServeProcess::start(&dir.path().join("data"), &config, "info");
    d.wait_state("ready", Duration::from_secs(30));

    // Samples the queue depth while the clients run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_depth = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_depth, base) = (stop.clone(), max_depth.clone(), d.base.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(depth) = metrics_text(&base).as_deref().and_then(queue_depth) {
                    max_depth.fetch_max(depth, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, base, bearer) = (next.clone(), d.base.clone(), d.bearer());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut out = ClientResult::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total as u64 {
                        return out;
                    }
                    // Distinct numbers: +447 then 9 digits.
                    let to = format!("+447{i:09}");
                    let requested = start.elapsed();
                    let resp = agent
                        .post(format!("{base}/v1/otp"))
                        .header("Authorization", &bearer)
                        .content_type("application/json")
                        .send(format!(r#"{{"to":"{to}"}}"#));
                    let answered = start.elapsed();
                    match resp {
                        Ok(mut r) => {
                            let status = r.status().as_u16();
                            let retry_after = r.headers().get("retry-after").is_some();
                            let body = r.body_mut().read_to_string().unwrap_or_default();
                            match status {
                                202 => out.accepted.push(Accepted {
                                    to,
                                    requested,
                                    answered,
                                }),
                                503 if retry_after && body.contains("queue") => {
                                    out.refused.push(to)
                                }
                                _ => out
                                    .unexpected
                                    .push(format!("{status} (Retry-After: {retry_after}) {body}")),
                            }
                        }
                        Err(e) => out.unexpected.push(format!("transport error: {e}")),
                    }
                }
            })
        })
        .collect();
    let results: Vec<ClientResult> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    let elapsed = start.elapsed();
    let accepted: Vec<&Accepted> = results.iter().flat_map(|r| &r.accepted).collect();
    let refused: Vec<&String> = results.iter().flat_map(|r| &r.refused).collect();
    let unexpected: Vec<&String> = results.iter().flat_map(|r| &r.unexpected).collect();
    eprintln!(
        "load: {total} requests from {CLIENTS} clients in {elapsed:?} ({:.0} req/s): {} accepted, \
         {} refused with 503 + Retry-After, {} other",
        total as f64 / elapsed.as_secs_f64(),
        accepted.len(),
        refused.len(),
        unexpected.len()
    );
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers, e.g. {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    assert_eq!(accepted.len() + refused.len(), total);
    assert!(
        accepted.len() >= queue_max.min(total),
        "fewer accepted than the queue holds"
    );

    // The backlog drains.
    let drain_start = Instant::now();
    let deadline = drain_start + Duration::from_secs(300);
    let log = loop {
        let log = sim.log_lines();
        if log.len() >= accepted.len() {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} accepted OTPs sent; log:\n{}",
            log.len(),
            accepted.len(),
            d.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let drain = drain_start.elapsed();
    let peak = peak_rss_kib(d.pid());
    let max_depth = max_depth.load(Ordering::Relaxed);
    eprintln!(
        "load: backlog drained {drain:?} after the last request ({:.1} SMS/s over the whole \
         run); max sampled queue depth {max_depth} (bound {queue_max}); daemon peak RSS {} KiB \
         ({:.1} MiB)",
        log.len() as f64 / (elapsed + drain).as_secs_f64(),
        peak,
        peak as f64 / 1024.0
    );
    // The bound holds (one message may be in the modem, outside the queued count).
    assert!(
        max_depth <= queue_max as u64 + 1,
        "queue grew to {max_depth} past queue_max {queue_max}"
    );
    assert!(peak < RSS_BOUND_KIB, "peak RSS {peak} KiB");

    // Exactly the accepted ones were sent, once each.
    let position: HashMap<&str, usize> = log
        .iter()
        .enumerate()
        .map(|(i, l)| (l["to"].as_str().expect("to"), i))
        .collect();
    assert_eq!(position.len(), log.len(), "a number was sent twice");
    assert_eq!(log.len(), accepted.len(), "more texts sent than accepted");
    for r in &refused {
        assert!(!position.contains_key(r.as_str()), "refused {r} was sent");
    }
    let mut by_position: Vec<(usize, &Accepted)> = accepted
        .iter()
        .map(|a| {
            let p = *position
                .get(a.to.as_str())
                .unwrap_or_else(|| panic!("accepted {} never sent", a.to));
            (p, *a)
        })
        .collect();
    by_position.sort_by_key(|(p, _)| *p);
    // In order: no message is sent before one whose 202 arrived before it was even requested.
    let mut earliest_answer_later = Duration::MAX;
    let mut inversions = 0usize;
    for (_, a) in by_position.iter().rev() {
        if earliest_answer_later < a.requested {
            inversions += 1;
        }
        earliest_answer_later = earliest_answer_later.min(a.answered);
    }
    assert_eq!(
        inversions, 0,
        "{inversions} messages were sent out of creation order"
    );
}

/// `GET /metrics` as text (the shared helper parses bodies as JSON).
fn metrics_text(base: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(format!("{base}/metrics"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}
