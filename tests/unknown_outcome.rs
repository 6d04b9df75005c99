//! Issue 17.3: a send whose outcome cannot be known must not be resent at once, without end, in
//! front of every other message. A real `simgate serve` drives a real simulator through a hostile
//! pty ([`faults::CmgsMangler`]) that answers `+CMGS: 999` (no valid TP-MR, TS 23.040 §9.2.3.6)
//! for one recipient, after the simulator really accepted the text. The daemon runs with its
//! default `[dispatch]` caps: the other text is sent at once, the stuck one is resent after a
//! backoff, and it stops at `max_unknown_outcomes` (3) with status `failed` and the reason.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::time::{Duration, Instant};

use faults::{CmgsMangler, ServeProcess, config_for};
use serde_json::json;
use support::SimProcess;

const STUCK: &str = "+15557770001";
const OTHER: &str = "+15557770002";

#[test]
fn unknown_outcomes_back_off_let_the_queue_pass_and_stop_at_the_cap() {
    let sim = SimProcess::start(&[]);
    let mangler = CmgsMangler::start(&sim.link, &sim.dir.path().join("hostile"), STUCK);
    let dir = faults::fast_tempdir();
    let config = config_for(&mangler.link, "", "");
    let d = ServeProcess::start(&dir.path().join("data"), &config, "simgate=debug,info");
    d.wait_state("ready", Duration::from_secs(30));

    let post = |to: &str| {
        let a = d.post(
            "/v1/messages",
            &json!({"to": to, "text": format!("hello {to}")}),
        );
        assert_eq!(a.status, 202, "{a:?}");
        a.body["id"].as_str().expect("id").to_owned()
    };
    let started = Instant::now();
    let stuck = post(STUCK);
    let other = post(OTHER);

    // The other text is not held up by the stuck one's resends: it is sent while the stuck one
    // waits for its first resend (2 s backoff), not after it gave up.
    let other_took = loop {
        let m = d.get(&format!("/v1/messages/{other}")).body;
        if matches!(m["status"].as_str(), Some("sent" | "delivered")) {
            assert_eq!(m["attempts"], 1, "{m}");
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the other text was never sent: {m}; stuck: {}",
            d.get(&format!("/v1/messages/{stuck}")).body
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        other_took < Duration::from_secs(2),
        "the other text waited {other_took:?} behind the stuck one"
    );

    let messages = d.wait_final(std::slice::from_ref(&stuck), Duration::from_secs(60));
    let m = &messages[0];
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["attempts"], 3, "{m}");
    let error = m["error"].as_str().unwrap_or_default();
    assert!(error.contains("outcome unknown 3 times"), "{m}");
    assert!(error.contains("without +CMGS"), "{m}");
    // Backoff: 2 s, then 4 s, between the three sends.
    let stuck_took = started.elapsed();
    assert!(
        stuck_took >= Duration::from_secs(6),
        "resent without backoff: {stuck_took:?}"
    );

    // No fourth send after the cap.
    std::thread::sleep(Duration::from_secs(3));
    let log = sim.log_lines();
    let sent_to = |to: &str| log.iter().filter(|l| l["to"] == to).count();
    assert_eq!(sent_to(STUCK), 3, "the simulator's log: {log:?}");
    assert_eq!(sent_to(OTHER), 1);
    assert_eq!(mangler.mangled.load(std::sync::atomic::Ordering::SeqCst), 3);
    eprintln!(
        "other text sent after {other_took:?}; stuck one failed after {stuck_took:?}: {error}"
    );
}
