//! The modem driver: one task owns one port; `ModemHandle` is the only way in.
//!
//! [`ModemHandle::spawn`] starts the task. It opens the port (`crate::transport`), runs the init
//! sequence (`init`), then serves sends, URCs (status reports, registration changes) and
//! periodic registration/signal polls, one AT command at a time. Its state is published on a
//! `watch` channel; its transitions are the pure rules of [`state`]. When the modem stops
//! answering it climbs the ladder of [`recovery`] (re-sync, `AT+CFUN=1,1`, USB reset, reopen),
//! logging each rung; when the port vanishes it reopens it with backoff. A modem configured by
//! identity (IMEI, ICCID, USB serial) is found by [`discovery`] before every (re)open, and the
//! port it was found at is published in [`ModemStatus::device`].
//!
//! A message's parts are sent in order with `AT+CMGS` (TS 27.005 §3.5.1). The driver never
//! retries a send: the caller (the dispatcher) owns retry policy, and [`SendError`] tells it
//! whether a retry makes sense. [`ModemHandle::send_detailed`] also reports the TP-MRs of the
//! parts that did go out before a later part failed.

pub mod discovery;
mod driver;
pub mod init;
pub mod probe;
pub mod quirks;
pub mod recovery;
pub mod state;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::pdu::{DeliveryOutcome, EncodedPart};

pub use discovery::DeviceIdentity;
pub use driver::undecodable_pdus;

/// How to reach and use one modem, derived from a `[[modem]]` table by
/// `ModemSettings::modem_config` (the driver does not know the config). `ModemConfig::new(id,
/// device)`, implemented next to that derivation, is a modem with the config's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemConfig {
    /// A stable name for logs, events and the API (e.g. "modem0").
    pub id: String,
    /// The serial device (or the simulator's link). Empty when the modem is found by
    /// `identity` alone; with an identity too, the identity must be found at this device.
    pub device: PathBuf,
    /// What the modem is (IMEI, ICCID, USB serial): when set, the driver scans `scan` for it
    /// before every (re)open, so a replug that renames the tty changes nothing.
    pub identity: Option<DeviceIdentity>,
    /// Glob patterns (`*` in the last component only) of candidate ports for `identity`.
    pub scan: Vec<String>,
    /// Serial speed; USB modems ignore it, real UARTs need the right one.
    pub baud: u32,
    /// The SIM PIN, if the SIM is locked. Tried at most once; a rejected PIN is never retried
    /// (three wrong PINs block the SIM).
    pub pin: Option<String>,
    /// Whether to ask for `+CDS` status reports via `AT+CNMI` (the PDUs themselves request them
    /// with TP-SRR, which the caller sets when encoding).
    pub delivery_reports: bool,
    /// How long one part may take from `AT+CMGS` to `+CMGS:`; the network is slow at times.
    pub send_timeout: Duration,
    /// How long any other command may take before the modem counts as hung.
    pub command_timeout: Duration,
    /// The pause kept between a final result and the next command: some modems drop a command
    /// that follows an answer too closely. It is paid once per command, so with a backlog it
    /// is most of the modem's idle time between texts; 1 ms is at least one USB full-speed frame,
    /// which is what a USB modem's serial function needs to see two commands apart.
    pub command_gap: Duration,
    /// Whether someone stores incoming texts (`[inbound] enabled`): only then are stored texts
    /// listed at start-up, and a text deleted from the SIM once its receiver says it is stored.
    pub store_inbound: bool,
}

/// How long a command other than a send may take before the modem counts as hung (not a
/// config key).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the driver is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModemState {
    /// No port open (not yet, or unplugged and waiting to reopen).
    #[default]
    Disconnected,
    /// Port open; synchronising and configuring.
    Initializing,
    /// Configured, but not registered with a network.
    WaitingForNetwork,
    /// Registered and idle: sends are accepted.
    Ready,
    /// A send is in progress.
    Sending,
    /// Cannot work without a human (no SIM, PIN rejected, PUK), with the reason.
    Failed(String),
}

impl ModemState {
    /// The state's name as the API and metrics show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModemState::Disconnected => "disconnected",
            ModemState::Initializing => "initializing",
            ModemState::WaitingForNetwork => "waiting-for-network",
            ModemState::Ready => "ready",
            ModemState::Sending => "sending",
            ModemState::Failed(_) => "failed",
        }
    }
}

