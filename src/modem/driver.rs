//! The task behind a [`ModemHandle`](super::ModemHandle): open, initialise, serve, recover.
//!
//! Life of the task: open the port (discovering it first when the config names an identity;
//! retrying with backoff while it is absent) → initialise → serve sends, URCs and polls → on a
//! command timeout climb the recovery ladder (re-sync, CFUN reset, USB reset on this port;
//! then reopen); on EOF or an I/O error drop the port and go back to opening it. Requests that
//! arrive while the modem cannot send are answered `NotReady` at once, never queued, so the
//! dispatcher can pick another modem.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};

use super::discovery::{self, Claim};
use super::init::{self, InitError, Initialized};
use super::recovery::{self, Ladder, Outcome, Rung};
use super::state::{self, Event};
use super::{ModemConfig, ModemEvent, ModemState, ModemStatus, PartialSend, Request, SendError};
use crate::at::cmd::{self, Param};
use crate::at::{AtClient, AtError, Refusal, Urc};
use crate::pdu::{self, Pdu};
use crate::transport::{self, Backoff};

mod inbound;
mod send;

/// Undecodable PDUs arrive as fast as a broken modem or a forger sends them: one warning per
/// 10 s, with the count of the others (see `log_throttle`).
static UNDECODABLE: crate::log_throttle::Throttle =
    crate::log_throttle::Throttle::new(Duration::from_secs(10));

/// Undecodable PDUs received so far, by every driver of the process.
pub fn undecodable_pdus() -> u64 {
    UNDECODABLE.seen()
}

/// A byte stream the driver can own: a serial port, or a test's in-memory pipe.
pub(super) trait PortIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PortIo for T {}

/// An opened port and the device path it is (when there is one).
pub(super) struct Opened {
    /// The byte stream.
    pub(super) port: Box<dyn PortIo>,
    /// The device opened: the configured path, or the one discovery bound.
    pub(super) device: Option<PathBuf>,
    /// The port marked as this modem's, taken while no other modem of the process scans.
    pub(super) claim: Option<Claim>,
}

/// Serialises scanning and binding across the modems of one process: two modems probing at
/// once would find each other's ports busy (ports open exclusively) and both back off.
static BINDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What an [`Opener`] returns: discovery probes ports, so opening is asynchronous.
pub(super) type OpenFuture = Pin<Box<dyn Future<Output = Result<Opened, String>> + Send>>;

/// Opens the port afresh (at start and after every loss); an error is logged and retried.
pub(super) type Opener = Box<dyn FnMut() -> OpenFuture + Send>;

/// The opener of a real device: tokio-serial through `crate::transport`, after discovery when
/// the config names an identity.
pub(super) fn serial_opener(cfg: &ModemConfig) -> Opener {
    let id = cfg.id.clone();
    let device = cfg.device.clone();
    let identity = cfg.identity.clone();
    let scan = cfg.scan.clone();
    let baud = cfg.baud;
    Box::new(move || {
        let (id, device, identity, scan) =
            (id.clone(), device.clone(), identity.clone(), scan.clone());
        Box::pin(async move {
            let _binding = BINDING.lock().await;
            let device = match &identity {
                Some(wanted) => {
                    let expected = (!device.as_os_str().is_empty()).then_some(device.as_path());
                    discovery::find(&id, wanted, &scan, expected, baud).await?
                }
                None => device,
            };
            let port = transport::open(&device, baud)
                .map_err(|e| crate::doctor::gather::open_error_words(e, &device).0)?;
            let claim = Claim::new(&device, &id);
            Ok(Opened {
                port: Box::new(port),
                device: Some(device),
                claim: Some(claim),
            })
        })
    })
}

/// How often registration is re-checked while waiting for the network.
const REGISTRATION_POLL: Duration = Duration::from_secs(2);
/// How often signal, operator and registration are refreshed while idle.
const SIGNAL_POLL: Duration = Duration::from_secs(30);
/// How often a failure that may clear on its own (no SIM, SIM error) is re-examined.
const FAILED_RECHECK: Duration = Duration::from_secs(30);
/// `AT` attempts of the re-sync rung: a modem that merely lost its place answers at once.
const LADDER_SYNC_ATTEMPTS: u32 = 3;
/// `AT` attempts while waiting for a modem to come back from `AT+CFUN=1,1`.
const RESET_WAIT_ATTEMPTS: u32 = 5;

