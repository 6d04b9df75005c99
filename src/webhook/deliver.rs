//! The delivery worker: one task per configured endpoint walks the outbox from the endpoint's
//! durable cursor and POSTs each event it subscribes to, in `seq` order.
//!
//! **Invariants.**
//! - One event in flight per endpoint, and the cursor passes an event only once it is delivered
//!   (2xx), dead (its retry period is over) or filtered out: a receiver sees events in order,
//!   and after a crash the first undelivered one is sent again with the same `webhook-id`.
//! - Endpoints share nothing but the store: a slow or dead endpoint holds back only itself. The
//!   send path never waits for a webhook; events are rows the change's own transaction wrote.
//! - A 410 Gone disables the endpoint in the store until its config (the fingerprint) changes,
//!   so a restart does not start hammering a receiver that asked to be left alone.
//! - Redirects are not followed: a 3xx to some other host would bypass the `http://`-only-to-
//!   loopback rule the config enforces, so it counts as a failure like any non-2xx.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::WebhookSettings;
use super::sign::{Format, Rendered, StandardWebhooks};
use crate::log_throttle::Throttle;
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::store::Store;
use crate::store::events::{AttemptResult, EndpointState, StoredEvent};

/// Events read from the outbox at a time; the cursor is durable per event, so this only bounds
/// memory.
const BATCH: u32 = 64;
/// The first retry waits this long; each further failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two attempts of one event (a `Retry-After` may ask for more, up to
/// [`MAX_RETRY_AFTER`]).
const MAX_BACKOFF: Duration = Duration::from_secs(10 * 60);
/// The most of a receiver's `Retry-After` that is honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// What of a response body is read (then dropped), so the connection can be reused.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// Store failures come as fast as the loop runs: one line per 10 s.
static STORE_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

/// Where and what one event is POSTed as.
#[derive(Debug, Clone)]
pub struct Request {
    /// The receiver.
    pub url: String,
    /// The signed body and headers.
    pub rendered: Rendered,
}

/// What [`Route::request`] returns.
pub type RequestFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Request>, String>> + Send + 'a>>;

/// Turns an event into the request an endpoint gets. A `[[webhook]]` POSTs every event to its
/// URL in its [`Format`]; another consumer of the outbox (Twilio's `StatusCallback`s) may look
/// up where each event goes, and pass over events that go nowhere.
pub trait Route: Send + Sync + 'static {
    /// The request for `event` at unix second `now_secs`, or `None` to pass over it; `Err` is a
    /// failure to find out (a store error), tried again shortly, not a failed delivery.
    fn request<'a>(&'a self, event: &'a StoredEvent, now_secs: i64) -> RequestFuture<'a>;
}

/// A `[[webhook]]`: every event to one URL.
struct FixedUrl {
    url: String,
    format: Arc<dyn Format>,
}

impl Route for FixedUrl {
    fn request<'a>(&'a self, event: &'a StoredEvent, now_secs: i64) -> RequestFuture<'a> {
        let request = Request {
            url: self.url.clone(),
            rendered: self.format.render(event, now_secs),
        };
        Box::pin(std::future::ready(Ok(Some(request))))
    }
}

/// One consumer of the outbox, ready to deliver.
pub struct Endpoint {
    /// Its row in the store (a `[[webhook]]`'s URL).
    key: String,
    /// What logs and metrics call it.
    label: String,
    /// Event types it takes; empty: all.
    events: Vec<String>,
    route: Arc<dyn Route>,
    /// The digest a 410's disabling is tied to ([`WebhookSettings::fingerprint`]).
    fingerprint: String,
    /// One attempt's limit.
    timeout: Duration,
    /// How long an event is retried before it is dead.
    retry_period: Duration,
    /// Whether a 410 disables the whole endpoint (one receiver) or only ends the event (a
    /// route whose events go to many receivers).
    gone_disables: bool,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("endpoint", &self.label)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A `[[webhook]]`, reading its secrets (a `secret_file` now); the error names the file,
    /// never a secret.
    pub fn new(settings: WebhookSettings) -> Result<Endpoint, String> {
        let keys = settings.secrets()?;
        let fingerprint = settings.fingerprint(&keys);
        Ok(Endpoint {
            key: settings.url.clone(),
            label: settings.label(),
            events: settings.events.clone(),
            route: Arc::new(FixedUrl {
                url: settings.url.clone(),
                format: Arc::new(StandardWebhooks::new(keys)),
            }),
            fingerprint,
            timeout: settings.timeout,
            retry_period: settings.retry_period,
            gone_disables: true,
        })
    }

