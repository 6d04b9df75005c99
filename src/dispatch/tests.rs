use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use tokio::sync::watch;

use super::send::ModemVerdict;
use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::modem::ModemEvent;
use crate::pdu::{self, DeliveryOutcome, EncodedPart};
use crate::store::{Body, Millis, Store, StoreError, UnknownOutcomePolicy};
use crate::store::{CreateOutcome, MessageKind, MessageStatus, NewMessage, NewOtp, StoreOptions};

/// What a fake modem saw: the decoded text of each send, in order.
struct FakeState {
    id: String,
    ready: watch::Sender<bool>,
    /// Scripted answers, used first; afterwards every send succeeds.
    script: Mutex<VecDeque<Result<Vec<u8>, Failed>>>,
    /// How long a send takes, in ms (changeable, to make a modem hang).
    delay_ms: AtomicU64,
    sent: Mutex<Vec<(String, Instant)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    next_mr: AtomicUsize,
    /// Turns the modem not-ready the moment it answers `NotReady`, like an unplugged dongle.
    drop_on_not_ready: bool,
    /// Every send of this text fails this way (a modem that chokes on one message).
    poisoned: Mutex<Option<(String, SendError)>>,
}

#[derive(Clone)]
struct Fake(Arc<FakeState>);

impl Fake {
    fn new(id: &str, delay: Duration) -> Fake {
        Fake(Arc::new(FakeState {
            id: id.into(),
            ready: watch::channel(true).0,
            script: Mutex::new(VecDeque::new()),
            delay_ms: AtomicU64::new(delay.as_millis() as u64),
            sent: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            next_mr: AtomicUsize::new(1),
            drop_on_not_ready: true,
            poisoned: Mutex::new(None),
        }))
    }
    fn poison(self, text: &str, failure: SendError) -> Fake {
        *self.0.poisoned.lock().unwrap() = Some((text.into(), failure));
        self
    }
    fn script(self, answers: Vec<Result<Vec<u8>, SendError>>) -> Fake {
        let answers = answers.into_iter().map(|a| a.map_err(Failed::from));
        self.0.script.lock().unwrap().extend(answers);
        self
    }
    /// Scripts a send that fails after the modem accepted `accepted` parts.
    fn script_partial(self, accepted: Vec<u8>, failure: SendError) -> Fake {
        let answer = Err(Failed { failure, accepted });
        self.0.script.lock().unwrap().push_back(answer);
        self
    }
    fn set_ready(&self, ready: bool) {
        self.0.ready.send_replace(ready);
    }
    fn texts(&self) -> Vec<String> {
        self.0
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect()
    }
    fn send_times(&self) -> Vec<Instant> {
        self.0.sent.lock().unwrap().iter().map(|s| s.1).collect()
    }
}

impl ModemPort for Fake {
    fn id(&self) -> &str {
        &self.0.id
    }
    fn is_ready(&self) -> bool {
        *self.0.ready.borrow()
    }
    async fn readiness_changed(&self, was_ready: bool) {
        let mut rx = self.0.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready != was_ready).await;
    }
    async fn send(&self, parts: Vec<EncodedPart>) -> Result<Vec<u8>, Failed> {
        let s = &self.0;
        let now_in = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now_in, Ordering::SeqCst);
        let text: String = parts
            .iter()
            .map(|p| match pdu::decode(&p.bytes) {
                Ok(pdu::Pdu::Submit(sub)) => sub.text,
                other => panic!("not a SUBMIT: {other:?}"),
            })
            .collect();
        s.sent.lock().unwrap().push((text.clone(), Instant::now()));
        tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst))).await;
        s.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some((poisoned, failure)) = &*s.poisoned.lock().unwrap()
            && *poisoned == text
        {
            return Err(failure.clone().into());
        }
        let scripted = s.script.lock().unwrap().pop_front();
        match scripted {
            Some(Err(Failed {
                failure: SendError::NotReady,
                ..
            })) if s.drop_on_not_ready => {
                s.ready.send_replace(false);
                Err(SendError::NotReady.into())
            }
            Some(answer) => answer,
            None => Ok(parts
                .iter()
                .map(|_| s.next_mr.fetch_add(1, Ordering::SeqCst) as u8)
                .collect()),
        }
    }
}