/// The handle side of the task: requests and the shutdown signal, kept apart from the port so
/// the task can answer requests while a long AT sequence is running.
struct Control {
    /// Requests from handles; closed when every handle is dropped.
    requests: mpsc::Receiver<Request>,
    /// Becomes true on `shutdown()`.
    shutdown: watch::Receiver<bool>,
}

enum Ctl {
    Shutdown,
    Request(Request),
}

impl Control {
    async fn next(&mut self) -> Ctl {
        tokio::select! {
            biased;
            _ = self.shutdown.wait_for(|stop| *stop) => Ctl::Shutdown,
            req = self.requests.recv() => match req {
                Some(req) => Ctl::Request(req),
                None => Ctl::Shutdown,
            },
        }
    }

    /// Runs `fut`, answering requests `NotReady` meanwhile; `None` on shutdown.
    async fn guard<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Some(out),
                ctl = self.next() => match ctl {
                    Ctl::Shutdown => return None,
                    Ctl::Request(req) => req.reject(SendError::NotReady),
                },
            }
        }
    }
}

impl Request {
    fn reject(self, error: SendError) {
        match self {
            Request::Send { reply, .. } => {
                let _ = reply.send(Err(PartialSend {
                    sent: Vec::new(),
                    error,
                }));
            }
        }
    }
}

/// One open port.
struct Conn {
    /// The AT engine over the port.
    client: AtClient,
    /// Its URCs; `None` from `recv` means the port is gone.
    urcs: mpsc::Receiver<Urc>,
    /// `+CSMS` service: 1 means `+CDS`/`+CMT` need `AT+CNMA`.
    csms_service: u8,
}

/// How a phase ended.
enum Next {
    /// Close everything and end the task.
    Shutdown,
    /// The port is gone: reopen it.
    Lost,
    /// The modem stopped answering: climb the recovery ladder.
    Reinit,
    /// The ladder wants the port closed and opened (discovered) again.
    Reopen,
    /// The modem answers but was waiting for something (a SIM): initialise again, no ladder.
    Retry,
}

/// How a climb of the ladder ended.
enum Climb {
    /// The modem answers on this port again: re-initialise.
    Recovered,
    /// Close the port and open (discover) it again.
    Reopen,
    /// Shutdown was asked for meanwhile.
    Shutdown,
}

struct Driver {
    /// Immutable configuration.
    cfg: ModemConfig,
    /// Status reports and incoming texts go here.
    events: mpsc::Sender<ModemEvent>,
    /// The published status.
    status: watch::Sender<ModemStatus>,
    /// Set once the SIM rejected the configured PIN; it is never sent again by this task.
    pin_rejected: bool,
    /// Reopen delays; reset after a successful initialisation.
    backoff: Backoff,
    /// Opens the port.
    opener: Opener,
    /// Recovery rungs tried since the modem last worked.
    ladder: Ladder,
    /// The device open now (or last), for the USB reset rung.
    device: Option<PathBuf>,
    /// Marks the open port as this modem's so other modems' scans skip it.
    claim: Option<Claim>,
}

pub(super) async fn run(
    cfg: ModemConfig,
    events: mpsc::Sender<ModemEvent>,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<ModemStatus>,
    shutdown: watch::Receiver<bool>,
    opener: Opener,
) {
    let mut ctl = Control { requests, shutdown };
    let mut d = Driver {
        cfg,
        events,
        status,
        pin_rejected: false,
        backoff: Backoff::default(),
        opener,
        ladder: Ladder::default(),
        device: None,
        claim: None,
    };
    loop {
        d.disconnected();
        let Some(port) = d.open(&mut ctl).await else {
            break;
        };
        let (r, w) = tokio::io::split(port);
        let (mut client, urcs) = crate::at::engine::spawn(r, w);
        client.set_cooldown(d.cfg.command_gap);
        let mut conn = Conn {
            client,
            urcs,
            csms_service: 0,
        };
        d.apply(Event::PortOpened);
        let next = d.session(&mut conn, &mut ctl).await;
        // Closing the engine closes the port and releases its exclusive lock.
        conn.client.close().await;
        d.claim = None;
        match next {
            Next::Shutdown => break,
            Next::Lost | Next::Reinit | Next::Reopen | Next::Retry => {
                let why = match next {
                    Next::Lost => "modem port lost",
                    Next::Reopen => "recovery ladder",
                    _ => "modem does not answer",
                };
                tracing::warn!(modem = %d.cfg.id, "{why}; reopening the port");
                let delay = d.backoff.next_delay();
                if ctl.guard(tokio::time::sleep(delay)).await.is_none() {
                    break;
                }
            }
        }
    }
    d.disconnected();
    tracing::info!(modem = %d.cfg.id, "modem driver stopped");
}