/// What is known about the modem now; published on every change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModemStatus {
    /// Where the driver is.
    pub state: ModemState,
    /// The port the driver has open (or last had): for identity configs, the one discovery
    /// bound, which the operator cannot know from the config.
    pub device: Option<PathBuf>,
    /// `+CGMI`.
    pub manufacturer: Option<String>,
    /// `+CGMM`.
    pub model: Option<String>,
    /// `+CGMR`.
    pub revision: Option<String>,
    /// `+CGSN`.
    pub imei: Option<String>,
    /// The SIM's ICCID (`AT+CCID` and vendor variants): which SIM card is in the modem.
    pub iccid: Option<String>,
    /// `+CIMI` (TS 27.007 §5.6): the subscription, readable once the SIM is unlocked.
    pub imsi: Option<String>,
    /// `+CSCA?` (TS 27.005 §3.3.1): the service centre; `Some("")` when the SIM has none, which
    /// makes every send fail with `+CMS ERROR: 330`.
    pub smsc: Option<String>,
    /// Why the modem is not ready: the most recent failure to open the port or to initialise
    /// it, in words an operator can act on (e.g. "/dev/null is not a serial port, so it cannot
    /// be a modem"). Cleared when an initialisation succeeds.
    pub last_error: Option<String>,
    /// `+COPS?` operator name.
    pub operator: Option<String>,
    /// "home", "roaming", "searching", "denied", "not-registered", ...
    pub registration: Option<String>,
    /// From `+CSQ`; `None` when the modem does not know.
    pub signal_dbm: Option<i32>,
    /// Messages whose every part got a `+CMGS:` since the driver started.
    pub sent: u64,
    /// Messages whose send failed since the driver started.
    pub failed: u64,
}

/// A prepared part, as `send` takes it (the codec's type).
pub type OutgoingPart = EncodedPart;

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not sent; the same PDU may succeed later (network or SIM busy, congestion, a modem that
    /// did not open its prompt, an unknown vendor error).
    #[error("temporary failure: {0}")]
    Temporary(SendReason),
    /// Not sent and never will be (unassigned number, barred, invalid PDU, no SIM).
    #[error("permanent failure: {0}")]
    Permanent(SendReason),
    /// The PDU was written but no `+CMGS:` came back (timeout, unplug): the text may or may not
    /// be on its way. Retrying risks a duplicate; not retrying risks a loss.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The modem is not ready (initialising, no network, disconnected, failed); nothing was
    /// written.
    #[error("modem not ready")]
    NotReady,
}

/// Why a send was refused, as precisely as the modem said it: a `+CMS ERROR` (TS 27.005
/// §3.2.5) keeps its typed code rather than becoming text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendReason {
    /// The modem's `+CMS ERROR`.
    #[error("{0}")]
    Cms(crate::at::CmsError),
    /// Anything else, in words.
    #[error("{0}")]
    Other(String),
}

impl From<String> for SendReason {
    fn from(text: String) -> Self {
        SendReason::Other(text)
    }
}

impl From<&str> for SendReason {
    fn from(text: &str) -> Self {
        SendReason::Other(text.to_string())
    }
}

/// A send that failed after some parts went out: which ones did, and why the rest did not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (after {} part(s) sent)", sent.len())]
pub struct PartialSend {
    /// TP-MRs of the parts that got a `+CMGS:`, in order (parts 1..=len).
    pub sent: Vec<u8>,
    /// Why part `sent.len() + 1` failed.
    pub error: SendError,
}

/// The answer an incoming text's receiver owes the driver: the SIM's copy (or the network's
/// `+CNMA`) is the text's only other home, so the driver lets go of it only once the receiver
/// said the text is stored. Dropping it unanswered means "not stored".
#[derive(Debug)]
pub struct Custody(oneshot::Sender<bool>);

impl Custody {
    /// A custody and the receiver the driver waits on.
    pub fn new() -> (Custody, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        (Custody(tx), rx)
    }

    /// The text is committed: the driver may delete or acknowledge it.
    pub fn stored(self) {
        let _ = self.0.send(true);
    }

    /// The text could not be stored: the driver keeps it (on the SIM) or does not acknowledge
    /// it, so that it comes again.
    pub fn failed(self) {
        let _ = self.0.send(false);
    }
}