struct Rig {
    store: Store,
    wake: Arc<Notify>,
    clock: Clock,
    stats: Arc<DispatchStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StoreError>>,
    /// Under paused time, the task that holds the time still between the test's steps.
    hold: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn quick() -> DispatchConfig {
    DispatchConfig {
        on_unknown_outcome: UnknownOutcomePolicy::Resend,
        retry_base: Duration::from_millis(40),
        retry_max: Duration::from_secs(1),
        store_error_pause: Duration::from_millis(50),
        ..DispatchConfig::default()
    }
}

fn opener() -> Opener {
    // A stand-in for otp.rs: the "sealed" form is the text reversed.
    Arc::new(|sealed: &[u8]| {
        let mut b = sealed.to_vec();
        b.reverse();
        String::from_utf8(b).map_err(|_| "not utf-8".to_string())
    })
}

fn seal(text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    b.reverse();
    b
}

/// Opens a store, optionally pre-fills it (before the dispatcher starts), then runs the
/// dispatcher over `modems`.
async fn rig_with(
    modems: Vec<(Fake, u32)>,
    cfg: DispatchConfig,
    prefill: impl AsyncFnOnce(&Store, Millis),
) -> Rig {
    start_rig(modems, cfg, prefill, false).await
}

/// [`rig_with`] on paused tokio time (the test is `start_paused`) that moves only by the
/// test's steps ([`Rig::pass`]): a waiting test costs store round trips, not sleeps.
///
/// Left alone, paused time jumps to the next timer whenever every task waits, including
/// for the store's threads, which paused time cannot see: a claim's commit would let a
/// fake send of seconds end "before" it. A task that keeps yielding means the runtime is
/// never idle, so tokio never advances the time by itself.
async fn paused_rig_with(
    modems: Vec<(Fake, u32)>,
    cfg: DispatchConfig,
    prefill: impl AsyncFnOnce(&Store, Millis),
) -> Rig {
    start_rig(modems, cfg, prefill, true).await
}

async fn start_rig(
    modems: Vec<(Fake, u32)>,
    cfg: DispatchConfig,
    prefill: impl AsyncFnOnce(&Store, Millis),
    paused: bool,
) -> Rig {
    let hold = paused.then(|| {
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        })
    });
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("q.db"),
        StoreOptions {
            durability: crate::store::Durability::Normal,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let wake = Arc::new(Notify::new());
    let pool = modems
        .into_iter()
        .map(|(port, rate)| PoolModem {
            port,
            sends_per_minute: rate,
            delivery_reports: true,
        })
        .collect();
    let clock = Clock::following_tokio(Clock::system().now_ms());
    let d =
        Dispatcher::new(store.clone(), pool, cfg, wake.clone(), opener()).with_clock(clock.clone());
    prefill(&store, clock.now_ms()).await;
    let stats = d.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(d.run(async move {
        let _ = rx.await;
    }));
    Rig {
        store,
        wake,
        clock,
        stats,
        stop: Some(tx),
        task,
        hold,
        _dir: dir,
    }
}

async fn rig(modems: Vec<(Fake, u32)>) -> Rig {
    rig_with(modems, quick(), async |_, _| {}).await
}

async fn pass(paused: bool, d: Duration) {
    if paused {
        tokio::time::advance(d).await;
    } else {
        tokio::time::sleep(d).await;
    }
}

async fn paused_rig(modems: Vec<(Fake, u32)>) -> Rig {
    paused_rig_with(modems, quick(), async |_, _| {}).await
}

fn text_msg(id: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.into(),
        to: crate::model::Msisdn::parse(to).unwrap(),
        kind: MessageKind::Text,
        log_text: format!("text {id}"),
        body: Body::Clear(format!("text {id}")),
        parts: 1,
        created_at: at,
        deadline: at + 3_600_000,
    }
}

impl Rig {
    async fn enqueue(&self, id: &str) {
        let m = text_msg(id, "+15551230000", self.clock.now_ms());
        let out = self.store.enqueue_text(m, None, 0).await.unwrap();
        assert_eq!(out, CreateOutcome::Created);
        self.wake.notify_one();
    }