impl Driver {
    /// Publishes "disconnected". Network facts of a closed port are unknown, not "as last
    /// seen"; the identity stays, as it names the device the operator plugged in. They are
    /// cleared before the state changes, so a watcher that sees "disconnected" never sees stale
    /// facts with it.
    fn disconnected(&self) {
        self.status.send_if_modified(|s| {
            let had = s.registration.is_some() || s.operator.is_some() || s.signal_dbm.is_some();
            s.registration = None;
            s.operator = None;
            s.signal_dbm = None;
            had
        });
        self.apply(Event::PortClosed);
    }

    fn apply(&self, event: Event) {
        self.status.send_if_modified(|s| {
            let next = state::step(&s.state, &event);
            if next == s.state {
                return false;
            }
            tracing::info!(modem = %self.cfg.id, from = s.state.as_str(), to = next.as_str(), "modem state");
            if let ModemState::Failed(reason) = &next {
                tracing::error!(modem = %self.cfg.id, %reason, "modem failed");
            }
            s.state = next;
            true
        });
    }

    /// Publishes why the modem is not ready, for `GET /v1/modems`.
    fn record_error(&self, text: &str) {
        self.status.send_if_modified(|s| {
            let changed = s.last_error.as_deref() != Some(text);
            s.last_error = Some(text.to_string());
            changed
        });
    }

    fn state(&self) -> ModemState {
        self.status.borrow().state.clone()
    }

    /// Opens the port (discovering it first for identity configs), retrying with backoff;
    /// `None` on shutdown.
    async fn open(&mut self, ctl: &mut Control) -> Option<Box<dyn PortIo>> {
        let mut last_error: Option<String> = None;
        loop {
            let attempt = (self.opener)();
            match ctl.guard(attempt).await? {
                Ok(Opened {
                    port,
                    device,
                    claim,
                }) => {
                    let shown = device.as_deref().unwrap_or(&self.cfg.device).to_path_buf();
                    tracing::info!(modem = %self.cfg.id, device = %shown.display(), "port opened");
                    if self.ladder.climbing() {
                        tracing::warn!(
                            modem = %self.cfg.id,
                            rung = Rung::Rediscover.name(),
                            outcome = %format!("port {} open again", shown.display()),
                            "recovery rung"
                        );
                    }
                    self.claim = claim;
                    self.status.send_if_modified(|s| {
                        let changed = s.device != device;
                        s.device = device.clone();
                        changed
                    });
                    self.device = device;
                    return Some(port);
                }
                Err(text) => {
                    if last_error.as_deref() != Some(&text) {
                        tracing::warn!(modem = %self.cfg.id, error = %text, "cannot open modem; retrying");
                        self.record_error(&text);
                    }
                    last_error = Some(text);
                }
            }
            let delay = self.backoff.next_delay();
            ctl.guard(tokio::time::sleep(delay)).await?;
        }
    }