    /// Another consumer of the outbox under store row `key`: `route` decides each event's
    /// receiver; a 410 ends only that event.
    pub fn routed(
        key: &str,
        events: Vec<String>,
        route: Arc<dyn Route>,
        fingerprint: String,
        timeout: Duration,
        retry_period: Duration,
    ) -> Endpoint {
        Endpoint {
            key: key.to_owned(),
            label: key.to_owned(),
            events,
            route,
            fingerprint,
            timeout,
            retry_period,
            gone_disables: false,
        }
    }

    fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }
}

/// Registers the configured endpoints in the store (dropping rows of endpoints no longer
/// configured) and starts one delivery task each. Call before anything records an event, so a
/// new endpoint starts exactly after the history it is not sent.
pub async fn start(
    store: &Store,
    endpoints: Vec<Endpoint>,
    metrics: Option<Arc<Metrics>>,
    stop: watch::Receiver<bool>,
) -> Result<(), crate::store::StoreError> {
    store
        .register_endpoints(
            endpoints
                .iter()
                .map(|e| (e.key.clone(), e.fingerprint.clone()))
                .collect(),
        )
        .await?;
    for endpoint in endpoints {
        tracing::info!(
            endpoint = %endpoint.label,
            events = %if endpoint.events.is_empty() {
                "all".to_string()
            } else {
                endpoint.events.join(",")
            },
            "webhook endpoint configured"
        );
        let worker = Worker {
            direct: agent(endpoint.timeout, false),
            proxied: agent(endpoint.timeout, true),
            endpoint,
            store: store.clone(),
            metrics: metrics.clone(),
        };
        tokio::spawn(worker.run(stop.clone()));
    }
    Ok(())
}

/// A ureq agent with one attempt's timeout (connect, send, answer), no redirects, and status
/// codes as answers rather than errors; `proxied` takes a proxy from the environment
/// (`HTTPS_PROXY`…), which a loopback receiver must never go through.
fn agent(timeout: Duration, proxied: bool) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .user_agent(concat!(
            "simgate/",
            env!("CARGO_PKG_VERSION"),
            " (webhooks)"
        ));
    if !proxied {
        config = config.proxy(None);
    }
    config.build().into()
}

fn is_loopback_url(url: &str) -> bool {
    url.parse::<ureq::http::Uri>()
        .ok()
        .and_then(|u| {
            u.host()
                .map(|h| super::config::is_loopback_host(h.trim_matches(['[', ']'])))
        })
        .unwrap_or(false)
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 2xx.
    Accepted,
    /// 410 Gone.
    Gone,
    /// 410 Gone from one of a route's many receivers: that event is dead, the endpoint goes on.
    GoneForThisEvent,
    /// Anything else, with the `Retry-After` the receiver asked for, if any.
    Refused {
        why: String,
        retry_after: Option<Duration>,
    },
}

struct Worker {
    endpoint: Endpoint,
    /// For loopback receivers.
    direct: ureq::Agent,
    /// For the others (an environment proxy applies).
    proxied: ureq::Agent,
    store: Store,
    metrics: Option<Arc<Metrics>>,
}