    /// Waits for `id` to reach `want`, letting time pass (in 5 ms steps under paused time).
    async fn wait_status(&self, id: &str, want: MessageStatus) {
        // Wall time: paused time runs as fast as the store answers, not as the disk syncs.
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let m = self.store.get_message(id).await.unwrap();
            if m.as_ref().map(|m| m.status) == Some(want) {
                return;
            }
            assert!(
                std::time::Instant::now() < give_up,
                "{id} never became {want:?}: {m:?}"
            );
            self.pass(Duration::from_millis(5)).await;
        }
    }

    /// Under paused time: waits for `id` to reach `want` while no time passes, so no timer
    /// fires meanwhile (a send on the wire stays there).
    async fn settle_status(&self, id: &str, want: MessageStatus) {
        let store = self.store.clone();
        let status = async || store.get_message(id).await.unwrap().map(|m| m.status);
        self.settle(&format!("{id} never became {want:?}"), async || {
            status().await == Some(want)
        })
        .await;
    }

    /// Under paused time: waits for `cond` while no time passes.
    async fn settle(&self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
        assert!(self.hold.is_some(), "only paused time can stand still");
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while !cond().await {
            assert!(std::time::Instant::now() < give_up, "{what}");
            tokio::task::yield_now().await;
        }
    }

    /// Under paused time: lets time pass in 5 ms steps until `cond`.
    async fn pass_until(&self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
        assert!(self.hold.is_some(), "paused time only");
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        while !cond().await {
            assert!(std::time::Instant::now() < give_up, "{what}");
            self.pass(Duration::from_millis(5)).await;
        }
    }

    /// Lets `d` pass: a real sleep, or a step of paused time (followed by a store round
    /// trip, so paused time cannot run far ahead of the store's threads).
    async fn pass(&self, d: Duration) {
        pass(self.hold.is_some(), d).await;
        if self.hold.is_some() {
            self.store.queue_depth().await.unwrap();
        }
    }

    async fn stop(mut self) -> Store {
        let _ = self.stop.take().unwrap().send(());
        if let Some(hold) = self.hold.take() {
            // Paused time: give the loop a moment of wall time to see the stop (it may be
            // waiting for the store), then let sends in flight finish as their time passes.
            let seen = std::time::Instant::now() + Duration::from_millis(100);
            while std::time::Instant::now() < seen && !self.task.is_finished() {
                tokio::task::yield_now().await;
            }
            while !self.task.is_finished() {
                pass(true, Duration::from_millis(5)).await;
                self.store.queue_depth().await.unwrap();
            }
            hold.abort();
        }
        (&mut self.task).await.unwrap().unwrap();
        self.store
    }
}

#[tokio::test]
async fn sends_oldest_first() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
        for (i, id) in ["msg_a", "msg_b", "msg_c"].into_iter().enumerate() {
            let m = text_msg(id, "+15551230000", now + i as Millis);
            store.enqueue_text(m, None, 0).await.unwrap();
        }
    })
    .await;
    rig.wait_status("msg_c", MessageStatus::Sent).await;
    rig.wait_status("msg_b", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), ["text msg_a", "text msg_b", "text msg_c"]);
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert_eq!(m.modem_id.as_deref(), Some("m0"));
    rig.stop().await;
}

#[tokio::test]
async fn wakes_on_enqueue_without_polling() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    // Let the loop settle into its idle wait, then watch it do nothing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let idle_claims = rig.stats.claims.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rig.stats.claims.load(Ordering::SeqCst),
        idle_claims,
        "an idle dispatcher must not touch the store"
    );
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), ["text msg_a"]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spreads_over_idle_modems_one_send_each() {
    let slow = Duration::from_millis(300);
    let (a, b) = (Fake::new("m0", slow), Fake::new("m1", slow));
    let rig = paused_rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
    for id in ["msg_1", "msg_2", "msg_3", "msg_4"] {
        rig.enqueue(id).await;
    }
    // Both modems take their first message before any send time passes.
    rig.settle("both modems send", async || {
        !a.texts().is_empty() && !b.texts().is_empty()
    })
    .await;
    for id in ["msg_1", "msg_2", "msg_3", "msg_4"] {
        rig.wait_status(id, MessageStatus::Sent).await;
    }
    // Both modems worked, in parallel, never two sends at once on one modem.
    assert_eq!(a.texts().len(), 2);
    assert_eq!(b.texts().len(), 2);
    assert_eq!(a.0.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(b.0.max_in_flight.load(Ordering::SeqCst), 1);
    let first_a = a.send_times()[0];
    let first_b = b.send_times()[0];
    let gap = if first_a > first_b {
        first_a - first_b
    } else {
        first_b - first_a
    };
    assert!(gap < slow, "the second modem did not wait for the first");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_next_message_is_claimed_while_the_current_one_is_on_the_wire() {
    let modem = Fake::new("m0", Duration::from_millis(150));
    let rig = paused_rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
        for (i, id) in ["msg_a", "msg_b", "msg_c", "msg_d"].into_iter().enumerate() {
            let m = text_msg(id, "+15551230000", now + i as Millis);
            store.enqueue_text(m, None, 0).await.unwrap();
        }
    })
    .await;
    // msg_a gives the modem a send time to judge by; from msg_b on, the next message is
    // claimed (durably `sending`) while the current one is on the wire.
    rig.pass_until("msg_b never went out", async || modem.texts().len() >= 2)
        .await;
    rig.settle_status("msg_c", MessageStatus::Sending).await;
    rig.pass(Duration::from_millis(50)).await;
    assert_eq!(modem.texts().len(), 2, "msg_b is still on the wire");
    let c = rig.store.get_message("msg_c").await.unwrap().unwrap();
    assert_eq!(c.status, MessageStatus::Sending, "msg_c claimed in advance");
    let d = rig.store.get_message("msg_d").await.unwrap().unwrap();
    assert_eq!(
        d.status,
        MessageStatus::Queued,
        "one message in advance at most"
    );
    rig.wait_status("msg_d", MessageStatus::Sent).await;
    // Still one send at a time, in queue order, each counted once.
    assert_eq!(modem.0.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(
        modem.texts(),
        ["text msg_a", "text msg_b", "text msg_c", "text msg_d"]
    );
    for id in ["msg_a", "msg_b", "msg_c", "msg_d"] {
        let m = rig.store.get_message(id).await.unwrap().unwrap();
        assert_eq!((m.status, m.attempts), (MessageStatus::Sent, 1), "{id}");
    }
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_gives_a_message_claimed_in_advance_back_to_the_queue() {
    let modem = Fake::new("m0", Duration::from_millis(200));
    let rig = paused_rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
        for (i, id) in ["msg_a", "msg_b", "msg_c"].into_iter().enumerate() {
            let m = text_msg(id, "+15551230000", now + i as Millis);
            store.enqueue_text(m, None, 0).await.unwrap();
        }
    })
    .await;
    rig.pass_until("msg_b never went out", async || modem.texts().len() >= 2)
        .await;
    rig.settle_status("msg_c", MessageStatus::Sending).await;
    let store = rig.stop().await;
    // msg_b was on the wire and finished; msg_c never left and is queued again, uncounted.
    assert_eq!(modem.texts(), ["text msg_a", "text msg_b"]);
    let b = store.get_message("msg_b").await.unwrap().unwrap();
    assert_eq!(b.status, MessageStatus::Sent);
    let c = store.get_message("msg_c").await.unwrap().unwrap();
    assert_eq!((c.status, c.attempts), (MessageStatus::Queued, 0));
    assert!(c.error.unwrap().contains("claimed in advance, not sent"));
}

