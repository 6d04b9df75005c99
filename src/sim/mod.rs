//! The simulated modem: a pseudo-terminal that answers AT commands like a USB dongle.
//!
//! `simgate sim` and `serve --simulate` run one. Clients open the symlink at
//! [`SimOptions::link`] as a serial port and talk TS 27.005 / 27.007 to it; every SMS the
//! "network" accepts is appended to the JSON-lines log of SPEC.md.
//!
//! Layers: [`cmdline`] splits command lines (pure), [`core`] is the modem as a state machine
//! (bytes in, [`core::Action`]s out; time and randomness are arguments), [`log`] reassembles
//! concatenated messages (pure), `pty` owns the pseudo-terminal, and the runner below moves
//! bytes between them and carries out timers, delays, unplugs and log writes. [`Faults`] are
//! the failures on demand: the core and the runner read them from the same [`SimOptions`].
//!
//! It shares the PDU codec with the daemon but never its AT engine, so it stays an independent
//! modem the engine can be tested against.

pub mod cmdline;
pub mod control;
pub mod core;
mod faults;
mod handle;
pub mod inbound;
pub mod log;
mod pty;
pub mod submit;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::control::{Controller, Job, JobMsg, Shared};
use self::core::control::{Control, apply_to_options};
use self::core::{Action, Core, Event};
use crate::datadir::{self, Lock};

pub use self::faults::{Faults, ReportOutcome, ReportRule, ReportTarget};
pub use self::handle::{Sim, SimBuilder};

/// The ICCID of the simulated SIM unless `--iccid` says otherwise: issuer 89 (telecom), country
/// 001 (the test network of TS 23.003, like the IMSI).
pub const DEFAULT_ICCID: &str = "89001012012345678905";

/// The `n`-th identity after `digits` (an IMEI or an ICCID, check digit last): the body read as
/// a number plus `n`, same width, and its Luhn check digit recomputed (TS 23.003 §6.2.1 for
/// the IMEI, ITU-T E.118 for the ICCID), so several simulated modems are told apart the way
/// real ones are; the 0th is `digits` as given. `None` when `digits` is not all digits.
pub fn nth_identity(digits: &str, n: u64) -> Option<String> {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if n == 0 {
        return Some(digits.to_string());
    }
    let body = &digits[..digits.len() - 1];
    // Add from the right so a body longer than u64 still works.
    let mut out: Vec<u8> = body.bytes().map(|b| b - b'0').collect();
    let mut carry = n;
    for d in out.iter_mut().rev() {
        if carry == 0 {
            break;
        }
        let v = u64::from(*d) + carry % 10;
        *d = (v % 10) as u8;
        carry = carry / 10 + v / 10;
    }
    let sum: u32 = out
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    let check = (10 - sum % 10) % 10;
    let mut s: String = out.iter().map(|d| char::from(b'0' + d)).collect();
    s.push(char::from(b'0' + check as u8));
    Some(s)
}
use self::log::Reassembler;
use self::pty::Pty;

/// Which vendor's modem the simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A plain TS 27.007 modem with no unsolicited chatter.
    #[default]
    Generic,
    /// A Huawei E3372-like stick: `^RSSI`/`^MODE`/`^BOOT` lines at random times, even between
    /// an information line and its `OK`, until `AT^CURC=0`.
    Huawei,
    /// A SIMCom SIM800: `RDY`, `+CFUN: 1`, `+CPIN: READY`, `Call Ready`, `SMS Ready` after
    /// power-on and reset.
    Simcom,
    /// A Quectel EC25: `RDY`, `+CFUN: 1`, `+CPIN: READY`, `+QIND: SMS DONE`.
    Quectel,
}

impl Profile {
    /// Parses a profile name as the CLI takes it.
    pub fn parse(s: &str) -> Option<Profile> {
        match s.to_ascii_lowercase().as_str() {
            "generic" => Some(Profile::Generic),
            "huawei" => Some(Profile::Huawei),
            "simcom" => Some(Profile::Simcom),
            "quectel" => Some(Profile::Quectel),
            _ => None,
        }
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Generic => "generic",
            Profile::Huawei => "huawei",
            Profile::Simcom => "simcom",
            Profile::Quectel => "quectel",
        }
    }
}

