//! The store and the dispatcher against real parts: two simulated modems on real ptys driven by
//! the real modem driver, a real SQLite file. Proves that queued texts (and a sealed OTP text)
//! leave exactly once, spread over both modems, come back `delivered` through `+CDS` status
//! reports correlated by TP-MR, and that a destination the network rejects ends `failed` with
//! the modem's reason.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use simgate::dispatch::{self, DispatchConfig, Dispatcher, ModemPort, Opener, PoolModem};
use simgate::modem::{ModemConfig, ModemHandle};
use simgate::otp::Keys;
use simgate::sim::{Faults, SimOptions, Simulator};
use simgate::store::{
    Body, CreateOutcome, MessageKind, MessageStatus, NewMessage, NewOtp, Store, StoreOptions,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

fn sim_options(dir: &Path, name: &str) -> SimOptions {
    SimOptions {
        link: dir.join(name),
        log: Some(dir.join(format!("{name}.jsonl"))),
        faults: Faults {
            report_delay: Duration::from_millis(50),
            reject_prefixes: vec!["+1999".into()],
            ..Faults::default()
        },
        ..SimOptions::default()
    }
}

/// The texts a simulator logged, as (to, text) pairs.
fn logged(path: &Path) -> Vec<(String, String)> {
    let Ok(content) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    content
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["to"].as_str().unwrap().to_owned(),
                v["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn wait_for(store: &Store, id: &str, want: MessageStatus) {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let m = store.get_message(id).await.unwrap();
        if m.as_ref().map(|m| m.status) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "{id} never became {want:?}: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_leave_once_over_two_modems_and_come_back_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sim0 = Simulator::start(sim_options(dir.path(), "sim0"))
        .await
        .unwrap();
    let sim1 = Simulator::start(sim_options(dir.path(), "sim1"))
        .await
        .unwrap();
    let (events_tx, events_rx) = mpsc::channel(64);
    let m0 = ModemHandle::spawn(
        ModemConfig::new("modem0", dir.path().join("sim0")),
        events_tx.clone(),
    );
    let m1 = ModemHandle::spawn(
        ModemConfig::new("modem1", dir.path().join("sim1")),
        events_tx,
    );
    let give_up = Instant::now() + Duration::from_secs(30);
    while !(m0.is_ready() && m1.is_ready()) {
        assert!(
            Instant::now() < give_up,
            "simulated modems never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let store = Store::open(&dir.path().join("simgate.db"), StoreOptions::default()).unwrap();
    let keys = Arc::new(Keys::from_bytes([1; 32], [2; 32]));
    let opener: Opener = {
        let keys = keys.clone();
        Arc::new(move |sealed: &[u8]| keys.open(sealed).map_err(|e| e.to_string()))
    };
    let wake = Arc::new(Notify::new());
    let pool = [m0.clone(), m1.clone()]
        .into_iter()
        .map(|port| PoolModem {
            port,
            sends_per_minute: 0,
            delivery_reports: true,
        })
        .collect();
    let dispatcher = Dispatcher::new(
        store.clone(),
        pool,
        DispatchConfig::default(),
        wake.clone(),
        opener,
    );
    let clock = dispatcher.clock();
    let events = tokio::spawn(dispatch::run_events(
        store.clone(),
        events_rx,
        clock.clone(),
        None,
        None,
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async move {
        let _ = stop_rx.await;
    }));

    let mut ids = Vec::new();
    for i in 0..30 {
        let now = clock.now_ms();
        let id = format!("msg_{i}");
        let text = format!("hello number {i}");
        let msg = NewMessage {
            id: id.clone(),
            to: simgate::model::Msisdn::parse(&format!("+1555000{i:04}")).unwrap(),
            kind: MessageKind::Text,
            log_text: text.clone(),
            body: Body::Clear(text),
            parts: 1,
            created_at: now,
            deadline: now + 3_600_000,
        };
        assert_eq!(
            store.enqueue_text(msg, None, 0).await.unwrap(),
            CreateOutcome::Created
        );
        wake.notify_one();
        ids.push(id);
    }
    let now = clock.now_ms();
    let otp_text = "Your code is 424242. It expires in 5 minutes.";
    let otp = NewOtp {
        id: "otp_1".into(),
        to: simgate::model::Msisdn::parse("+15557770000").unwrap(),
        code_hmac: keys.code_hmac("otp_1", "424242").to_vec(),
        max_attempts: 5,
        expires_at: now + 300_000,
        created_at: now,
    };
    let otp_msg = NewMessage {
        id: "msg_otp".into(),
        to: simgate::model::Msisdn::parse("+15557770000").unwrap(),
        kind: MessageKind::Otp,
        log_text: "Your code is ******. It expires in 5 minutes.".into(),
        body: Body::Sealed(keys.seal(otp_text)),
        parts: 1,
        created_at: now,
        deadline: now + 300_000,
    };
    store.create_otp(otp, otp_msg, None, 0, 0).await.unwrap();
    let rejected = NewMessage {
        id: "msg_rejected".into(),
        to: simgate::model::Msisdn::parse("+19990000000").unwrap(),
        kind: MessageKind::Text,
        log_text: "nobody".into(),
        body: Body::Clear("nobody".into()),
        parts: 1,
        created_at: now,
        deadline: now + 3_600_000,
    };
    store.enqueue_text(rejected, None, 0).await.unwrap();
    wake.notify_one();

    ids.push("msg_otp".into());
    for id in &ids {
        wait_for(&store, id, MessageStatus::Delivered).await;
    }
    wait_for(&store, "msg_rejected", MessageStatus::Failed).await;
    let rejected = store.get_message("msg_rejected").await.unwrap().unwrap();
    assert!(
        rejected.error.as_deref().unwrap_or("").contains("modem"),
        "failure names the modem: {:?}",
        rejected.error
    );

    let mut per_modem: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        let m = store.get_message(id).await.unwrap().unwrap();
        assert!(m.delivered_at.is_some());
        *per_modem.entry(m.modem_id.unwrap()).or_default() += 1;
    }
    assert_eq!(
        per_modem.len(),
        2,
        "both modems carried traffic: {per_modem:?}"
    );

    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    m0.shutdown().await;
    m1.shutdown().await;
    sim0.stop().await;
    sim1.stop().await;
    events.await.unwrap();

    // Each text left exactly once; the OTP left with its real code (the log of the store
    // only ever shows it masked).
    let mut all = logged(&dir.path().join("sim0.jsonl"));
    all.extend(logged(&dir.path().join("sim1.jsonl")));
    for i in 0..30 {
        let want = (format!("+1555000{i:04}"), format!("hello number {i}"));
        assert_eq!(all.iter().filter(|x| **x == want).count(), 1, "{want:?}");
    }
    assert!(
        all.iter()
            .any(|(to, text)| to == "+15557770000" && text == otp_text)
    );
    assert_eq!(all.len(), 31, "nothing else was sent");
    let otp_row = store.get_message("msg_otp").await.unwrap().unwrap();
    assert!(!otp_row.log_text.contains("424242"));
}

/// A backlog drained by one modem: every text leaves exactly once, in queue order. Prints the
/// drain rate (the benchmark measures it; this test only checks correctness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_in_order_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = sim_options(dir.path(), "sim0");
    opts.faults.report_delay = Duration::from_secs(3600);
    let sim = Simulator::start(opts).await.unwrap();
    let (events_tx, _events_rx) = mpsc::channel(1024);
    let mut config = ModemConfig::new("modem0", dir.path().join("sim0"));
    config.delivery_reports = false;
    let modem = ModemHandle::spawn(config, events_tx);
    let give_up = Instant::now() + Duration::from_secs(30);
    while !modem.is_ready() {
        assert!(
            Instant::now() < give_up,
            "simulated modem never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = Store::open(&dir.path().join("simgate.db"), StoreOptions::default()).unwrap();
    let wake = Arc::new(Notify::new());
    let opener: Opener = Arc::new(|_: &[u8]| Err("no sealed texts here".to_string()));
    let dispatcher = Dispatcher::new(
        store.clone(),
        vec![PoolModem {
            port: modem.clone(),
            sends_per_minute: 0,
            delivery_reports: false,
        }],
        DispatchConfig::default(),
        wake.clone(),
        opener,
    );
    let clock = dispatcher.clock();
    let n = 300;
    for i in 0..n {
        let now = clock.now_ms();
        let text = format!("backlog {i}");
        let msg = NewMessage {
            id: format!("msg_{i}"),
            to: simgate::model::Msisdn::parse("+15550001111").unwrap(),
            kind: MessageKind::Text,
            log_text: text.clone(),
            body: Body::Clear(text),
            parts: 1,
            created_at: now,
            deadline: now + 3_600_000,
        };
        store.enqueue_text(msg, None, 0).await.unwrap();
    }
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(dispatcher.run(async move {
        let _ = stop_rx.await;
    }));
    wait_for(&store, &format!("msg_{}", n - 1), MessageStatus::Sent).await;
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
    modem.shutdown().await;
    sim.stop().await;
    eprintln!(
        "drained {n} one-part texts through one simulated modem in {elapsed:?} ({:.0}/s)",
        n as f64 / elapsed.as_secs_f64()
    );
    let texts: Vec<String> = logged(&dir.path().join("sim0.jsonl"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("backlog {i}")).collect();
    assert_eq!(texts, want);
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}