#[tokio::test(start_paused = true)]
async fn a_message_claimed_in_advance_goes_back_when_the_current_send_hangs() {
    let modem = Fake::new("m0", Duration::from_millis(20));
    let rig = paused_rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    // The modem now takes 2.5 s per send: msg_c, claimed in advance behind msg_b, waits at
    // most max(1 s, 3 x 20 ms) and goes back to the queue uncounted.
    modem.0.delay_ms.store(2_500, Ordering::SeqCst);
    rig.enqueue("msg_b").await;
    rig.enqueue("msg_c").await;
    rig.settle_status("msg_c", MessageStatus::Sending).await;
    let give_up = Instant::now() + Duration::from_secs(2);
    let c = loop {
        let c = rig.store.get_message("msg_c").await.unwrap().unwrap();
        if c.status == MessageStatus::Queued {
            break c;
        }
        assert!(Instant::now() < give_up, "msg_c: {c:?}");
        rig.pass(Duration::from_millis(5)).await;
    };
    assert_eq!(c.attempts, 0);
    assert!(c.error.unwrap().contains("takes too long"));
    assert_eq!(modem.texts(), ["text msg_a", "text msg_b"]);
    modem.0.delay_ms.store(0, Ordering::SeqCst);
    rig.wait_status("msg_c", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), ["text msg_a", "text msg_b", "text msg_c"]);
    assert_eq!(modem.0.max_in_flight.load(Ordering::SeqCst), 1);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_busy_modem_is_passed_over() {
    let a = Fake::new("m0", Duration::from_millis(500));
    let b = Fake::new("m1", Duration::ZERO);
    let rig = paused_rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
    rig.enqueue("msg_long").await;
    // Both idle and never used: the first in pool order takes it and stays busy for a while
    // (no time passes until the other three are sent).
    rig.settle("m0 never took msg_long", async || !a.texts().is_empty())
        .await;
    for id in ["msg_x", "msg_y", "msg_z"] {
        rig.enqueue(id).await;
    }
    for id in ["msg_x", "msg_y", "msg_z"] {
        rig.settle_status(id, MessageStatus::Sent).await;
    }
    rig.wait_status("msg_long", MessageStatus::Sent).await;
    assert_eq!(a.texts(), ["text msg_long"]);
    assert_eq!(b.texts(), ["text msg_x", "text msg_y", "text msg_z"]);
    rig.stop().await;
}