/// Everything a simulator is started with; `Default` is a well-behaved generic modem.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Where the symlink to the pty's serial end goes: the path clients open.
    pub link: PathBuf,
    /// Which vendor's modem to imitate.
    pub profile: Profile,
    /// The IMEI `AT+CGSN` answers; `None` keeps the profile's. Lets two simulators be told
    /// apart by identity (a `[[modem]]` configured by `imei`).
    pub imei: Option<String>,
    /// The SIM's ICCID `AT+CCID` answers; `None` keeps [`DEFAULT_ICCID`].
    pub iccid: Option<String>,
    /// The JSON-lines log of accepted messages; `None` logs nothing.
    pub log: Option<PathBuf>,
    /// Seeds the RNG behind `error_rate`, TP-MR and Huawei noise so runs are repeatable.
    pub seed: u64,
    /// The SIM's PIN: the SIM starts locked and wants `AT+CPIN="<pin>"`.
    pub pin: Option<String>,
    /// What goes wrong, and when.
    pub faults: Faults,
    /// Texts (sender, text) the network delivers to the SIM `incoming_after` after the client
    /// first enables new-message indications (`AT+CNMI` with <mt> other than 0).
    pub incoming: Vec<(String, String)>,
    /// See [`SimOptions::incoming`].
    pub incoming_after: Duration,
}

impl Default for SimOptions {
    fn default() -> SimOptions {
        SimOptions {
            link: std::env::temp_dir().join("simgate-sim"),
            profile: Profile::Generic,
            imei: None,
            iccid: None,
            log: None,
            seed: 0,
            pin: None,
            faults: Faults::default(),
            incoming: Vec::new(),
            incoming_after: Duration::from_secs(1),
        }
    }
}

/// A running simulator. Dropping it (or [`Simulator::stop`]) ends it and removes the link.
pub struct Simulator {
    /// The symlink clients open.
    link: PathBuf,
    /// The pty's device path at start (`/dev/pts/N`).
    device: PathBuf,
    /// Tells the task to end.
    shutdown: Option<oneshot::Sender<()>>,
    /// The task, awaited by `stop`.
    task: Option<JoinHandle<()>>,
    /// `<link>.lock`, held while the simulator runs; dropped after the link is removed.
    _lock: Lock,
    /// The way in for run-time changes; also keeps the runner's job channel open.
    controller: Controller,
}

/// The lock file beside a simulator's link: `<link>.lock`.
pub fn lock_path(link: &Path) -> PathBuf {
    let mut name = link.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Simulator {
    /// Opens the pty, creates the link and starts answering. Fails when the link path is taken
    /// by something other than a symlink, or the log cannot be opened.
    pub async fn start(opts: SimOptions) -> std::io::Result<Simulator> {
        // Before touching the link: a second simulator on it would take the link over and
        // remove it on exit, under the first one's client.
        let lock = Lock::acquire(&lock_path(&opts.link), "simulator link", &opts.link)?;
        // The log holds OTP texts in clear: owner-only, never through a symlink.
        let log = match &opts.log {
            Some(path) => Some(open_log(path)?),
            None => None,
        };
        let pty = Pty::open(&opts.link)?;
        let device = pty.device.clone();
        tracing::info!(link = %opts.link.display(), device = %device.display(), profile = opts.profile.name(), "sim: started");
        let (tx, rx) = oneshot::channel();
        let link = opts.link.clone();
        let shared = Shared::new(&link, &device, Core::new(opts.clone()).identity());
        let (jobs_tx, jobs) = mpsc::channel(64);
        let controller = Controller::new(jobs_tx, shared.clone());
        let task = tokio::spawn(run(opts, pty, log, rx, jobs, shared));
        Ok(Simulator {
            link,
            device,
            shutdown: Some(tx),
            task: Some(task),
            _lock: lock,
            controller,
        })
    }

    /// A handle for run-time changes and reads (the operations of the control socket).
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// The symlink clients open.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// The pty device the link pointed at when the simulator started.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Ends the simulator, waits for it, and removes the link.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // The task may never run again (runtime shutting down): remove the link here too.
            task.abort();
            if std::fs::symlink_metadata(&self.link).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(&self.link);
            }
        }
    }
}