    /// Initialise and serve one open port until it is lost or shutdown.
    async fn session(&mut self, conn: &mut Conn, ctl: &mut Control) -> Next {
        loop {
            let init = init::initialize(
                &self.cfg,
                &mut conn.client,
                &mut self.pin_rejected,
                &self.status,
            );
            let Some(result) = ctl.guard(init).await else {
                return Next::Shutdown;
            };
            let next = match result {
                Ok(Initialized {
                    registered,
                    csms_service,
                }) => {
                    conn.csms_service = csms_service;
                    self.backoff.reset();
                    self.ladder.reset();
                    self.apply(Event::InitDone { registered });
                    // Texts that arrived while nobody listened are in the storage, announced
                    // to no one.
                    let listed = match self.cfg.store_inbound {
                        true => self.read_all_stored(conn).await,
                        false => Ok(()),
                    };
                    match listed {
                        Ok(()) => self.serve(conn, ctl).await,
                        Err(e) => link_failure(&e),
                    }
                }
                Err(InitError::Link(e)) => {
                    tracing::warn!(modem = %self.cfg.id, error = %e, "modem does not answer during init");
                    self.record_error(&format!(
                        "the modem does not answer during initialisation: {e}"
                    ));
                    match e {
                        AtError::Closed { .. } => return Next::Lost,
                        _ => Next::Reinit,
                    }
                }
                Err(InitError::Failed { reason, retry }) => {
                    self.record_error(&reason);
                    self.apply(Event::InitFailed(reason));
                    self.wait_failed(conn, ctl, retry).await
                }
            };
            match next {
                Next::Retry => {
                    tracing::info!(modem = %self.cfg.id, "initialising again");
                    self.apply(Event::CommandTimeout);
                }
                Next::Reinit => {
                    tracing::warn!(modem = %self.cfg.id, "modem stopped answering; climbing the recovery ladder");
                    self.apply(Event::CommandTimeout);
                    match self.climb(conn, ctl).await {
                        Climb::Recovered => {}
                        // The port goes back to the outer loop, which reopens it after a
                        // backoff: with an identity, by scanning for the modem again.
                        Climb::Reopen => return Next::Reopen,
                        Climb::Shutdown => return Next::Shutdown,
                    }
                }
                other => return other,
            }
        }
    }

    /// Tries rungs of the recovery ladder (module `recovery`) until one brings the modem back
    /// on this port or the port must be reopened. Each rung is logged at warn.
    async fn climb(&mut self, conn: &mut Conn, ctl: &mut Control) -> Climb {
        let sync_timeout = init::SYNC_TIMEOUT.min(self.cfg.command_timeout);
        loop {
            let rung = self.ladder.next();
            let (outcome, then) = match rung {
                Rung::Resync => {
                    let sync = init::sync(&mut conn.client, LADDER_SYNC_ATTEMPTS, sync_timeout);
                    let Some(result) = ctl.guard(sync).await else {
                        return Climb::Shutdown;
                    };
                    rung_result(result)
                }
                Rung::CfunReset => {
                    let id = &self.cfg.id;
                    let command_timeout = self.cfg.command_timeout;
                    let client = &mut conn.client;
                    let reset = async move {
                        // A hung modem may not answer the reset itself; whether it rebooted
                        // shows in whether it answers afterwards.
                        match client.command("AT+CFUN=1,1", command_timeout).await {
                            Err(e @ AtError::Closed { .. }) => return Err(e),
                            Err(e) => {
                                tracing::debug!(modem = %id, error = %e, "AT+CFUN=1,1 not answered")
                            }
                            Ok(_) => {}
                        }
                        init::sync(client, RESET_WAIT_ATTEMPTS, sync_timeout).await
                    };
                    let Some(result) = ctl.guard(reset).await else {
                        return Climb::Shutdown;
                    };
                    rung_result(result)
                }
                Rung::UsbReset => {
                    let outcome = match &self.device {
                        Some(device) => recovery::usb_reset(Path::new(discovery::SYSFS), device),
                        None => Outcome::Skipped("no device path known".into()),
                    };
                    let then = match outcome {
                        Outcome::Pending => Some(Climb::Reopen),
                        _ => None,
                    };
                    (outcome, then)
                }
                Rung::Rediscover => {
                    let how = match &self.cfg.identity {
                        Some(identity) => format!("closing the port; scanning for {identity}"),
                        None => {
                            format!("closing the port; reopening {}", self.cfg.device.display())
                        }
                    };
                    (Outcome::Skipped(how), Some(Climb::Reopen))
                }
            };
            let shown = match &outcome {
                Outcome::Skipped(how) if rung == Rung::Rediscover => how.clone(),
                other => other.describe(),
            };
            tracing::warn!(modem = %self.cfg.id, rung = rung.name(), outcome = %shown, "recovery rung");
            let recovered = outcome == Outcome::Recovered;
            self.ladder.record(rung, outcome);
            if recovered {
                return Climb::Recovered;
            }
            if let Some(then) = then {
                return then;
            }
        }
    }

