//! Crash durability: a real process writing through the store is SIGKILLed mid-load, several
//! times over the same database. Every write it acknowledged (the store call returned `Ok`) must
//! be there after reopening, and SQLite's integrity check must pass.
//!
//! The test re-executes its own binary as the writer: with `SIMGATE_CRASH_DB` set, the
//! `crash_writer_child` test becomes the child's workload; without it, that test returns at once.
//! The child reports each acknowledgement as one `ACK <kind> <id>` line on stdout, written after
//! the store call returns, so a line the parent reads names a write that must be durable.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use simgate::store::{
    Body, MessageKind, MessageStatus, NewMessage, NewOtp, Store, StoreOptions, UnknownOutcomePolicy,
};

const DB_ENV: &str = "SIMGATE_CRASH_DB";
const RUN_ENV: &str = "SIMGATE_CRASH_RUN";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn text(id: String, at: i64) -> NewMessage {
    NewMessage {
        id,
        to: simgate::model::Msisdn::parse("+15551230000").unwrap(),
        kind: MessageKind::Text,
        log_text: "crash test".into(),
        body: Body::Clear("crash test".into()),
        parts: 1,
        created_at: at,
        deadline: at + 86_400_000,
    }
}

/// Writes one acknowledgement line straight to the process's stdout (not through the test
/// harness's capture), unbuffered, so the parent sees it as soon as the store has answered.
fn ack(kind: &str, id: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ACK {kind} {id}").unwrap();
    out.flush().unwrap();
}

/// The child's workload: concurrent enqueues and OTP creations, plus a claimer marking messages
/// sent, until it is killed.
#[test]
fn crash_writer_child() {
    let Ok(db) = std::env::var(DB_ENV) else {
        return; // Only meaningful as the child of `acknowledged_writes_survive_sigkill`.
    };
    let run = std::env::var(RUN_ENV).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(Path::new(&db), StoreOptions::default()).unwrap();
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let (store, run) = (store.clone(), run.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let at = now_ms();
                    let id = format!("msg_{run}_{worker}_{i}");
                    store
                        .enqueue_text(text(id.clone(), at), None, 0)
                        .await
                        .unwrap();
                    ack("Q", &id);
                    if i % 5 == 0 {
                        let otp_id = format!("otp_{run}_{worker}_{i}");
                        let to = simgate::model::Msisdn::parse(&format!("+1555{worker:03}{i:04}"))
                            .unwrap();
                        let otp = NewOtp {
                            id: otp_id.clone(),
                            to: to.clone(),
                            code_hmac: vec![7; 32],
                            max_attempts: 5,
                            expires_at: at + 300_000,
                            created_at: at,
                        };
                        let mut msg = text(format!("msg_{otp_id}"), at);
                        msg.to = to;
                        msg.kind = MessageKind::Otp;
                        msg.body = Body::Sealed(vec![1; 40]);
                        store.create_otp(otp, msg, None, 0, 0).await.unwrap();
                        ack("O", &otp_id);
                    }
                }
            }));
        }
        let claimer = tokio::spawn(async move {
            loop {
                let now = now_ms();
                match store.claim_next(now).await.unwrap() {
                    Some(c) => {
                        store.mark_sent(&c.id, "m0", vec![1], now).await.unwrap();
                        ack("S", &c.id);
                    }
                    None => tokio::task::yield_now().await,
                }
            }
        });
        claimer.await.unwrap();
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(DB_ENV).is_ok() {
        return; // We are the child; the workload runs in `crash_writer_child`.
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let me = std::env::current_exe().unwrap();
    let mut queued = Vec::new();
    let mut otps = Vec::new();
    let mut sent = Vec::new();
    for run in 0..5 {
        let mut child = Command::new(&me)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &db)
            .env(RUN_ENV, run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a different point of the load each run.
        let kill_after = 300 + run * 170;
        let mut seen = 0;
        let mut record = |line: &str| {
            let mut it = line.splitn(3, ' ');
            if it.next() != Some("ACK") {
                return false;
            }
            let (kind, id) = (it.next().unwrap(), it.next().unwrap().to_owned());
            match kind {
                "Q" => queued.push(id),
                "O" => otps.push(id),
                "S" => sent.push(id),
                other => panic!("unknown ack kind {other}"),
            }
            true
        };
        for line in lines.by_ref() {
            let line = line.unwrap();
            if record(&line) {
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        assert!(seen >= kill_after, "child ended early after {seen} acks");
        child.kill().unwrap(); // SIGKILL on Unix
        // Lines already in the pipe were acknowledged before the kill: they count too.
        for line in lines {
            match line {
                Ok(line) => {
                    record(&line);
                }
                Err(_) => break,
            }
        }
        child.wait().unwrap();
    }
    assert!(!sent.is_empty(), "the claimer never acknowledged a send");

    let c = rusqlite::Connection::open(&db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let fk: i64 = c
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0);
    drop(c);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&db, StoreOptions::default()).unwrap();
        for id in &queued {
            assert!(
                store.get_message(id).await.unwrap().is_some(),
                "acknowledged enqueue {id} lost"
            );
        }
        for id in &otps {
            let otp = store.get_otp(id).await.unwrap();
            assert!(otp.is_some(), "acknowledged OTP {id} lost");
            assert_eq!(otp.unwrap().code_hmacs, vec![vec![7u8; 32]]);
        }
        for id in &sent {
            let m = store.get_message(id).await.unwrap().unwrap();
            assert_eq!(
                m.status,
                MessageStatus::Sent,
                "acknowledged send of {id} lost"
            );
        }
        // The queue counter kept by triggers agrees with the rows after every crash.
        let queued_rows = store
            .status_counts()
            .await
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == MessageStatus::Queued)
            .unwrap()
            .1;
        assert_eq!(store.queue_depth().await.unwrap(), queued_rows);
        // Whatever the claimer held at the kill is recovered and can be claimed again.
        let sending = store
            .status_counts()
            .await
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == MessageStatus::Sending)
            .unwrap()
            .1;
        let recovered = store
            .recover_interrupted(UnknownOutcomePolicy::Resend, now_ms())
            .await
            .unwrap();
        assert_eq!(recovered, sending);
        eprintln!(
            "crash test: {} enqueues, {} OTPs, {} sends acknowledged over 5 kills; {} recovered",
            queued.len(),
            otps.len(),
            sent.len(),
            recovered
        );
    });
}