/// Timers of one pty generation, earliest first.
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, EventSlot)>>,
    seq: u64,
}

/// Wraps an event so the heap orders by time and insertion only.
struct EventSlot(Event);

impl PartialEq for EventSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for EventSlot {}
impl PartialOrd for EventSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EventSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Timers {
    fn new() -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn push(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, EventSlot(event))));
    }

    fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    fn pop(&mut self) -> Option<Event> {
        self.heap.pop().map(|Reverse((_, _, e))| e.0)
    }
}

/// What ended one pty generation.
enum GenEnd {
    Shutdown,
    /// Unplugged by a fault (`replug_after` of the faults applies) or by the control
    /// socket, with its own plan.
    Unplugged(Option<ReplugPlan>),
}

/// When and where a modem unplugged through the control socket comes back.
struct ReplugPlan {
    /// `None`: only on a `replug` request.
    after: Option<Duration>,
    /// Another link name to come back at.
    link: Option<PathBuf>,
}

/// What the runner carries across generations.
struct Runner {
    started: Instant,
    sink: Sink,
    shutdown: oneshot::Receiver<()>,
    jobs: mpsc::Receiver<JobMsg>,
    shared: Arc<Shared>,
}

/// Where accepted messages go: the log file and the control socket's copy.
struct Sink {
    reassembler: Reassembler,
    log: Option<std::fs::File>,
    shared: Arc<Shared>,
}

async fn run(
    opts: SimOptions,
    mut pty: Pty,
    log: Option<std::fs::File>,
    shutdown: oneshot::Receiver<()>,
    jobs: mpsc::Receiver<JobMsg>,
    shared: Arc<Shared>,
) {
    let mut r = Runner {
        started: Instant::now(),
        sink: Sink {
            reassembler: Reassembler::default(),
            log,
            shared: shared.clone(),
        },
        shutdown,
        jobs,
        shared,
    };
    let mut cfg = opts.clone();
    // The lock of a link other than the first one, taken when the modem comes back there.
    let mut _moved_lock: Option<Lock> = None;
    // Where the modem is now: a replug may have moved it.
    let mut current = opts.link.clone();
    loop {
        let (end, next) = r.generation(&mut pty, Core::new(cfg.clone())).await;
        pty.remove_link();
        // Run-time changes (network, faults, report rules) survive the replug.
        cfg = next;
        let plan = match end {
            GenEnd::Shutdown => return,
            GenEnd::Unplugged(plan) => plan,
        };
        r.shared.unplugged();
        drop(pty);
        let (mut after, mut link) = match plan {
            Some(p) => (p.after, p.link.unwrap_or_else(|| current.clone())),
            None => (cfg.faults.replug_after, current.clone()),
        };
        if after.is_none() {
            tracing::info!("sim: unplugged; staying gone until replugged or stopped");
        }
        let deadline = after.take().map(|d| Instant::now() + d);
        loop {
            tokio::select! {
                _ = &mut r.shutdown => return,
                _ = sleep_until_opt(deadline) => break,
                Some((job, reply)) = r.jobs.recv() => match job {
                    Job::Replug { link: l } => {
                        if let Some(l) = l {
                            link = l;
                        }
                        let _ = reply.send(Ok(core::control::Reply::Done));
                        break;
                    }
                    Job::Unplug { .. } => {
                        let _ = reply.send(Err("the modem is already unplugged".into()));
                    }
                    Job::Core(c) => {
                        let answer = apply_to_options(&c, &mut cfg)
                            .ok_or_else(|| "the modem is unplugged; replug it first".to_string());
                        let _ = reply.send(answer);
                    }
                },
            }
        }
        if link != opts.link
            && _moved_lock
                .as_ref()
                .is_none_or(|l| l.path() != lock_path(&link))
        {
            match Lock::acquire(&lock_path(&link), "simulator link", &link) {
                Ok(l) => _moved_lock = Some(l),
                Err(e) => {
                    tracing::error!("sim: replug at {} failed: {e}", link.display());
                    eprintln!("sim: replug at {} failed: {e}", link.display());
                    let _ = (&mut r.shutdown).await;
                    return;
                }
            }
        }
        pty = match Pty::open(&link) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("sim: replug failed: {e}");
                eprintln!("sim: replug failed: {e}");
                let _ = (&mut r.shutdown).await;
                return;
            }
        };
        tracing::info!(device = %pty.device.display(), link = %link.display(), "sim: replugged");
        eprintln!("sim: replugged at {}", pty.device.display());
        // A replugged modem has rebooted, but the unplug fault fires once, and the network
        // delivered its texts to the modem that went away.
        cfg.faults.unplug_after = None;
        cfg.incoming.clear();
        r.shared.replugged(&link, &pty.device);
        current = link;
    }
}