#[tokio::test]
async fn temporary_errors_retry_with_backoff_then_send() {
    let modem = Fake::new("m0", Duration::ZERO).script(vec![
        Err(SendError::Temporary("+CMS ERROR: 331".into())),
        Err(SendError::Temporary("+CMS ERROR: 332".into())),
    ]);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    let times = modem.send_times();
    assert_eq!(times.len(), 3);
    let cfg = quick();
    assert!(times[1] - times[0] >= backoff(&cfg, 1));
    assert!(times[2] - times[1] >= backoff(&cfg, 2));
    assert!(backoff(&cfg, 2) > backoff(&cfg, 1), "backoff grows");
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert_eq!(m.attempts, 3);
    let events = rig.store.message_events("msg_a").await.unwrap();
    let retries = events
        .iter()
        .filter(|e| {
            e.detail
                .as_deref()
                .unwrap_or("")
                .starts_with("retry: m0: +CMS")
        })
        .count();
    assert_eq!(retries, 2);
    rig.stop().await;
}

#[tokio::test]
async fn permanent_error_fails_with_the_modem_reason() {
    let modem = Fake::new("m0", Duration::ZERO).script(vec![Err(SendError::Permanent(
        "+CMS ERROR: 21 (short message transfer rejected)".into(),
    ))]);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Failed).await;
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert!(m.error.unwrap().contains("transfer rejected"));
    assert_eq!(modem.texts().len(), 1, "never retried");
    rig.stop().await;
}

#[tokio::test]
async fn retries_stop_at_the_deadline() {
    let modem = Fake::new("m0", Duration::ZERO).script(vec![
        Err(SendError::Temporary("no network".into())),
        Err(SendError::Temporary("no network".into())),
        Err(SendError::Temporary("no network".into())),
    ]);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let mut m = text_msg("msg_a", "+15551230000", now);
    // Room for the first retry (40 ms) but not the second (80 ms more).
    m.deadline = now + 100;
    rig.store.enqueue_text(m, None, 0).await.unwrap();
    rig.wake.notify_one();
    rig.wait_status("msg_a", MessageStatus::Expired).await;
    assert_eq!(modem.texts().len(), 2);
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert!(m.error.unwrap().contains("no time left"));
    rig.stop().await;
}

#[tokio::test]
async fn an_otp_that_expires_while_queued_is_never_sent() {
    let modem = Fake::new("m0", Duration::ZERO);
    modem.set_ready(false);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let otp = NewOtp {
        id: "otp_1".into(),
        to: crate::model::Msisdn::parse("+15551230000").unwrap(),
        code_hmac: vec![0; 32],
        max_attempts: 5,
        expires_at: now + 150,
        created_at: now,
    };
    let msg = NewMessage {
        id: "msg_otp".into(),
        to: crate::model::Msisdn::parse("+15551230000").unwrap(),
        kind: MessageKind::Otp,
        log_text: "Your code is ******.".into(),
        body: Body::Sealed(seal("Your code is 123456.")),
        parts: 1,
        created_at: now,
        deadline: now + 150,
    };
    rig.store.create_otp(otp, msg, None, 0, 0).await.unwrap();
    rig.wake.notify_one();
    // Nobody pokes the dispatcher: it must wake by itself at the deadline.
    rig.wait_status("msg_otp", MessageStatus::Expired).await;
    modem.set_ready(true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(modem.texts().is_empty());
    rig.stop().await;
}

#[tokio::test]
async fn sealed_otp_text_is_opened_and_validity_follows_the_deadline() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let otp = NewOtp {
        id: "otp_1".into(),
        to: crate::model::Msisdn::parse("+15551230000").unwrap(),
        code_hmac: vec![0; 32],
        max_attempts: 5,
        expires_at: now + 5 * 60_000,
        created_at: now,
    };
    let msg = NewMessage {
        id: "msg_otp".into(),
        to: crate::model::Msisdn::parse("+15551230000").unwrap(),
        kind: MessageKind::Otp,
        log_text: "Your code is ******.".into(),
        body: Body::Sealed(seal("Your code is 123456.")),
        parts: 1,
        created_at: now,
        deadline: now + 5 * 60_000,
    };
    rig.store.create_otp(otp, msg, None, 0, 0).await.unwrap();
    rig.wake.notify_one();
    rig.wait_status("msg_otp", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), ["Your code is 123456."]);
    rig.stop().await;
}

#[tokio::test]
async fn unknown_outcome_is_resent_by_default() {
    let modem = Fake::new("m0", Duration::ZERO)
        .script(vec![Err(SendError::OutcomeUnknown("no +CMGS".into()))]);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), ["text msg_a", "text msg_a"]);
    let events = rig.store.message_events("msg_a").await.unwrap();
    assert!(events.iter().any(|e| {
        e.detail
            .as_deref()
            .is_some_and(|d| d.contains("outcome unknown"))
    }));
    rig.stop().await;
}

