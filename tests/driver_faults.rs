//! The real driver against a misbehaving `simgate sim`: a 30 % error rate, a hang, an unplug
//! with replug, and a killed-and-restarted simulator. In every case no text is lost.

mod driver_support;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use driver_support::{config, parts, send_with_retries, start, wait_ready};
use simgate::modem::{ModemState, SendError};
use support::SimProcess;

const TO: &str = "+15551234567";

/// Records every state the modem passes through, in the background.
fn record_states(
    modem: &simgate::modem::ModemHandle,
) -> std::sync::Arc<std::sync::Mutex<Vec<ModemState>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rx = modem.status();
    let out = seen.clone();
    tokio::spawn(async move {
        loop {
            let state = rx.borrow_and_update().state.clone();
            out.lock().unwrap().push(state);
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    seen
}

/// The texts in the simulator's log once it holds at least `n` lines (the log line is written
/// as the simulator accepts the part, which may trail its `+CMGS:` answer slightly).
fn logged_texts(sim: &SimProcess, n: usize) -> Vec<String> {
    sim.wait_for_log_lines(n, Duration::from_secs(5))
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_text_goes_out_despite_a_30_percent_error_rate() {
    let sim = SimProcess::start(&["--error-rate", "0.3", "--seed", "11"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let mut temporary = 0;
    for i in 0..12u8 {
        let (_, errors) = send_with_retries(
            &modem,
            parts(TO, &format!("text {i}"), false, i),
            Duration::from_secs(20),
        )
        .await;
        for e in &errors {
            assert!(matches!(e, SendError::Temporary(_)), "{e:?}");
        }
        temporary += errors.len();
    }
    assert!(
        temporary > 0,
        "a 30 % error rate over 12 sends produced no error"
    );
    let texts = logged_texts(&sim, 12);
    let expected: Vec<String> = (0..12).map(|i| format!("text {i}")).collect();
    assert_eq!(texts, expected, "each text exactly once, in order");
    assert_eq!(modem.status().borrow().state, ModemState::Ready);
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_modem_times_out_and_recovers() {
    // Init takes about 17 command lines; the hang starts a few sends later and lasts 3 s.
    let sim = SimProcess::start(&["--hang-after", "20", "--hang-for", "3"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let states = record_states(&modem);
    let mut errors = Vec::new();
    for i in 0..6u8 {
        let (_, e) = send_with_retries(
            &modem,
            parts(TO, &format!("hang {i}"), false, i),
            Duration::from_secs(40),
        )
        .await;
        errors.extend(e);
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, SendError::Temporary(_) | SendError::OutcomeUnknown(_))),
        "the hang was never noticed: {errors:?}"
    );
    let seen = states.lock().unwrap().clone();
    let resynced = seen
        .windows(2)
        .any(|w| w[0] == ModemState::Sending && w[1] == ModemState::Initializing);
    assert!(resynced, "no re-initialisation after the timeout: {seen:?}");
    assert!(
        !seen.contains(&ModemState::Disconnected),
        "a hang is recovered on the same port, without reopening it: {seen:?}"
    );
    // Every text is there; one whose outcome was unknown may be there twice (that is what
    // "outcome unknown" means), but none is missing.
    let texts: BTreeSet<String> = logged_texts(&sim, 6).into_iter().collect();
    let expected: BTreeSet<String> = (0..6).map(|i| format!("hang {i}")).collect();
    assert_eq!(texts, expected);
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_modem_is_reopened_when_it_returns() {
    let sim = SimProcess::start(&["--unplug-after", "2", "--replug-after", "1"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let states = record_states(&modem);
    let mut errors = Vec::new();
    for i in 0..5u8 {
        let (_, e) = send_with_retries(
            &modem,
            parts(TO, &format!("plug {i}"), false, i),
            Duration::from_secs(30),
        )
        .await;
        errors.extend(e);
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, SendError::OutcomeUnknown(_))),
        "the PDU written before the unplug must be 'outcome unknown': {errors:?}"
    );
    assert!(states.lock().unwrap().contains(&ModemState::Disconnected));
    let texts: BTreeSet<String> = logged_texts(&sim, 5).into_iter().collect();
    let expected: BTreeSet<String> = (0..5).map(|i| format!("plug {i}")).collect();
    assert_eq!(texts, expected, "no text lost");
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_simulator_on_the_same_link_is_picked_up() {
    let mut sim = SimProcess::start(&["--profile", "simcom"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    modem.send(parts(TO, "before", false, 1)).await.unwrap();
    sim.wait_for_log_lines(1, Duration::from_secs(5));
    let (link, log) = (sim.link.clone(), sim.log.clone());
    assert!(
        sim.terminate(Duration::from_secs(5)),
        "simulator did not stop"
    );
    wait_for_state(&modem, ModemState::Disconnected).await;
    let status = modem.status().borrow().clone();
    assert_eq!(
        status.signal_dbm, None,
        "no stale network facts: {status:?}"
    );
    assert_eq!(status.registration, None, "{status:?}");
    assert_eq!(status.manufacturer.as_deref(), Some("SIMCOM_Ltd"));
    assert_eq!(
        modem.send(parts(TO, "x", false, 2)).await,
        Err(SendError::NotReady)
    );
    let sim2 = SimProcess::start_at(&link, &log, &["--profile", "simcom"]);
    let (_, _) = send_with_retries(
        &modem,
        parts(TO, "after", false, 3),
        Duration::from_secs(20),
    )
    .await;
    let texts: Vec<String> = sim2
        .wait_for_log_lines(2, Duration::from_secs(5))
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["before", "after"]);
    modem.shutdown().await;
}

async fn wait_for_state(modem: &simgate::modem::ModemHandle, state: ModemState) {
    driver_support::wait_for(modem, Duration::from_secs(10), |s| s.state == state).await;
}