impl Runner {
    /// One power-on of the modem on one pty; returns why it ended and the options as the
    /// control socket left them.
    async fn generation(&mut self, pty: &mut Pty, mut core: Core) -> (GenEnd, SimOptions) {
        let mut timers = Timers::new();
        let mut buf = [0u8; 4096];
        let mut plan = None;
        let boot = core.boot(self.started.elapsed());
        if self.sink.carry_out(pty, boot, &mut timers, false).await {
            return (GenEnd::Unplugged(None), core.options().clone());
        }
        let mut seen_store = 0;
        loop {
            self.observe(&mut core, &mut seen_store);
            let next = timers.next_at();
            let (actions, droppable) = tokio::select! {
                _ = &mut self.shutdown => return (GenEnd::Shutdown, core.options().clone()),
                r = pty.read(&mut buf) => match r {
                    Ok(0) => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Ok(n) => {
                        tracing::trace!(bytes = n, "sim: read");
                        (core.feed(&buf[..n], self.started.elapsed(), OffsetDateTime::now_utc()), false)
                    }
                    Err(e) => {
                        // With our own slave fd open this should not happen; back off rather than
                        // spin if it does.
                        tracing::warn!("sim: pty read failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = sleep_until_opt(next) => {
                    let Some(event) = timers.pop() else { continue };
                    let noise = event == Event::Noise;
                    (core.fire(event, self.started.elapsed()), noise)
                }
                Some((job, reply)) = self.jobs.recv() => {
                    let control = match job {
                        Job::Core(c) => c,
                        Job::Unplug { replug_after, link } => {
                            plan = Some(ReplugPlan { after: replug_after, link });
                            Control::Unplug
                        }
                        Job::Replug { .. } => {
                            let _ = reply.send(Err("the modem is plugged in".into()));
                            continue;
                        }
                    };
                    let (answer, actions) =
                        core.control(control, self.started.elapsed(), OffsetDateTime::now_utc());
                    if answer.is_err() {
                        plan = None;
                    }
                    let _ = reply.send(answer);
                    (actions, false)
                }
            };
            // Recorded before the answer goes out: a client that saw its OK and asks the
            // control socket next must find the change there.
            self.observe(&mut core, &mut seen_store);
            // A long `--send-delay` must not delay shutdown.
            let gone = tokio::select! {
                _ = &mut self.shutdown => return (GenEnd::Shutdown, core.options().clone()),
                gone = self.sink.carry_out(pty, actions, &mut timers, droppable) => gone,
            };
            if gone {
                self.observe(&mut core, &mut seen_store);
                return (GenEnd::Unplugged(plan.take()), core.options().clone());
            }
        }
    }

    /// Copies what the core did to the state the control socket reads.
    fn observe(&self, core: &mut Core, seen_store: &mut u64) {
        let storage = core.storage_if_changed(*seen_store);
        if let Some((rev, _)) = &storage {
            *seen_store = *rev;
        }
        self.shared.record(
            core.take_tally(),
            storage,
            core.held_reports(),
            core.sim_state(),
            core.call_state(),
        );
    }
}

impl Sink {
    /// Carries out actions in order; returns true when the modem unplugged itself.
    async fn carry_out(
        &mut self,
        pty: &Pty,
        actions: Vec<Action>,
        timers: &mut Timers,
        droppable: bool,
    ) -> bool {
        for action in actions {
            match action {
                Action::Write(bytes) => {
                    if droppable {
                        pty.try_write(&bytes);
                    } else if let Err(e) = pty.write_all(&bytes).await {
                        tracing::warn!("sim: pty write failed: {e}");
                    }
                }
                Action::Busy(d) => network_time(d).await,
                Action::Accepted(part) => {
                    if let Some(msg) = self.reassembler.push(part) {
                        tracing::info!(to = %msg.to, parts = msg.parts, "sim: message accepted");
                        let line = msg.to_json_line(OffsetDateTime::now_utc());
                        // One write(2) per line: `writeln!` issues one per piece, and a process
                        // killed between them leaves a line without its newline.
                        if let Some(file) = self.log.as_mut()
                            && let Err(e) = file.write_all(format!("{line}\n").as_bytes())
                        {
                            tracing::error!("sim: cannot write the log: {e}");
                        }
                        self.shared.sent(&line);
                    }
                }
                Action::Later { after, event } => timers.push(Instant::now() + after, event),
                Action::Unplug => {
                    eprintln!("sim: unplugged");
                    return true;
                }
                Action::Notice(text) => eprintln!("{text}"),
            }
        }
        false
    }
}

/// Spends `d` of simulated network time to within a fraction of a millisecond: tokio's timer
/// alone overshoots by up to 1 ms, which at 0.25 s per text is 0.4 % of the modem's time that
/// the busy-share benchmark would blame on the daemon.
async fn network_time(d: Duration) {
    crate::fine_sleep::sleep_until(Instant::now() + d).await;
}

/// Opens the log for appending. A line torn by an earlier process's crash (or a power loss) is
/// closed with a newline first, so it stays one bad line instead of swallowing the next good one.
fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let mut log = datadir::open_append(path)?;
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("simulator log {}: {e}", path.display()))
    };
    let len = log.metadata().map_err(named)?.len();
    if len > 0 {
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(named)?;
        let mut last = [0u8; 1];
        reader.read_exact_at(&mut last, len - 1).map_err(named)?;
        if last[0] != b'\n' {
            log.write_all(b"\n").map_err(named)?;
        }
    }
    Ok(log)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    #[test]
    fn nth_identities_keep_a_valid_check_digit() {
        assert_eq!(
            super::nth_identity(super::DEFAULT_ICCID, 0).as_deref(),
            Some(super::DEFAULT_ICCID)
        );
        assert_eq!(
            super::nth_identity("356938035643809", 1).as_deref(),
            Some("356938035643817")
        );
        assert_eq!(
            super::nth_identity(super::DEFAULT_ICCID, 1).as_deref(),
            Some("89001012012345678919")
        );
        assert_eq!(
            super::nth_identity("490154203237518", 1).as_deref(),
            Some("490154203237526")
        );
        assert_eq!(super::nth_identity("19", 1).as_deref(), Some("26"));
        assert_eq!(super::nth_identity("8944F", 1), None);
    }

    #[test]
    fn a_torn_last_line_is_closed_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim-sent.jsonl");
        std::fs::write(&path, "{\"to\":\"+1555\"}\n{\"to\":").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut log = super::open_log(&path).unwrap();
        log.write_all(b"{\"to\":\"+1556\"}\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"to\":\"+1555\"}\n{\"to\":\n{\"to\":\"+1556\"}\n");
        // A log that ends well gets nothing added.
        drop(super::open_log(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