#[tokio::test]
async fn unknown_outcomes_back_off_let_others_pass_and_stop_at_the_cap() {
    // Every send of msg_stuck has an unknown outcome (a modem answering `+CMGS: 999`).
    let unknown = SendError::OutcomeUnknown("OK without +CMGS".into());
    let modem = Fake::new("m0", Duration::ZERO).poison("text msg_stuck", unknown);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_stuck").await;
    rig.enqueue("msg_other").await;
    rig.wait_status("msg_stuck", MessageStatus::Failed).await;
    rig.wait_status("msg_other", MessageStatus::Sent).await;
    let stuck: Vec<Instant> = modem
        .0
        .sent
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| t == "text msg_stuck")
        .map(|(_, at)| *at)
        .collect();
    let cfg = quick();
    assert_eq!(
        stuck.len(),
        cfg.max_unknown_outcomes as usize,
        "stops at the cap"
    );
    assert!(stuck[1] - stuck[0] >= backoff(&cfg, 1), "backs off");
    assert!(stuck[2] - stuck[1] >= backoff(&cfg, 2), "backs off longer");
    // The other text went out while the stuck one waited, not after it gave up.
    let other_at = modem.send_times()[modem
        .texts()
        .iter()
        .position(|t| t == "text msg_other")
        .unwrap()];
    assert!(
        other_at < stuck[1],
        "the other text waited behind the stuck one"
    );
    let other = rig.store.get_message("msg_other").await.unwrap().unwrap();
    assert_eq!(other.attempts, 1);
    let m = rig.store.get_message("msg_stuck").await.unwrap().unwrap();
    assert_eq!(m.attempts, 3);
    let error = m.error.unwrap();
    assert!(error.contains("outcome unknown 3 times"), "{error}");
    assert!(error.contains("OK without +CMGS"), "{error}");
    rig.stop().await;
}

#[tokio::test]
async fn temporary_errors_stop_at_max_attempts() {
    let busy = || Err(SendError::Temporary("+CMS ERROR: 42".into()));
    let modem = Fake::new("m0", Duration::ZERO).script(vec![busy(); 5]);
    let cfg = DispatchConfig {
        max_attempts: 3,
        retry_base: Duration::from_millis(5),
        ..quick()
    };
    let rig = rig_with(vec![(modem.clone(), 0)], cfg, async |_, _| {}).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Failed).await;
    assert_eq!(modem.texts().len(), 3);
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    let error = m.error.unwrap();
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert!(error.contains("+CMS ERROR: 42"), "{error}");
    rig.stop().await;
}

#[tokio::test]
async fn a_long_text_with_a_failed_last_part_is_resent_whole_at_most_the_cap() {
    let temporary = || SendError::Temporary("+CMS ERROR: 42".into());
    let modem = Fake::new("m0", Duration::ZERO)
        .script_partial(vec![7], temporary())
        .script_partial(vec![8], temporary());
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let mut m = text_msg("msg_long", "+15551230000", now);
    m.body = Body::Clear("y".repeat(300));
    m.parts = 2;
    rig.store.enqueue_text(m, None, 0).await.unwrap();
    rig.wake.notify_one();
    rig.wait_status("msg_long", MessageStatus::Failed).await;
    // The first send and one whole resend (the default cap), never a third.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(modem.texts().len(), 2);
    let m = rig.store.get_message("msg_long").await.unwrap().unwrap();
    let error = m.error.unwrap();
    assert!(error.contains("part 2 of 2 failed"), "{error}");
    assert!(error.contains("1 whole resend"), "{error}");
    // The part that was accepted is on record: its status report still finds the message.
    let effect = record_status_report(
        &rig.store,
        "m0",
        8,
        "+15551230000",
        0,
        DeliveryOutcome::Delivered,
        rig.clock.now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(effect.unwrap().message_id, "msg_long");
    rig.stop().await;
}

#[tokio::test]
async fn a_partial_send_within_the_cap_is_resent_whole_and_sent() {
    let modem = Fake::new("m0", Duration::ZERO)
        .script_partial(vec![7], SendError::Temporary("+CMS ERROR: 42".into()));
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let long = "z".repeat(300);
    let mut m = text_msg("msg_long", "+15551230000", now);
    m.body = Body::Clear(long.clone());
    m.parts = 2;
    rig.store.enqueue_text(m, None, 0).await.unwrap();
    rig.wake.notify_one();
    rig.wait_status("msg_long", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), [long.clone(), long]);
    rig.stop().await;
}

