//! The connection loop under the router: accepts TCP connections up to a cap, serves HTTP/1.1 on
//! each with hyper, and closes a connection whose client is too slow in the phase it is in.
//!
//! `axum::serve` keeps every connection for as long as the client likes: an idle keep-alive
//! connection, a request head sent half-way, a body that never ends each hold a file descriptor
//! and buffers forever, and its graceful shutdown waits for all of them. An unauthenticated local
//! client could so exhaust the file limit (every later `accept` fails, `/healthz` included) and
//! block a `SIGTERM`. Here every connection is in one of four phases, each with its own clock:
//!
//! - **idle**: waiting for the first byte of a request (`api.idle_timeout_seconds`);
//! - **head**: from that byte until the request head is complete (`api.header_timeout_seconds`);
//! - **body**: from the head until the handler has read (or dropped) the body
//!   (`api.body_timeout_seconds`);
//! - **handling**: the handler works and the answer is written; no clock (the handlers bound
//!   their own waits, and answers are small enough for the socket buffer).
//!
//! A clock runs out only while the connection waits for the client: the check lives in the
//! stream's `poll_read`, which hyper polls exactly when it needs client bytes. At most
//! `api.max_connections` connections are open; the next one waits in the kernel's accept
//! backlog until one closes, so a flood costs a bounded number of descriptors and a bounded
//! amount of memory (hyper's read buffer is capped at [`MAX_BUF`]). On shutdown the listener
//! closes, connections that are idle or still sending a head are dropped at once, and a request
//! being handled gets [`SHUTDOWN_GRACE`] to finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// hyper's read buffer limit per connection, which also bounds a request head. The API's heads
/// are a few hundred bytes; hyper's own default (about 400 KiB) let a thousand half-sent heads
/// take hundreds of megabytes.
pub const MAX_BUF: usize = 16 * 1024;

/// How long a request being handled may take to finish once shutdown has begun.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Descriptors kept free of connections for the store, the modems, the simulator and the log.
const RESERVED_FDS: usize = 64;

/// What bounds a connection (`[api]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// An idle keep-alive connection (or a fresh one that sent nothing) is closed after this.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
    /// Connections open at once; more wait in the accept backlog.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

/// `wanted`, lowered so that connections alone cannot use up the soft `RLIMIT_NOFILE`
/// (`None` when the limit cannot be read or is unlimited).
pub fn connection_cap(wanted: usize, nofile: Option<u64>) -> usize {
    match nofile {
        Some(limit) => {
            let room = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(RESERVED_FDS);
            wanted.min(room).max(1)
        }
        None => wanted.max(1),
    }
}

/// The soft limit on open files of this process.
pub fn nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// Serves `router` on `listener` until `shutdown` completes, then closes every connection
/// within [`SHUTDOWN_GRACE`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let cap = connection_cap(limits.max_connections, nofile_limit());
    if cap < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            cap,
            "api.max_connections is above what the open-file limit allows; raise LimitNOFILE \
             (ulimit -n) or lower it"
        );
    }
    let slots = Arc::new(Semaphore::new(cap));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE/ENFILE/ECONNABORTED: transient; retrying at once would spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let closing = closing_rx.clone();
        let router = router.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, limits, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = closing_tx.send(true);
    // Every connection gives its slot back once it is closed.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace; leaving them");
    }
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let clock = Arc::new(ConnClock::new(limits));
    let io = TokioIo::new(TimedStream::new(stream, clock.clone()));
    let service = ConnService {
        router,
        clock: clock.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.max_buf_size(MAX_BUF);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            log_end(result);
            return;
        }
        _ = closing.wait_for(|c| *c) => {}
    }
    // Shutdown: nobody waits for an answer on a connection that is idle or has not finished
    // its request head.
    if matches!(clock.phase(), Phase::Idle | Phase::Head) {
        return;
    }
    conn.as_mut().graceful_shutdown();
    match tokio::time::timeout(SHUTDOWN_GRACE, conn).await {
        Ok(result) => log_end(result),
        Err(_) => tracing::debug!("HTTP connection dropped at the end of the shutdown grace"),
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        // Timeouts land here, the phase that ran out named in the I/O error under hyper's.
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        tracing::debug!(error = %e, cause = cause.as_deref().unwrap_or(""), "HTTP connection closed");
    }
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the first byte of a request.
    Idle,
    /// Reading a request head.
    Head,
    /// The handler may be reading the request body.
    Body,
    /// The handler works; the answer is being written.
    Handling,
}

/// One connection's phase and when it began, shared by the stream, the service and the bodies.
#[derive(Debug)]
pub struct ConnClock {
    limits: ConnLimits,
    state: Mutex<ClockState>,
}

#[derive(Debug)]
struct ClockState {
    phase: Phase,
    since: Instant,
    /// The read waiting on the stream: a phase change may start a clock for it (hyper may
    /// already wait for the next request when it drops the previous answer).
    reader: Option<Waker>,
}