impl Worker {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let wake = self.store.outbox_wake();
        let url = self.endpoint.key.clone();
        loop {
            if *stop.borrow() {
                return;
            }
            // In a cluster, another node's worker may hold this endpoint: wait for its turn
            // to lapse rather than deliver beside it.
            match self.store.take_endpoint_turn(&url).await {
                Ok(None) => {}
                Ok(Some(until)) => {
                    let wait = until.saturating_sub(now_ms()).max(100) as u64;
                    if sleep_or_stop(Duration::from_millis(wait), &mut stop).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    self.store_error(&e);
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
            let state = match self.store.endpoint_state(&url).await {
                Ok(Some(s)) => s,
                // Unregistered: only a config reload could do that, and there is none.
                Ok(None) => return,
                Err(e) => {
                    self.store_error(&e);
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            self.publish(&state).await;
            if let Some(reason) = &state.disabled {
                tracing::error!(
                    endpoint = %self.endpoint.label,
                    reason = %reason,
                    "webhook endpoint disabled: nothing more is sent to it until its \
                     [[webhook]] table changes"
                );
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            if let (Some(_), Some(at)) = (state.head_seq, state.next_attempt_at) {
                let wait = at.saturating_sub(now_ms());
                if wait > 0 {
                    if sleep_or_stop(Duration::from_millis(wait as u64), &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
            // Registered before the read: a commit between the read and the wait still wakes.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch = match self.store.events_after(state.cursor, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    self.store_error(&e);
                    if sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = notified => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            if self.deliver_batch(state, batch, &mut stop).await {
                return;
            }
        }
    }

    /// Delivers `batch` in order until an event must wait (a failure or a 410); returns true if
    /// the daemon is stopping.
    async fn deliver_batch(
        &self,
        mut state: EndpointState,
        batch: Vec<StoredEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let url = &self.endpoint.key;
        let mut skipped_to = None;
        for event in batch {
            if !self.endpoint.wants(&event.kind) {
                skipped_to = Some(event.seq);
                continue;
            }
            let request = match self.endpoint.route.request(&event, now_ms() / 1000).await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    skipped_to = Some(event.seq);
                    continue;
                }
                Err(e) => {
                    self.route_error(&e);
                    let _ = sleep_or_stop(Duration::from_secs(1), stop).await;
                    break;
                }
            };
            if let Some(seq) = skipped_to.take() {
                if let Err(e) = self.store.skip_events(url, seq).await {
                    self.store_error(&e);
                    return false;
                }
            }
            let answer = tokio::select! {
                a = self.post(request) => a,
                // An attempt in flight is abandoned, not awaited: the event stays the head and
                // goes again, under the same webhook-id, after the restart.
                _ = stop.wait_for(|s| *s) => return true,
            };
            let now = now_ms();
            let answer = match answer {
                Answer::Gone if !self.endpoint.gone_disables => Answer::GoneForThisEvent,
                a => a,
            };
            let result = judge(&state, event.seq, answer, self.endpoint.retry_period, now);
            if let Err(e) = self
                .store
                .record_attempt(url, event.seq, result.clone(), now)
                .await
            {
                self.store_error(&e);
                return false;
            }
            match result {
                AttemptResult::Delivered => {
                    self.count("delivered");
                    state.cursor = event.seq;
                    state.head_seq = None;
                }
                AttemptResult::Dead { error } => {
                    self.count("dead");
                    tracing::error!(
                        endpoint = %self.endpoint.label,
                        event = %event.id,
                        seq = event.seq,
                        error = %error,
                        "webhook event dead: its retry period is over; it stays readable at \
                         GET /v1/events"
                    );
                    state.cursor = event.seq;
                    state.head_seq = None;
                }
                AttemptResult::Retry {
                    next_attempt_at,
                    error,
                } => {
                    self.count("failed");
                    tracing::warn!(
                        endpoint = %self.endpoint.label,
                        event = %event.id,
                        seq = event.seq,
                        error = %error,
                        retry_in_ms = next_attempt_at - now,
                        "webhook delivery failed; will retry"
                    );
                    return false;
                }
                AttemptResult::Gone => {
                    self.count("gone");
                    return false;
                }
            }
        }
        if let Some(seq) = skipped_to {
            if let Err(e) = self.store.skip_events(url, seq).await {
                self.store_error(&e);
            }
        }
        false
    }

    /// One signed POST, off the async threads (ureq blocks).
    async fn post(&self, request: Request) -> Answer {
        let Request { url, rendered } = request;
        let agent = if is_loopback_url(&url) {
            self.direct.clone()
        } else {
            self.proxied.clone()
        };
        let task = tokio::task::spawn_blocking(move || {
            let mut request = agent.post(&url).content_type(rendered.content_type);
            for (name, value) in &rendered.headers {
                request = request.header(*name, value);
            }
            match request.send(&rendered.body[..]) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                    // Read (a bounded part of) the answer so the connection can be reused.
                    let _ = response
                        .body_mut()
                        .with_config()
                        .limit(MAX_ANSWER_BYTES)
                        .read_to_vec();
                    match status {
                        200..=299 => Answer::Accepted,
                        410 => Answer::Gone,
                        _ => Answer::Refused {
                            why: format!("answered {status}"),
                            retry_after,
                        },
                    }
                }
                Err(e) => Answer::Refused {
                    why: e.to_string(),
                    retry_after: None,
                },
            }
        });
        task.await.unwrap_or_else(|e| Answer::Refused {
            why: format!("delivery task failed: {e}"),
            retry_after: None,
        })
    }

    /// Updates the endpoint's gauges from its state.
    async fn publish(&self, state: &EndpointState) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let latest = self.store.last_event_seq().await.unwrap_or(state.cursor);
        metrics.set_webhook_endpoint(
            &self.endpoint.label,
            state.disabled.is_some(),
            latest.saturating_sub(state.cursor).max(0) as u64,
        );
    }

    fn count(&self, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.record_webhook(&self.endpoint.label, result);
        }
    }

    fn route_error(&self, e: &str) {
        if let Some(suppressed) = STORE_ERRORS.admit() {
            tracing::error!(
                endpoint = %self.endpoint.label,
                error = %e,
                suppressed,
                "webhook worker: cannot prepare an event's request; retrying"
            );
        }
    }

    fn store_error(&self, e: &crate::store::StoreError) {
        if let Some(suppressed) = STORE_ERRORS.admit() {
            tracing::error!(
                endpoint = %self.endpoint.label,
                error = %e,
                suppressed,
                "webhook worker: store error; retrying"
            );
        }
    }
}

/// The store's verdict for one answer to event `seq`: delivered, gone, dead once the retry
/// period since the event's first failure is over, else retry after the backoff. The last retry
/// is moved to the end of the period, so an event is tried once more just before it is dead.
fn judge(
    state: &EndpointState,
    seq: i64,
    answer: Answer,
    retry_period: Duration,
    now: Millis,
) -> AttemptResult {
    let (error, retry_after) = match answer {
        Answer::Accepted => return AttemptResult::Delivered,
        Answer::Gone => return AttemptResult::Gone,
        Answer::GoneForThisEvent => {
            return AttemptResult::Dead {
                error: "answered 410 Gone".into(),
            };
        }
        Answer::Refused { why, retry_after } => (why, retry_after),
    };
    let same_head = state.head_seq == Some(seq);
    let failures = if same_head { state.attempts + 1 } else { 1 };
    let first_failure = match state.first_failure_at {
        Some(at) if same_head => at,
        _ => now,
    };
    let give_up_at = first_failure + retry_period.as_millis() as Millis;
    if now >= give_up_at {
        return AttemptResult::Dead { error };
    }
    let wait = backoff(failures, retry_after).as_millis() as Millis;
    AttemptResult::Retry {
        next_attempt_at: (now + wait).min(give_up_at),
        error,
    }
}

/// The wait before attempt `failures + 1`: 1 s, doubling, at most [`MAX_BACKOFF`]; a receiver's
/// `Retry-After` lengthens it (never shortens it).
fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled
        .min(MAX_BACKOFF)
        .max(retry_after.unwrap_or(Duration::ZERO))
}

