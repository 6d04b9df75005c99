//! The real driver over tokio-serial against `simgate sim` on a pty: init on every profile,
//! texts arriving intact, PIN handling, waiting for the network, status reports.

mod driver_support;
mod support;

use std::time::Duration;

use driver_support::{config, parts, send_with_retries, start, wait_for, wait_ready};
use simgate::modem::{ModemEvent, ModemState, SendError};
use simgate::pdu::DeliveryOutcome;
use support::SimProcess;

const TO: &str = "+15551234567";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initialises_and_sends_on_every_profile() {
    let expected = [
        ("generic", "simgate", "simgate-sim", "356938035643809"),
        ("huawei", "huawei", "E3372", "867223021234563"),
        ("simcom", "SIMCOM_Ltd", "SIMCOM_SIM800L", "865067021234564"),
        ("quectel", "Quectel", "EC25", "866758041234561"),
    ];
    for (profile, manufacturer, model, imei) in expected {
        let sim = SimProcess::start(&["--profile", profile]);
        let (modem, _events) = start(config(&sim.link));
        let status = wait_ready(&modem).await;
        assert_eq!(
            status.manufacturer.as_deref(),
            Some(manufacturer),
            "{profile}"
        );
        assert_eq!(status.model.as_deref(), Some(model), "{profile}");
        assert_eq!(status.imei.as_deref(), Some(imei), "{profile}");
        assert!(status.revision.is_some(), "{profile}");
        assert_eq!(status.registration.as_deref(), Some("home"), "{profile}");
        assert_eq!(
            status.operator.as_deref(),
            Some("Simgate Mobile"),
            "{profile}"
        );
        assert_eq!(
            status.signal_dbm,
            Some(-71),
            "{profile}: +CSQ 21 is -71 dBm"
        );
        let text = format!("hello from {profile}");
        let mrs = modem.send(parts(TO, &text, false, 1)).await.unwrap();
        assert_eq!(mrs.len(), 1);
        let log = sim.wait_for_log_lines(1, Duration::from_secs(5));
        assert_eq!(log[0]["to"], TO);
        assert_eq!(log[0]["text"], text.as_str());
        assert_eq!(modem.status().borrow().sent, 1);
        modem.shutdown().await;
        assert_eq!(modem.status().borrow().state, ModemState::Disconnected);
        // Shutdown closed the port: its exclusive lock is free at once.
        let reopened = simgate::transport::open(&sim.link, 115_200);
        assert!(reopened.is_ok(), "{profile}: {:?}", reopened.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_long_and_emoji_texts_arrive_intact() {
    let sim = SimProcess::start(&["--profile", "huawei"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let long: String = (0..15)
        .map(|i| format!("line {i:02} of a long text; "))
        .collect();
    let texts = [
        "Your code is 123456. It expires in 5 minutes.".to_string(),
        long.clone(),
        "Code 424242 \u{1F510}\u{1F600} — café".to_string(),
        "Braces {} and [brackets] ~ ^ | € \\ escape the GSM-7 table".to_string(),
    ];
    let mut expected_parts = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let p = parts(TO, text, false, i as u8 + 7);
        expected_parts.push(p.len());
        let mrs = modem.send(p.clone()).await.unwrap();
        assert_eq!(mrs.len(), p.len(), "one TP-MR per part");
    }
    assert_eq!(expected_parts[1], 3, "the long text needs 3 parts");
    let log = sim.wait_for_log_lines(texts.len(), Duration::from_secs(5));
    for (line, (text, n)) in log.iter().zip(texts.iter().zip(expected_parts)) {
        assert_eq!(line["text"], text.as_str());
        assert_eq!(line["parts"], n);
        assert_eq!(line["to"], TO);
    }
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlocks_the_sim_with_the_configured_pin() {
    let sim = SimProcess::start(&["--pin", "4321"]);
    let mut cfg = config(&sim.link);
    cfg.pin = Some("4321".into());
    let (modem, _events) = start(cfg);
    wait_ready(&modem).await;
    modem
        .send(parts(TO, "after unlock", false, 1))
        .await
        .unwrap();
    let log = sim.wait_for_log_lines(1, Duration::from_secs(5));
    assert_eq!(log[0]["text"], "after unlock");
    assert!(!sim.stderr_text().contains("rejected"));
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_fails_and_is_never_retried() {
    let sim = SimProcess::start(&["--pin", "4321"]);
    let mut cfg = config(&sim.link);
    cfg.pin = Some("0000".into());
    let (modem, _events) = start(cfg);
    let status = wait_for(&modem, Duration::from_secs(20), |s| {
        matches!(s.state, ModemState::Failed(_))
    })
    .await;
    let ModemState::Failed(reason) = status.state else {
        unreachable!()
    };
    assert!(reason.contains("rejected"), "{reason}");
    assert_eq!(
        modem.send(parts(TO, "x", false, 1)).await,
        Err(SendError::NotReady)
    );
    // Give a retrying driver every chance to misbehave.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stderr = sim.stderr_text();
    assert!(
        !stderr.contains("pin attempt 2"),
        "the PIN was tried again; stderr:\n{stderr}"
    );
    assert!(stderr.contains("sim: pin attempt 1 rejected"), "{stderr}");
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pin_is_a_clear_failure() {
    let sim = SimProcess::start(&["--pin", "4321"]);
    let (modem, _events) = start(config(&sim.link));
    let status = wait_for(&modem, Duration::from_secs(20), |s| {
        matches!(s.state, ModemState::Failed(_))
    })
    .await;
    assert!(
        matches!(&status.state, ModemState::Failed(r) if r.contains("no PIN is configured")),
        "{status:?}"
    );
    assert!(!sim.stderr_text().contains("pin attempt"));
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_network_then_becomes_ready() {
    let sim = SimProcess::start(&["--network-after", "3"]);
    let (modem, _events) = start(config(&sim.link));
    let waiting = wait_for(&modem, Duration::from_secs(20), |s| {
        s.state == ModemState::WaitingForNetwork
    })
    .await;
    assert_eq!(waiting.registration.as_deref(), Some("searching"));
    assert_eq!(
        modem.send(parts(TO, "too early", false, 1)).await,
        Err(SendError::NotReady)
    );
    let ready = wait_ready(&modem).await;
    assert_eq!(ready.registration.as_deref(), Some("home"));
    assert_eq!(ready.operator.as_deref(), Some("Simgate Mobile"));
    modem.send(parts(TO, "on time", false, 1)).await.unwrap();
    let log = sim.wait_for_log_lines(1, Duration::from_secs(5));
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["text"], "on time");
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_arrive_with_the_right_message_reference() {
    let sim = SimProcess::start(&["--report-delay", "0.3", "--seed", "7"]);
    let (modem, mut events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let mut sent = Vec::new();
    for i in 0..3u8 {
        let mrs = modem
            .send(parts(TO, &format!("report me {i}"), true, i))
            .await
            .unwrap();
        sent.extend(mrs);
    }
    let mut reported = Vec::new();
    while reported.len() < sent.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("status report in time")
            .expect("event channel open");
        match event {
            ModemEvent::StatusReport {
                modem_id,
                message_reference,
                recipient,
                status,
                outcome,
                discharge_time,
            } => {
                assert_eq!(modem_id, "test-modem");
                assert_eq!(recipient, TO);
                assert_eq!(status, 0);
                assert_eq!(outcome, DeliveryOutcome::Delivered);
                assert!(discharge_time.is_some());
                reported.push(message_reference);
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    reported.sort_unstable();
    sent.sort_unstable();
    assert_eq!(reported, sent);
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_reported_as_such() {
    let sim = SimProcess::start(&["--reject", "+1999"]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let err = modem
        .send(parts("+19995550000", "nobody", false, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Permanent(_)), "{err:?}");
    // The modem stays usable.
    modem.send(parts(TO, "somebody", false, 2)).await.unwrap();
    let status = modem.status().borrow().clone();
    assert_eq!((status.sent, status.failed), (1, 1));
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_ends_the_task_and_frees_the_port() {
    let sim = SimProcess::start(&[]);
    let (modem, _events) = start(config(&sim.link));
    wait_ready(&modem).await;
    let status = modem.status();
    drop(modem);
    // The task ends and publishes "disconnected"; the port is free for the next owner.
    let mut status = status;
    tokio::time::timeout(Duration::from_secs(5), async {
        while status.borrow_and_update().state != ModemState::Disconnected {
            if status.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .expect("task ended");
    let (again, _events) = start(config(&sim.link));
    wait_ready(&again).await;
    let _ = send_with_retries(
        &again,
        parts(TO, "second owner", false, 1),
        Duration::from_secs(5),
    )
    .await;
    again.shutdown().await;
}