#[tokio::test]
async fn unknown_outcome_fails_when_configured() {
    let modem = Fake::new("m0", Duration::ZERO)
        .script(vec![Err(SendError::OutcomeUnknown("no +CMGS".into()))]);
    let cfg = DispatchConfig {
        on_unknown_outcome: UnknownOutcomePolicy::Fail,
        ..quick()
    };
    let rig = rig_with(vec![(modem.clone(), 0)], cfg, async |_, _| {}).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Failed).await;
    assert_eq!(modem.texts().len(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn messages_left_sending_are_recovered_at_start() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
        let m = text_msg("msg_a", "+15551230000", now);
        store.enqueue_text(m, None, 0).await.unwrap();
        // A previous process claimed it and died mid-send.
        store.claim_next(now).await.unwrap().unwrap();
    })
    .await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert_eq!(m.attempts, 2);
    rig.stop().await;
}

#[tokio::test]
async fn a_failing_modem_hands_its_work_to_the_other() {
    let a = Fake::new("m0", Duration::ZERO).script(vec![Err(SendError::NotReady)]);
    let b = Fake::new("m1", Duration::ZERO);
    b.set_ready(false);
    let rig = rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    // m0 drops out on its first send; m1 comes up afterwards and takes the message.
    let give_up = Instant::now() + Duration::from_secs(5);
    while a.is_ready() {
        assert!(Instant::now() < give_up);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    b.set_ready(true);
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert_eq!(m.modem_id.as_deref(), Some("m1"));
    // m0 never took the text, so only m1's send counts as an attempt.
    assert_eq!(m.attempts, 1);
    assert_eq!(b.texts(), ["text msg_a"]);
    rig.stop().await;
}

#[tokio::test]
async fn status_report_marks_delivered() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    // The fake numbers TP-MRs from 1.
    let now = rig.clock.now_ms();
    let effect = record_status_report(
        &rig.store,
        "m0",
        1,
        "15551230000",
        0x00,
        DeliveryOutcome::Delivered,
        now,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(effect.message_id, "msg_a");
    assert_eq!(effect.status, MessageStatus::Delivered);
    rig.wait_status("msg_a", MessageStatus::Delivered).await;
    rig.stop().await;
}

#[tokio::test]
async fn permanent_failure_report_fails_the_message() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    let now = rig.clock.now_ms();
    let effect = record_status_report(
        &rig.store,
        "m0",
        1,
        "+15551230000",
        0x41,
        DeliveryOutcome::PermanentFailure,
        now,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(effect.status, MessageStatus::Failed);
    let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
    assert!(m.error.unwrap().contains("0x41"));
    rig.stop().await;
}

#[tokio::test]
async fn send_rate_limit_holds_back_the_second_send() {
    // 1 per minute: the second message must wait far longer than this test runs.
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 1)]).await;
    rig.enqueue("msg_a").await;
    rig.enqueue("msg_b").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(modem.texts(), ["text msg_a"]);
    assert_eq!(
        rig.store
            .get_message("msg_b")
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Queued
    );
    rig.stop().await;
}

#[tokio::test]
async fn long_texts_get_fresh_concat_references() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    let now = rig.clock.now_ms();
    let long = "x".repeat(300);
    let mut m = text_msg("msg_long", "+15551230000", now);
    m.body = Body::Clear(long.clone());
    m.parts = 2;
    rig.store.enqueue_text(m, None, 0).await.unwrap();
    rig.wake.notify_one();
    rig.wait_status("msg_long", MessageStatus::Sent).await;
    assert_eq!(modem.texts(), [long]);
    // The store's counter moved: the reference came from it.
    let store = rig.stop().await;
    assert_eq!(store.next_concat_reference().await.unwrap(), 2);
}