impl ConnClock {
    /// A fresh connection: idle since now.
    pub fn new(limits: ConnLimits) -> ConnClock {
        ConnClock {
            limits,
            state: Mutex::new(ClockState {
                phase: Phase::Idle,
                since: Instant::now(),
                reader: None,
            }),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        // The critical sections cannot panic; a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, phase: Phase) {
        self.change(None, phase);
    }

    /// `from` → `to`, only if the connection is in `from`.
    fn advance(&self, from: Phase, to: Phase) {
        self.change(Some(from), to);
    }

    fn change(&self, from: Option<Phase>, to: Phase) {
        let reader = {
            let mut state = self.lock();
            if from.is_some_and(|from| from != state.phase) {
                return;
            }
            state.phase = to;
            state.since = Instant::now();
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Remembers the waiting read, to be woken by the next phase change.
    fn park(&self, reader: &Waker) {
        let mut state = self.lock();
        match &state.reader {
            Some(w) if w.will_wake(reader) => {}
            _ => state.reader = Some(reader.clone()),
        }
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        self.advance(Phase::Idle, Phase::Head);
    }

    /// When the current phase runs out, and what it is called in the error.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        let (phase, since) = {
            let state = self.lock();
            (state.phase, state.since)
        };
        match phase {
            Phase::Idle => Some((since + self.limits.idle_timeout, "idle timeout")),
            Phase::Head => Some((since + self.limits.header_timeout, "request head timeout")),
            Phase::Body => Some((since + self.limits.body_timeout, "request body timeout")),
            Phase::Handling => None,
        }
    }
}

/// The TCP stream, failing a read with `TimedOut` once the connection's phase has run out.
struct TimedStream {
    inner: TcpStream,
    clock: Arc<ConnClock>,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
}

impl TimedStream {
    fn new(inner: TcpStream, clock: Arc<ConnClock>) -> TimedStream {
        TimedStream {
            inner,
            clock,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: None,
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.clock.on_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.clock.park(cx.waker());
                let Some((deadline, what)) = self.clock.deadline() else {
                    return Poll::Pending;
                };
                if self.armed != Some(deadline) {
                    self.sleep.as_mut().reset(deadline);
                    self.armed = Some(deadline);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service, moving the connection's clock along.
#[derive(Clone)]
struct ConnService {
    router: Router,
    clock: Arc<ConnClock>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = hyper::Response<AnswerBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let clock = self.clock.clone();
        if http_body::Body::is_end_stream(req.body()) {
            clock.enter(Phase::Handling);
        } else {
            clock.enter(Phase::Body);
        }
        let req = req.map(|body| {
            Body::new(RequestBody {
                inner: body,
                clock: clock.clone(),
            })
        });
        let router = self.router.clone();
        Box::pin(async move {
            let resp = match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok(resp.map(|inner| AnswerBody { inner, clock }))
        })
    }
}

/// The request body; the body phase ends when it is read to the end or dropped.
struct RequestBody {
    inner: Incoming,
    clock: Arc<ConnClock>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.clock.advance(Phase::Body, Phase::Handling);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        self.clock.advance(Phase::Body, Phase::Handling);
    }
}

/// The answer's body; hyper drops it once it is written, which makes the connection idle.
struct AnswerBody {
    inner: Body,
    clock: Arc<ConnClock>,
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.clock.enter(Phase::Idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_under_the_file_limit() {
        assert_eq!(connection_cap(256, None), 256);
        assert_eq!(connection_cap(256, Some(65_536)), 256);
        assert_eq!(connection_cap(2048, Some(1024)), 1024 - RESERVED_FDS);
        assert_eq!(connection_cap(256, Some(10)), 1);
    }

    #[test]
    fn each_phase_has_its_own_clock() {
        let limits = ConnLimits {
            idle_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            max_connections: 1,
        };
        let clock = ConnClock::new(limits);
        // Each phase's deadline is its own limit after the phase began.
        let check = |before: Instant, limit: Duration, name: &str| {
            let (deadline, what) = clock.deadline().expect("a clock runs");
            assert!(deadline >= before + limit && deadline <= Instant::now() + limit);
            assert_eq!(what, name);
        };
        check(
            Instant::now() - Duration::from_millis(50),
            limits.idle_timeout,
            "idle timeout",
        );
        let head_began = Instant::now();
        clock.on_read();
        assert_eq!(clock.phase(), Phase::Head);
        check(head_began, limits.header_timeout, "request head timeout");
        // More bytes of the same head do not restart its clock.
        let (first, _) = clock.deadline().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        clock.on_read();
        assert_eq!(clock.deadline().unwrap().0, first);
        let body_began = Instant::now();
        clock.enter(Phase::Body);
        check(body_began, limits.body_timeout, "request body timeout");
        clock.advance(Phase::Body, Phase::Handling);
        assert_eq!(clock.deadline(), None);
        // Bytes while handling (a pipelined request) do not start a head clock, and a late
        // end of the request body does not undo the answer's end.
        clock.on_read();
        assert_eq!(clock.phase(), Phase::Handling);
        clock.enter(Phase::Idle);
        clock.advance(Phase::Body, Phase::Handling);
        assert_eq!(clock.phase(), Phase::Idle);
    }
}