impl PartialEq for Custody {
    // A reply channel is not part of what an event says.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Custody {}

/// Something the modem reported on its own.
#[derive(Debug, PartialEq, Eq)]
pub enum ModemEvent {
    /// A `+CDS` SMS-STATUS-REPORT (TS 23.040 §9.2.2.3) for a part this modem sent.
    StatusReport {
        /// Which modem sent the part: TP-MRs are per modem.
        modem_id: String,
        /// TP-MR of the part.
        message_reference: u8,
        /// TP-RA, e.g. "+15551234567": guards against a TP-MR that wrapped around.
        recipient: String,
        /// TP-ST, raw.
        status: u8,
        /// TP-ST grouped.
        outcome: DeliveryOutcome,
        /// TP-DT in RFC 3339, when the status was reached.
        discharge_time: Option<String>,
    },
    /// A text that arrived (`+CMT`, or `+CMTI` read back with `AT+CMGR`).
    Incoming {
        /// The receiving modem.
        modem_id: String,
        /// The sender's number or name.
        from: String,
        /// The decoded text (one part; concatenated texts arrive part by part).
        text: String,
        /// The part's UTF-16 units when it is UCS-2 and holds half a surrogate pair: a sender
        /// that splits one character between two parts leaves U+FFFD in `text`, and only the
        /// joined units of both parts give the character back.
        split_units: Option<Vec<u16>>,
        /// TP-SCTS (TS 23.040 §9.2.3.11) in RFC 3339 with the SMSC's offset.
        sc_timestamp: String,
        /// The concatenation element of the UDH (TS 23.040 §9.2.3.24.1, .8), if any.
        concat: Option<crate::pdu::Concat>,
        /// Set when the driver waits to hear that the text is stored before it deletes it
        /// from the SIM or acknowledges it (`ModemConfig::store_inbound`).
        custody: Option<Custody>,
    },
}

/// A request from a handle to the task.
#[derive(Debug)]
enum Request {
    Send {
        parts: Vec<EncodedPart>,
        reply: oneshot::Sender<Result<Vec<u8>, PartialSend>>,
    },
}

/// Shared by all clones of a handle; dropping the last one drops `requests`, which ends the task.
#[derive(Debug)]
struct Inner {
    /// The modem's id, copied out of the config for `id()`.
    id: String,
    /// The way into the task.
    requests: mpsc::Sender<Request>,
    /// The published status.
    status: watch::Receiver<ModemStatus>,
    /// Tells the task to close the port and end.
    shutdown: watch::Sender<bool>,
    /// The task, awaited by the first `shutdown()`.
    task: Mutex<Option<JoinHandle<()>>>,
}

/// The only way to talk to a modem. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModemHandle {
    /// Shared state of all clones.
    inner: Arc<Inner>,
}

impl ModemHandle {
    /// Starts the task that owns the port; it runs until `shutdown()` or until every handle is
    /// dropped. Must be called inside a tokio runtime.
    pub fn spawn(config: ModemConfig, events: mpsc::Sender<ModemEvent>) -> ModemHandle {
        let opener = driver::serial_opener(&config);
        Self::spawn_with(config, events, opener)
    }

    /// As `spawn`, over whatever `opener` returns (tests pass in-memory pipes).
    fn spawn_with(
        config: ModemConfig,
        events: mpsc::Sender<ModemEvent>,
        opener: driver::Opener,
    ) -> ModemHandle {
        let (req_tx, req_rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(ModemStatus::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let id = config.id.clone();
        let task = tokio::spawn(driver::run(
            config,
            events,
            req_rx,
            status_tx,
            shutdown_rx,
            opener,
        ));
        ModemHandle {
            inner: Arc::new(Inner {
                id,
                requests: req_tx,
                status: status_rx,
                shutdown: shutdown_tx,
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Closes the port cleanly and waits for the task to end. A send in progress finishes
    /// first (its outcome must be known).
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        // The lock is held while waiting, so a second caller returns only once the task ended.
        let mut task = self.inner.task.lock().await;
        if let Some(task) = task.take() {
            let _ = task.await;
        }
    }

    /// The modem's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// A receiver of the modem's status; `borrow()` for now, `changed()` to wait.
    pub fn status(&self) -> watch::Receiver<ModemStatus> {
        self.inner.status.clone()
    }

    /// Sends all parts of one message in order; Ok(TP-MR of each part).
    pub async fn send(&self, parts: Vec<EncodedPart>) -> Result<Vec<u8>, SendError> {
        self.send_detailed(parts).await.map_err(|p| p.error)
    }

    /// As [`ModemHandle::send`], but a failure also says which parts went out (their TP-MRs), so
    /// status reports for them can still be matched.
    pub async fn send_detailed(&self, parts: Vec<EncodedPart>) -> Result<Vec<u8>, PartialSend> {
        let not_ready = || PartialSend {
            sent: Vec::new(),
            error: SendError::NotReady,
        };
        let (reply, rx) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Send { parts, reply })
            .await
            .map_err(|_| not_ready())?;
        rx.await.map_err(|_| not_ready())?
    }
}