/// Sleeps `d`; true if the daemon started stopping meanwhile.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_retries_until_the_period_is_over_then_the_event_is_dead() {
        let refused = || Answer::Refused {
            why: "answered 500".into(),
            retry_after: None,
        };
        let mut state = EndpointState {
            cursor: 4,
            head_seq: None,
            attempts: 0,
            first_failure_at: None,
            next_attempt_at: None,
            disabled: None,
            delivered: 0,
            dead: 0,
            last_error: None,
        };
        let period = Duration::from_secs(60);
        assert_eq!(
            judge(&state, 5, Answer::Accepted, period, 1_000),
            AttemptResult::Delivered
        );
        assert_eq!(
            judge(&state, 5, Answer::Gone, period, 1_000),
            AttemptResult::Gone
        );
        // The first failure of event 5 starts its period.
        assert_eq!(
            judge(&state, 5, refused(), period, 1_000),
            AttemptResult::Retry {
                next_attempt_at: 2_000,
                error: "answered 500".into()
            }
        );
        state.head_seq = Some(5);
        state.attempts = 6;
        state.first_failure_at = Some(1_000);
        // 7th failure: 64 s would pass the period's end, so the last try is at its end.
        assert_eq!(
            judge(&state, 5, refused(), period, 40_000),
            AttemptResult::Retry {
                next_attempt_at: 61_000,
                error: "answered 500".into()
            }
        );
        assert_eq!(
            judge(&state, 5, refused(), period, 61_000),
            AttemptResult::Dead {
                error: "answered 500".into()
            }
        );
        // Another event's failure starts afresh.
        assert!(matches!(
            judge(&state, 6, refused(), period, 61_000),
            AttemptResult::Retry {
                next_attempt_at: 62_000,
                ..
            }
        ));
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_honours_retry_after() {
        assert_eq!(backoff(1, None), Duration::from_secs(1));
        assert_eq!(backoff(2, None), Duration::from_secs(2));
        assert_eq!(backoff(5, None), Duration::from_secs(16));
        assert_eq!(backoff(11, None), MAX_BACKOFF);
        assert_eq!(backoff(1000, None), MAX_BACKOFF);
        assert_eq!(
            backoff(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(12, Some(Duration::from_secs(5))),
            MAX_BACKOFF,
            "Retry-After never shortens the backoff"
        );
    }
}
