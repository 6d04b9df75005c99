//! Webhooks end to end: the real `simgate serve --simulate` binary, its SQLite file and
//! simulated modem on a pty, delivering its event outbox over loopback HTTP to real receivers:
//! the official Standard Webhooks library (PyPI `standardwebhooks`) checking every signature,
//! and a recording receiver that fails, hangs, answers 410 or is down while the daemon is
//! SIGKILLed. The slow scenarios run as separate tests, so the harness runs them in parallel.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Daemon, code_in, read_jsonl};
use serde_json::{Value, json};
use webhook_receiver::{Behaviour, Received, Receiver};

/// Test secrets (Standard Webhooks: `whsec_` + base64 of 24–64 bytes).
const SECRET_NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_OLD: &str = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3";

const WAIT: Duration = Duration::from_secs(60);

fn config(endpoints: &[(&str, &str)]) -> String {
    let mut c = String::new();
    for (url, extra) in endpoints {
        c.push_str(&format!(
            "[[webhook]]\nurl = \"{url}\"\nsecret = \"{SECRET_NEW}\"\n{extra}\n"
        ));
    }
    c
}

/// Every event in the outbox, oldest first, through `GET /v1/events`.
fn all_events(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let a = d.get(&format!("/v1/events?after={after}&limit=1000"));
        assert_eq!(a.status, 200, "{:?}", a.body);
        let page = a.body["events"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        after = a.body["next_after"].as_i64().unwrap();
        out.extend(page);
    }
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

fn send_text(d: &Daemon, to: &str) -> String {
    let a = d.post(
        "/v1/messages",
        &json!({"to": to, "text": "Your parcel is here"}),
    );
    assert_eq!(a.status, 202, "{:?}", a.body);
    a.body["id"].as_str().unwrap().to_owned()
}

/// Waits until every message in `ids` is `delivered` (the simulator reports after ~1 s).
fn wait_delivered(d: &Daemon, msg_ids: &[String]) {
    for id in msg_ids {
        let m = d.wait_for(&format!("/v1/messages/{id}"), WAIT, |m| {
            m["status"] == "delivered"
        });
        assert_eq!(m["status"], "delivered", "{m}\n{}", d.log());
    }
}

/// Checks what a receiver got against the outbox: every event was accepted, first accepted in
/// `seq` order, and a repeated delivery repeats the same `webhook-id` with the same bytes.
fn assert_complete_in_order(got: &[Received], events: &[Value]) {
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    for r in got {
        let id = r.header("webhook-id").to_owned();
        assert_eq!(r.body["id"], id.as_str(), "webhook-id is the event's id");
        if let Some(first) = bodies.get(&id) {
            assert_eq!(first, &r.raw, "a retry of {id} sent other bytes");
        } else {
            bodies.insert(id, r.raw.clone());
        }
    }
    let mut seen = HashSet::new();
    let firsts: Vec<i64> = got
        .iter()
        .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
        .filter(|r| seen.insert(r.header("webhook-id").to_owned()))
        .map(|r| r.body["seq"].as_i64().unwrap())
        .collect();
    assert!(
        firsts.windows(2).all(|w| w[0] < w[1]),
        "events accepted out of order: {firsts:?}"
    );
    let accepted: HashSet<String> = seen;
    for id in ids(events) {
        assert!(accepted.contains(&id), "event {id} never accepted");
    }
}

fn accepted_ids(got: &[Received]) -> HashSet<String> {
    got.iter()
        .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

fn python_with_standardwebhooks() -> Option<String> {
    daemon::python_with("standardwebhooks")
}

/// Kills the receiver script when the test ends, however it ends.
struct Script(std::process::Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_official_standard_webhooks_library_verifies_every_event_across_a_rotation() {
    let Some(py) = python_with_standardwebhooks() else {
        eprintln!(
            "skipping: no python with the standardwebhooks package \
             (pip install standardwebhooks into /opt/simgate-venv; .ci/run does)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let log_file = dir.path().join("received.jsonl");
    // The receiver holds only the old secret: during a rotation the daemon signs with both.
    let _script = Script(
        Command::new(&py)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/webhook_receiver.py"
            ))
            .arg(&port_file)
            .arg(&log_file)
            .arg(SECRET_OLD)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the receiver script"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = loop {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            break p.trim().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the receiver script never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let cfg = format!(
        "[[webhook]]\nurl = \"http://127.0.0.1:{port}/hooks/simgate\"\n\
         secret = [\"{SECRET_NEW}\", \"{SECRET_OLD}\"]\n"
    );
    let d = Daemon::start(&dir.path().join("data"), Some(&cfg));
    d.wait_ready();

    let otp = d.post("/v1/otp", &json!({"to": "+15551240001"}));
    assert_eq!(otp.status, 202, "{:?}", otp.body);
    let otp_id = otp.body["id"].as_str().unwrap().to_owned();
    let text = d.wait_sim_log(1, WAIT)[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let code = code_in(&text);
    let ok = d.post(&format!("/v1/otp/{otp_id}/verify"), &json!({"code": code}));
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    wait_delivered(&d, &[otp.body["message_id"].as_str().unwrap().to_owned()]);

    let want = [
        "modem.state_changed",
        "message.queued",
        "message.sent",
        "message.delivered",
        "otp.approved",
    ];
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let got = read_jsonl(&log_file);
        let kinds: HashSet<&str> = got
            .iter()
            .filter_map(|r| r["event"]["type"].as_str())
            .collect();
        if want.iter().all(|k| kinds.contains(k)) {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "missing events; got {got:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for r in &got {
        assert_eq!(r["verified"], true, "standardwebhooks refused: {r}");
        assert!(
            !r.to_string().contains(&code),
            "an event carried the code: {r}"
        );
    }
    let seqs: Vec<i64> = got
        .iter()
        .map(|r| r["event"]["seq"].as_i64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // What the receiver got is what GET /v1/events replays, event for event.
    let replay = all_events(&d);
    let delivered: Vec<Value> = got.iter().map(|r| r["event"].clone()).collect();
    assert_eq!(
        delivered,
        replay[..delivered.len()].to_vec(),
        "a webhook body differs from its GET /v1/events form"
    );
    let sent = got
        .iter()
        .find(|r| r["event"]["type"] == "message.sent")
        .unwrap();
    assert_eq!(sent["event"]["data"]["otp_id"], otp_id.as_str());
    assert!(
        sent["event"]["data"]["text"]
            .as_str()
            .unwrap()
            .contains("******")
    );
}

#[test]
fn a_receiver_failing_for_a_minute_then_recovering_gets_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Behaviour::Status(500));
    let d = Daemon::start(&dir.path().join("data"), Some(&config(&[(&rx.url(), "")])));
    d.wait_ready();
    let msgs: Vec<String> = (0..3)
        .map(|i| send_text(&d, &format!("+1555125000{i}")))
        .collect();
    wait_delivered(&d, &msgs);
    let failing_since = Instant::now();
    // The first event is retried while the others wait behind it.
    let early = rx.wait(WAIT, |r| r.len() >= 3);
    assert!(early.len() >= 3, "no retries: {early:?}\n{}", d.log());
    let first_id = early[0].header("webhook-id").to_owned();
    assert!(
        early.iter().all(|r| r.header("webhook-id") == first_id),
        "events went past the undelivered first one"
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(failing_since.elapsed()));
    rx.set(Behaviour::Status(200));
    let events = all_events(&d);
    let want: HashSet<String> = ids(&events).into_iter().collect();
    let got = rx.wait(Duration::from_secs(120), |r| {
        want.is_subset(&accepted_ids(r))
    });
    assert_complete_in_order(&got, &events);
    assert!(d.log().contains("webhook delivery failed; will retry"));
    let metrics = metrics_text(&d);
    assert!(
        metrics.contains(&format!(
            "simgate_webhook_deliveries_total{{endpoint=\"{}\",result=\"failed\"}}",
            rx.url()
        )),
        "{metrics}"
    );
}

#[test]
fn gone_disables_an_endpoint_and_a_hanging_one_holds_back_neither_the_others_nor_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let gone = Receiver::start(Behaviour::Status(410));
    let hang = Receiver::start(Behaviour::Hang);
    let good = Receiver::start(Behaviour::Status(204));
    let cfg = config(&[
        (&gone.url(), ""),
        (&hang.url(), "timeout_seconds = 2"),
        (&good.url(), ""),
    ]);
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, Some(&cfg));
    d.wait_ready();
    // The send path does not wait for any endpoint.
    let msgs: Vec<String> = (0..5)
        .map(|i| send_text(&d, &format!("+1555126000{i}")))
        .collect();
    wait_delivered(&d, &msgs);
    let events = all_events(&d);
    let want: HashSet<String> = ids(&events).into_iter().collect();
    let got = good.wait(WAIT, |r| want.is_subset(&accepted_ids(r)));
    assert_complete_in_order(&got, &events);
    // 410: one request, then the endpoint is disabled, in the log and in /metrics.
    assert_eq!(gone.requests().len(), 1, "{:?}", gone.requests());
    let deadline = Instant::now() + WAIT;
    while !d.log().contains("webhook endpoint disabled") {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = metrics_text(&d);
    let line = format!(
        "simgate_webhook_endpoint_disabled{{endpoint=\"{}\"}} 1",
        gone.url()
    );
    assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    assert!(
        metrics.contains(&format!(
            "simgate_webhook_deliveries_total{{endpoint=\"{}\",result=\"gone\"}} 1",
            gone.url()
        )),
        "{metrics}"
    );
    // The hanging endpoint is being retried (its attempts time out) and got nothing further.
    let hung = hang.wait(WAIT, |r| r.len() >= 2);
    assert!(hung.len() >= 2, "{hung:?}");
    assert!(
        hung.iter()
            .all(|r| r.header("webhook-id") == hung[0].header("webhook-id"))
    );

    // A clean stop is not held up by the attempt hanging in flight; after the restart the
    // 410 endpoint stays disabled (same config) while the others go on.
    let stop = Instant::now();
    assert!(d.terminate(), "SIGTERM did not stop the daemon cleanly");
    assert!(
        stop.elapsed() < Duration::from_secs(15),
        "stopping took {:?}",
        stop.elapsed()
    );
    let d = Daemon::start(&data, Some(&cfg));
    d.wait_ready();
    let more = send_text(&d, "+15551269999");
    wait_delivered(&d, std::slice::from_ref(&more));
    let events = all_events(&d);
    let want: HashSet<String> = ids(&events).into_iter().collect();
    let got = good.wait(WAIT, |r| want.is_subset(&accepted_ids(r)));
    assert_complete_in_order(&got, &events);
    assert_eq!(
        gone.requests().len(),
        1,
        "a disabled endpoint was called again"
    );
}

/// `GET /metrics` as text (the test client parses only JSON).
fn metrics_text(d: &Daemon) -> String {
    use std::io::{Read, Write};
    let addr = d.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn sigkill_with_events_pending_and_the_receiver_down_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Reserve a port, then free it: the receiver is down until the end of the test.
    let port = Receiver::start(Behaviour::Status(200)).port;
    let url = format!("http://127.0.0.1:{port}/hook");
    let cfg = config(&[(&url, "")]);
    let data = dir.path().join("data");
    let mut d = Daemon::start(&data, Some(&cfg));
    d.wait_ready();
    let msgs: Vec<String> = (0..4)
        .map(|i| send_text(&d, &format!("+1555127000{i}")))
        .collect();
    wait_delivered(&d, &msgs);
    let before = all_events(&d);
    assert!(before.len() >= 4 * 3, "{before:?}");
    d.kill();

    let d = Daemon::start(&data, Some(&cfg));
    d.wait_ready();
    let rx = Receiver::start_on(port, Behaviour::Status(200));
    let events = all_events(&d);
    let want: HashSet<String> = ids(&events).into_iter().collect();
    for id in ids(&before) {
        assert!(want.contains(&id), "event {id} vanished with the crash");
    }
    let got = rx.wait(Duration::from_secs(90), |r| {
        want.is_subset(&accepted_ids(r))
    });
    assert_complete_in_order(&got, &events);
}

#[test]
fn events_page_filter_long_poll_and_refuse_bad_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let id = send_text(&d, "+15551280001");
    wait_delivered(&d, std::slice::from_ref(&id));
    let all = all_events(&d);
    let mine: Vec<&str> = all
        .iter()
        .filter(|e| e["subject"] == id.as_str())
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        mine,
        ["message.queued", "message.sent", "message.delivered"]
    );

    // One event per page, every event once.
    let mut after = 0;
    let mut paged = Vec::new();
    loop {
        let a = d.get(&format!("/v1/events?after={after}&limit=1"));
        let page = a.body["events"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert_eq!(page.len(), 1);
        after = a.body["next_after"].as_i64().unwrap();
        paged.extend(page);
    }
    assert_eq!(paged, all);

    // A filter returns its types only, and next_after moves past the rest.
    let a = d.get("/v1/events?types=message.delivered");
    let page = a.body["events"].as_array().unwrap();
    assert_eq!(page.len(), 1, "{:?}", a.body);
    assert_eq!(page[0]["subject"], id.as_str());
    assert_eq!(a.body["next_after"], all.last().unwrap()["seq"]);
    assert_eq!(a.body["latest_seq"], all.last().unwrap()["seq"]);

    for (query, field) in [
        ("after=-1", "after"),
        ("after=x", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("types=otp.sent", "types"),
        ("wait_seconds=31", "wait_seconds"),
    ] {
        let a = d.get(&format!("/v1/events?{query}"));
        assert_eq!(a.status, 422, "{query}: {:?}", a.body);
        assert_eq!(
            a.content_type.as_deref(),
            Some("application/problem+json"),
            "{query}"
        );
        assert!(
            a.body.to_string().contains(field),
            "{query}: the problem does not name {field}: {:?}",
            a.body
        );
    }
    let a = d.get("/v1/events?bogus=1");
    assert_eq!(a.status, 422, "{:?}", a.body);
    assert_eq!(a.body["field"], "bogus");

    // A long poll answers as soon as the next event commits.
    let latest = all.last().unwrap()["seq"].as_i64().unwrap();
    let (base, bearer) = (d.base.clone(), d.bearer());
    let poll = std::thread::spawn(move || {
        let started = Instant::now();
        let a = daemon::request(
            &base,
            "GET",
            &format!("/v1/events?after={latest}&wait_seconds=25&types=message.queued"),
            None,
            &[("Authorization", &bearer)],
        )
        .unwrap();
        (a, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let second = send_text(&d, "+15551280002");
    let (a, took) = poll.join().unwrap();
    let page = a.body["events"].as_array().unwrap();
    assert_eq!(page.len(), 1, "{:?}", a.body);
    assert_eq!(page[0]["subject"], second.as_str());
    assert!(
        took < Duration::from_secs(20),
        "the long poll waited {took:?}"
    );
    // Nothing new: the wait runs out and answers an empty page.
    let next = a.body["next_after"].as_i64().unwrap();
    let a = d.get(&format!(
        "/v1/events?after={}&wait_seconds=1&types=otp.approved",
        next.max(
            d.get("/v1/events?limit=1000").body["latest_seq"]
                .as_i64()
                .unwrap()
        )
    ));
    assert_eq!(a.status, 200);
    assert!(
        a.body["events"].as_array().unwrap().is_empty(),
        "{:?}",
        a.body
    );
}