#[tokio::test]
async fn modem_events_pump_applies_status_reports() {
    let modem = Fake::new("m0", Duration::ZERO);
    let rig = rig(vec![(modem.clone(), 0)]).await;
    rig.enqueue("msg_a").await;
    rig.wait_status("msg_a", MessageStatus::Sent).await;
    let (tx, rx) = mpsc::channel(4);
    let metrics = Arc::new(Metrics::new());
    let pump = tokio::spawn(run_events(
        rig.store.clone(),
        rx,
        rig.clock.clone(),
        Some(metrics.clone()),
        None,
    ));
    tx.send(ModemEvent::Incoming {
        modem_id: "m0".into(),
        from: "+15550000000".into(),
        text: "STOP".into(),
        split_units: None,
        sc_timestamp: "2026-12-04T10:00:00Z".into(),
        concat: None,
        custody: None,
    })
    .await
    .unwrap();
    tx.send(ModemEvent::StatusReport {
        modem_id: "m0".into(),
        message_reference: 1,
        recipient: "+15551230000".into(),
        status: 0,
        outcome: DeliveryOutcome::Delivered,
        discharge_time: None,
    })
    .await
    .unwrap();
    // A forged report for the tail of the number, and one for no send at all.
    for (mr, recipient) in [(1, "+5551230000"), (200, "+15551230000")] {
        tx.send(ModemEvent::StatusReport {
            modem_id: "m0".into(),
            message_reference: mr,
            recipient: recipient.into(),
            status: 0,
            outcome: DeliveryOutcome::Delivered,
            discharge_time: None,
        })
        .await
        .unwrap();
    }
    drop(tx);
    pump.await.unwrap();
    rig.wait_status("msg_a", MessageStatus::Delivered).await;
    let text = metrics.encode();
    assert!(
        text.contains("simgate_status_reports_total{result=\"matched\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("simgate_status_reports_total{result=\"unmatched\"} 2"),
        "{text}"
    );
    assert!(text.contains("simgate_incoming_texts_total 1"), "{text}");
    rig.stop().await;
}

#[tokio::test]
async fn retention_task_prunes_old_final_messages() {
    let rig = rig(vec![]).await;
    let now = rig.clock.now_ms();
    let old = text_msg("msg_old", "+15551230000", now - 40 * 86_400_000);
    rig.store.enqueue_text(old, None, 0).await.unwrap();
    rig.store.mark_failed("msg_old", "gone", now).await.unwrap();
    rig.enqueue("msg_new").await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_retention(
        rig.store.clone(),
        Some(Duration::from_secs(30 * 86_400)),
        Some(Duration::from_secs(7 * 86_400)),
        Duration::from_millis(20),
        rig.clock.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let give_up = Instant::now() + Duration::from_secs(5);
    while rig.store.get_message("msg_old").await.unwrap().is_some() {
        assert!(Instant::now() < give_up, "never pruned");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(());
    task.await.unwrap();
    assert!(rig.store.get_message("msg_new").await.unwrap().is_some());
    rig.stop().await;
}

#[tokio::test]
async fn a_modem_that_keeps_failing_rests_and_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("q.db"), StoreOptions::default()).unwrap();
    let pool = ["m0", "m1"]
        .into_iter()
        .map(|id| PoolModem {
            port: Fake::new(id, Duration::ZERO),
            sends_per_minute: 0,
            delivery_reports: false,
        })
        .collect();
    let mut d = Dispatcher::new(store, pool, quick(), Arc::new(Notify::new()), opener());
    let mut until = None;
    // Never used: pool order.
    assert_eq!(d.pick_modem(&mut until), Some(0));
    d.slots[0].last_start = Some(Instant::now() - Duration::from_secs(10));
    d.slots[1].last_start = Some(Instant::now());
    // m0 is the least recently used; two failures do not change that...
    for _ in 1..FAILURES_BEFORE_REST {
        d.modem_done(0, ModemVerdict::Failing, None);
    }
    assert_eq!(d.pick_modem(&mut until), Some(0));
    // ...a success resets the count...
    d.modem_done(0, ModemVerdict::Healthy, None);
    for _ in 1..FAILURES_BEFORE_REST {
        d.modem_done(0, ModemVerdict::Failing, None);
    }
    assert_eq!(d.pick_modem(&mut until), Some(0));
    // ...the next failure in a row sends it to rest, and m1 gets the work.
    d.modem_done(0, ModemVerdict::Failing, None);
    let mut until = None;
    assert_eq!(d.pick_modem(&mut until), Some(1));
    let rest_end = until.expect("the loop must wake when the rest ends");
    assert!(rest_end > Instant::now());
    // With m1 busy, nothing is free until the rest is over.
    d.slots[1].in_flight = 2;
    let mut until = None;
    assert_eq!(d.pick_modem(&mut until), None);
    assert_eq!(until, Some(rest_end));
    tokio::time::sleep_until(rest_end).await;
    assert_eq!(d.pick_modem(&mut None), Some(0));
    // Each further failure rests it longer.
    d.modem_done(0, ModemVerdict::Failing, None);
    let mut longer = None;
    d.pick_modem(&mut longer);
    assert!(longer.unwrap() - Instant::now() > backoff(&quick(), 1));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let cfg = DispatchConfig {
        retry_base: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        ..DispatchConfig::default()
    };
    let got: Vec<u64> = (1..=8).map(|a| backoff(&cfg, a).as_secs()).collect();
    assert_eq!(got, [2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff(&cfg, 0).as_secs(), 2);
    assert_eq!(backoff(&cfg, u32::MAX).as_secs(), 60);
}