    /// In `Failed`: answer requests `NotReady`; re-initialise when the SIM says it is ready (or
    /// after a while, for failures that may clear), reopen when the port goes.
    async fn wait_failed(&mut self, conn: &mut Conn, ctl: &mut Control, retry: bool) -> Next {
        let recheck = tokio::time::sleep(FAILED_RECHECK);
        tokio::pin!(recheck);
        loop {
            tokio::select! {
                ctl = ctl.next() => match ctl {
                    Ctl::Shutdown => return Next::Shutdown,
                    Ctl::Request(req) => req.reject(SendError::NotReady),
                },
                urc = conn.urcs.recv() => match urc {
                    None => return Next::Lost,
                    Some(Urc::SimReady) => {
                        return Next::Retry;
                    }
                    Some(_) => {}
                },
                _ = &mut recheck, if retry => return Next::Retry,
            }
        }
    }

    /// Ready / waiting for the network: serve requests, URCs and polls.
    async fn serve(&mut self, conn: &mut Conn, ctl: &mut Control) -> Next {
        let start = tokio::time::Instant::now();
        let mut reg_poll = tokio::time::interval_at(start + REGISTRATION_POLL, REGISTRATION_POLL);
        reg_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sig_poll = tokio::time::interval_at(start + SIGNAL_POLL, SIGNAL_POLL);
        sig_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let waiting = self.state() == ModemState::WaitingForNetwork;
            let result = tokio::select! {
                ctl = ctl.next() => match ctl {
                    Ctl::Shutdown => return Next::Shutdown,
                    Ctl::Request(Request::Send { parts, reply }) => {
                        let (result, next) = self.send(conn, parts).await;
                        let _ = reply.send(result);
                        match next {
                            Some(next) => return next,
                            None => Ok(()),
                        }
                    }
                },
                urc = conn.urcs.recv() => match urc {
                    None => return Next::Lost,
                    Some(urc) => self.on_urc(conn, urc).await,
                },
                _ = reg_poll.tick(), if waiting => self.refresh_registration(conn).await,
                _ = sig_poll.tick() => self.refresh_all(conn).await,
            };
            if let Err(e) = result {
                return link_failure(&e);
            }
        }
    }

    async fn refresh_registration(&mut self, conn: &mut Conn) -> Result<(), AtError> {
        let t = self.cfg.command_timeout;
        let stat = init::registration(&mut conn.client, t).await?;
        let registered = stat.is_some_and(cmd::reg_is_registered);
        let was_ready = self.state() == ModemState::Ready;
        self.status.send_if_modified(|s| {
            let name = stat.map(|s| cmd::reg_name(s).to_string());
            let changed = s.registration != name;
            s.registration = name;
            changed
        });
        if registered && !was_ready {
            // Before the state flips, so whoever waits for "ready" sees the operator too.
            let operator = init::operator(&mut conn.client, t).await?;
            self.status.send_modify(|s| s.operator = operator);
        }
        self.apply(Event::Registration { registered });
        Ok(())
    }

    async fn refresh_all(&mut self, conn: &mut Conn) -> Result<(), AtError> {
        let t = self.cfg.command_timeout;
        self.refresh_registration(conn).await?;
        let operator = init::operator(&mut conn.client, t).await?;
        let signal = init::signal(&mut conn.client, t).await?;
        self.status.send_if_modified(|s| {
            let changed = s.operator != operator || s.signal_dbm != signal;
            s.operator = operator;
            s.signal_dbm = signal;
            changed
        });
        Ok(())
    }

    fn emit(&self, event: ModemEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                // Never block the port's task on a slow consumer (it may be waiting for a send
                // of ours); deliver in the background instead of dropping.
                let events = self.events.clone();
                tokio::spawn(async move {
                    let _ = events.send(event).await;
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(modem = %self.cfg.id, "event receiver gone; event dropped");
            }
        }
    }
}

/// A sync's result as a rung outcome; a closed port ends the climb with a reopen.
fn rung_result(result: Result<(), AtError>) -> (Outcome, Option<Climb>) {
    match result {
        Ok(()) => (Outcome::Recovered, None),
        Err(e @ AtError::Closed { .. }) => (
            Outcome::Failed(format!("port gone ({e})")),
            Some(Climb::Reopen),
        ),
        Err(e) => (Outcome::Failed(e.to_string()), None),
    }
}

fn link_failure(e: &AtError) -> Next {
    match e {
        AtError::Closed { .. } => Next::Lost,
        _ => Next::Reinit,
    }
}
