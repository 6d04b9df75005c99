//! The simulated modem's brain: a pure state machine from received bytes to [`Action`]s.
//!
//! It implements the AT commands of ITU-T V.250 and 3GPP TS 27.007 / TS 27.005 that real clients
//! use, with the [`Faults`](super::Faults) of its [`SimOptions`]. This file holds the state, the line discipline
//! (echo, command lines, final result codes) and the table of extended commands; each command
//! family has its own file, which names the clauses it implements: `general` (V.250 basic
//! commands, `+CMEE`, `+CSCS`, `+CFUN`), `identity` (TS 27.007 §5, the ICCID and IMSI),
//! `sim_lock` (`+CPIN`), `network` (registration, `+COPS`, `+CSQ`, `+CGATT`), `sms` (TS 27.005
//! settings and `+CMGS`), `storage` (message storage and the texts the network delivers) and
//! `vendor` (Huawei's `^` commands, boot lines, noise).
//!
//! Time (`now`, monotonic since start, plus a wall clock for timestamps) and randomness (a
//! seeded RNG owned here) are inputs, so unit tests need no pty and are deterministic. The pty
//! task in `sim/mod.rs` only moves bytes and carries out the actions.

mod call;
mod charset;
pub mod control;
mod general;
mod identity;
mod network;
mod reply;
mod sim_lock;
mod sms;
mod storage;
#[cfg(test)]
mod testkit;
mod vendor;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use time::OffsetDateTime;

use self::charset::Charset;
use self::reply::Final;
use self::sim_lock::{PIN_ATTEMPTS, SimLock};
use super::cmdline::{self, Cmd, Form};
use super::{Profile, SimOptions};

pub use self::sim_lock::{PUK, SimChange};
pub use self::storage::{Routed, StoredReport};

/// The longest command line kept; longer input is dropped like a real modem's line buffer does.
const MAX_LINE: usize = 2048;

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write these bytes to the serial line now.
    Write(Vec<u8>),
    /// The modem is busy (the network is carrying an SMS): wait this long before the next action,
    /// reading nothing meanwhile.
    Busy(Duration),
    /// An SMS part the network accepted; goes to the log's reassembly.
    Accepted(AcceptedPart),
    /// Call [`Core::fire`] with `event` after `after`.
    Later {
        /// How long from now.
        after: Duration,
        /// What to hand back to the core then.
        event: Event,
    },
    /// The modem vanishes: close the master, remove the link (USB unplug).
    Unplug,
    /// A line for the operator on stderr (PIN attempts): tests assert on these.
    Notice(String),
}

/// Timed events the core schedules through [`Action::Later`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A URC, already formatted: a status report, or the lines after a SIM unlock.
    Urc(Vec<u8>),
    /// A status report routed as `+CDS`, already formatted (counted, unlike other URCs).
    Cds(Vec<u8>),
    /// A status report to keep in storage and announce with `+CDSI` (`+CNMI` <ds>=2).
    StoreReport(StoredReport),
    /// The network delivers a text (`--incoming`): stored and announced with `+CMTI`, or routed
    /// as `+CMT`, as `+CNMI` <mt> says.
    Incoming {
        /// The sender: `+` and digits, or an alphanumeric name.
        from: String,
        /// The text; it fits one SMS.
        text: String,
    },
    /// `--network-after` has elapsed: announce registration.
    NetworkUp,
    /// A reset (`AT+CFUN=1,1`) finished: emit the profile's boot lines.
    Booted,
    /// Huawei: time for a spontaneous `^RSSI`/`^MODE`/`^BOOT` line.
    Noise,
    /// The next ring of this call (the control socket's `call`).
    Ring(u64),
}

/// One accepted SMS part, as the log needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPart {
    /// The destination as shown in the log: `+` and digits for international numbers.
    pub to: String,
    /// This part's decoded text.
    pub text: String,
    /// The concatenation element: (reference, total, seq).
    pub concat: Option<(u16, u8, u8)>,
    /// The PDU as received, uppercase hex; `None` for a text-mode send.
    pub pdu_hex: Option<String>,
}

/// Settings a reset (`ATZ`, `AT&F`, reboot) restores.
#[derive(Debug, Clone)]
struct Settings {
    echo: bool,
    verbose: bool,
    cmee: u8,
    text_mode: bool,
    cscs: Charset,
    cnmi: [u8; 5],
    creg: u8,
    cgreg: u8,
    cereg: u8,
    csmp: [u8; 4],
    csdh: u8,
    cops_format: u8,
    curc: bool,
    csms: u8,
    clip: u8,
    crc: u8,
    portsel: u8,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            echo: true,
            verbose: true,
            cmee: 0,
            text_mode: false,
            cscs: Charset::Gsm,
            cnmi: [1, 0, 0, 0, 0],
            creg: 0,
            cgreg: 0,
            cereg: 0,
            csmp: [17, 167, 0, 0],
            csdh: 0,
            cops_format: 0,
            curc: true,
            csms: 0,
            clip: 0,
            crc: 0,
            portsel: 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Mode {
    Command,
    /// After `> `: collecting a PDU (hex) or a text until Ctrl-Z.
    Prompt {
        kind: PromptKind,
        body: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
enum PromptKind {
    Pdu { tpdu_len: usize },
    Text { to: String },
}

type CmdResult = Result<Vec<String>, Final>;

/// Runs one extended command: the name it was called by (one handler may serve several), its
/// form and the time.
type Handler = fn(&mut Core, &str, Form, Duration) -> CmdResult;

/// Every extended command the modem knows, a table per family. A name found in none is an
/// unknown command.
const COMMANDS: &[&[(&str, Handler)]] = &[
    general::COMMANDS,
    identity::COMMANDS,
    sim_lock::COMMANDS,
    call::COMMANDS,
    network::COMMANDS,
    sms::COMMANDS,
    storage::COMMANDS,
    vendor::COMMANDS,
];

fn handler(name: &str) -> Option<Handler> {
    COMMANDS
        .iter()
        .flat_map(|family| family.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
}

/// The simulated modem's state.
pub struct Core {
    /// The simulator's options: profile, identity, SIM, faults, the network's texts (the link
    /// and the log are the runner's).
    cfg: SimOptions,
    /// The only source of randomness, seeded from `cfg.seed` so runs repeat.
    rng: StdRng,
    /// What ATZ / a reboot restores.
    settings: Settings,
    /// The SIM's lock state.
    sim: SimLock,
    /// The PIN in force (a PUK unlock sets a new one).
    pin: Option<String>,
    /// Wrong PIN/PUK codes so far, for the stderr notices tests read.
    pin_rejections: u32,
    /// +CFUN level: 1 full, 0/4 radio off (not registered).
    cfun: u8,
    /// The SIM's service centre number (+CSCA).
    smsc: String,
    /// Reading commands or a message body after `> `.
    mode: Mode,
    /// The command line being received.
    line: Vec<u8>,
    /// Command lines seen, for `--hang-after`.
    command_lines: u64,
    /// `Some(start)` while hung.
    hung_since: Option<Duration>,
    /// The hang fault fires once per power-on.
    hang_done: bool,
    /// Parts the network accepted, for `--unplug-after`.
    parts_accepted: u64,
    /// Unplugged: everything is ignored from now on.
    gone: bool,
    /// The TP-MR the next accepted part gets (TS 23.040 §9.2.3.6), rotating through 0..=255.
    next_mr: u8,
    /// Message storage, 1-based slots: status reports and received texts.
    store: Vec<Option<StoredReport>>,
    /// The `--incoming` texts are on their way (scheduled once per power-on).
    incoming_scheduled: bool,
    /// The wall clock of the last input, for the timestamps of received texts.
    wall: OffsetDateTime,
    /// When a hang ends by itself (`--hang-for`, or the control socket's `hang` with `ms`).
    hang_until: Option<Duration>,
    /// Status reports held for the control socket to answer ([`super::ReportOutcome::Hold`]).
    held: Vec<sms::PendingReport>,
    /// What happened since the runner last asked ([`Core::take_tally`]).
    tally: control::Tally,
    /// Bumped whenever the message storage changes, so the runner copies it only then.
    store_rev: u64,
    /// Actions produced by the current call, handed back at its end.
    out: Vec<Action>,
    /// A voice call ringing or answered (the control socket's `call`).
    call: Option<call::Call>,
    /// Calls so far, to tell their ring timers apart.
    call_seq: u64,
}

impl Core {
    /// A freshly powered modem.
    pub fn new(cfg: SimOptions) -> Core {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let next_mr = rng.random::<u8>();
        let sim = match cfg.pin {
            _ if cfg.faults.sim_blocked => SimLock::Puk,
            Some(_) => SimLock::Pin {
                attempts_left: PIN_ATTEMPTS,
            },
            None => SimLock::Ready,
        };
        Core {
            pin: cfg.pin.clone(),
            cfg,
            rng,
            settings: Settings::default(),
            sim,
            pin_rejections: 0,
            cfun: 1,
            smsc: sms::DEFAULT_SMSC.to_string(),
            mode: Mode::Command,
            line: Vec::new(),
            command_lines: 0,
            hung_since: None,
            hang_done: false,
            parts_accepted: 0,
            gone: false,
            next_mr,
            store: vec![None; storage::STORAGE_SLOTS as usize],
            incoming_scheduled: false,
            wall: OffsetDateTime::UNIX_EPOCH,
            hang_until: None,
            held: Vec::new(),
            tally: control::Tally::default(),
            store_rev: 0,
            out: Vec::new(),
            call: None,
            call_seq: 0,
        }
    }

    /// What the modem says when powered on, and the timers it starts.
    pub fn boot(&mut self, _now: Duration) -> Vec<Action> {
        self.emit_boot_lines();
        if let Some(after) = self.cfg.faults.network_after {
            self.out.push(Action::Later {
                after,
                event: Event::NetworkUp,
            });
        }
        if self.cfg.profile == Profile::Huawei {
            self.schedule_noise();
        }
        std::mem::take(&mut self.out)
    }

    /// Bytes from the client.
    pub fn feed(&mut self, bytes: &[u8], now: Duration, wall: OffsetDateTime) -> Vec<Action> {
        self.wall = wall;
        for &b in bytes {
            if self.gone || self.hanging(now) {
                break;
            }
            match &mut self.mode {
                Mode::Command => self.command_byte(b, now),
                Mode::Prompt { .. } => self.prompt_byte(b, now, wall),
            }
        }
        std::mem::take(&mut self.out)
    }

    /// A timer set by [`Action::Later`] ran out.
    pub fn fire(&mut self, event: Event, now: Duration) -> Vec<Action> {
        if self.gone {
            return Vec::new();
        }
        match event {
            Event::Urc(bytes) => self.write(&bytes),
            Event::Cds(bytes) => {
                self.tally.reports += 1;
                self.write(&bytes);
            }
            Event::StoreReport(report) => self.store_report(report),
            Event::Incoming { from, text } => self.receive(&from, &text),
            Event::NetworkUp => {
                if self.reg_stat(now) == 1 {
                    self.registration_urcs();
                }
            }
            Event::Booted => self.emit_boot_lines(),
            Event::Ring(id) => self.ring(id),
            Event::Noise => {
                if self.settings.curc && matches!(self.mode, Mode::Command) && !self.hanging(now) {
                    let line = self.noise_line();
                    self.urc(&line);
                }
                self.schedule_noise();
            }
        }
        std::mem::take(&mut self.out)
    }

    /// The IMEI and the ICCID this modem answers.
    pub fn identity(&self) -> (String, String) {
        (self.imei().to_string(), self.iccid().to_string())
    }

    /// How many wrong PINs the SIM has seen.
    pub fn pin_rejections(&self) -> u32 {
        self.pin_rejections
    }

    fn hanging(&mut self, now: Duration) -> bool {
        match (self.hung_since, self.hang_until) {
            (Some(_), Some(end)) if now >= end => {
                self.hung_since = None;
                self.hang_until = None;
                self.line.clear();
                false
            }
            (Some(_), _) => true,
            (None, _) => false,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(Action::Write(last)) = self.out.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.out.push(Action::Write(bytes.to_vec()));
        }
    }

    fn urc(&mut self, line: &str) {
        self.write(format!("\r\n{line}\r\n").as_bytes());
    }

    fn command_byte(&mut self, b: u8, now: Duration) {
        if self.settings.echo {
            self.write(&[b]);
        }
        match b {
            b'\r' => {
                let line = std::mem::take(&mut self.line);
                self.command_line(&line, now);
            }
            b'\n' => {}
            0x08 | 0x7F => {
                self.line.pop();
            }
            0x1B | 0x1A => self.line.clear(),
            _ => {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                }
            }
        }
    }

    fn command_line(&mut self, raw: &[u8], now: Duration) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        // Anything before the `AT` (line noise, a stray Ctrl-Z) is ignored, as modems do.
        let Some(pos) = text.to_ascii_uppercase().find("AT") else {
            return;
        };
        let rest = &text[pos + 2..];
        // Command lines carry no message text (bodies follow the `> ` prompt), so they are logged.
        tracing::debug!(command = %crate::at::redact::redact(&text[pos..]), "sim: received command");
        self.command_lines += 1;
        self.tally.commands.push(text[pos..].to_string());
        if let Some(n) = self.cfg.faults.hang_after
            && !self.hang_done
            && self.command_lines > n
        {
            tracing::info!("sim: hanging after {n} commands");
            self.hang_done = true;
            self.hung_since = Some(now);
            self.hang_until = self.cfg.faults.hang_for.map(|d| now + d);
            self.out
                .push(Action::Notice(format!("sim: hanging after {n} commands")));
            return;
        }
        let Some(cmds) = cmdline::split(rest) else {
            self.finish(Vec::new(), Final::Error);
            return;
        };
        let mut info = Vec::new();
        let mut fin = Final::Ok;
        for cmd in cmds {
            match self.execute(cmd, now) {
                Ok(lines) => info.extend(lines),
                Err(f) => {
                    fin = f;
                    break;
                }
            }
        }
        self.finish(info, fin);
    }

    fn reset_settings(&mut self) {
        // Huawei keeps ^CURC in non-volatile memory: a reset does not bring the noise back.
        let curc = self.settings.curc;
        self.settings = Settings {
            curc,
            ..Settings::default()
        };
    }

    /// Runs one command; `Ok` carries its information lines.
    fn execute(&mut self, cmd: Cmd, now: Duration) -> CmdResult {
        match cmd {
            Cmd::Basic { name, value, read } => self.basic(&name, value.as_deref(), read),
            Cmd::Extended { name, form } => self.extended(&name, form, now),
        }
    }

    /// An extended command, through the table.
    fn extended(&mut self, name: &str, form: Form, now: Duration) -> CmdResult {
        match handler(name) {
            Some(run) => run(self, name, form, now),
            // Unknown commands get a plain ERROR whatever +CMEE says, as on real modems.
            None => Err(Final::Error),
        }
    }
}

/// The first argument, or `missing` when there is none.
fn first_arg(a: &str, missing: Final) -> Result<String, Final> {
    cmdline::args(a).into_iter().next().flatten().ok_or(missing)
}

/// Parses argument `i` as a number in `range`; `default` when it is absent.
fn num_arg(
    a: &str,
    i: usize,
    range: std::ops::RangeInclusive<u8>,
    default: Option<u8>,
) -> Result<u8, Final> {
    match cmdline::args(a).get(i).cloned().flatten() {
        Some(s) => s
            .parse::<u8>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or(Final::Cme(50)),
        None => default.ok_or(Final::Cme(50)),
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::sim::Faults;

    #[test]
    fn answers_queries_and_tests_plausibly() {
        let mut c = quiet(cfg());
        for (input, expect) in [
            ("AT\r", "\r\nOK\r\n"),
            ("at+cgmi\r", "\r\nsimgate\r\n\r\nOK\r\n"),
            ("AT+CGSN\r", "\r\n356938035643809\r\n\r\nOK\r\n"),
            ("AT+CMGF?\r", "\r\n+CMGF: 0\r\n\r\nOK\r\n"),
            ("AT+CMGF=?\r", "\r\n+CMGF: (0,1)\r\n\r\nOK\r\n"),
            ("AT+CSCS?\r", "\r\n+CSCS: \"GSM\"\r\n\r\nOK\r\n"),
            ("AT+CNMI?\r", "\r\n+CNMI: 1,0,0,0,0\r\n\r\nOK\r\n"),
            ("AT+CNMI=2,1,0,1,0\r", "\r\nOK\r\n"),
            ("AT+CNMI?\r", "\r\n+CNMI: 2,1,0,1,0\r\n\r\nOK\r\n"),
            ("AT+CNMI=9\r", "\r\n+CMS ERROR: 303\r\n"),
            (
                "AT+CSCA?\r",
                "\r\n+CSCA: \"+15550000000\",145\r\n\r\nOK\r\n",
            ),
            (
                "AT+CPMS=\"SM\",\"SM\",\"SM\"\r",
                "\r\n+CPMS: 0,30,0,30,0,30\r\n\r\nOK\r\n",
            ),
            ("AT+CPMS=\"XX\"\r", "\r\n+CMS ERROR: 302\r\n"),
            ("AT+CMGL=4\r", "\r\nOK\r\n"),
            ("AT+CMGR=1\r", "\r\n+CMS ERROR: 321\r\n"),
            ("AT+CMGD=1\r", "\r\nOK\r\n"),
            ("AT+CMGD=99\r", "\r\n+CMS ERROR: 321\r\n"),
            ("AT+CFUN?\r", "\r\n+CFUN: 1\r\n\r\nOK\r\n"),
            ("AT+CREG=2\r", "\r\nOK\r\n"),
            (
                "AT+CREG?\r",
                "\r\n+CREG: 2,1,\"00A1\",\"1A2B\"\r\n\r\nOK\r\n",
            ),
            ("AT+CEREG?\r", "\r\n+CEREG: 0,1\r\n\r\nOK\r\n"),
            ("AT+COPS=3,2\r", "\r\nOK\r\n"),
            ("AT+COPS?\r", "\r\n+COPS: 0,2,\"00101\",7\r\n\r\nOK\r\n"),
            ("AT+CSMP=49,167,0,8\r", "\r\nOK\r\n"),
            ("AT+CSMP?\r", "\r\n+CSMP: 49,167,0,8\r\n\r\nOK\r\n"),
            ("AT+BOGUS\r", "\r\nERROR\r\n"),
            ("AT+CMGF=1;+CMGF?\r", "\r\n+CMGF: 1\r\n\r\nOK\r\n"),
            ("AT+CMGF=0;+BOGUS;+CMGF=1\r", "\r\nERROR\r\n"),
            ("AT+CMGF?\r", "\r\n+CMGF: 0\r\n\r\nOK\r\n"),
            ("garbage\r", ""),
        ] {
            check(&mut c, input, expect);
        }
    }

    #[test]
    fn input_may_arrive_in_any_chunks() {
        let mut c = quiet(cfg());
        let mut out = String::new();
        for b in "AT+CSQ\r\nAT\r".bytes() {
            out += &writes(&c.feed(&[b], Duration::ZERO, WALL));
        }
        assert_eq!(out, "\r\n+CSQ: 21,99\r\n\r\nOK\r\n\r\nOK\r\n");
    }

    #[test]
    fn hang_after_discards_until_hang_for_passes() {
        let mut c = quiet(faulty(Faults {
            hang_after: Some(3),
            hang_for: Some(Duration::from_secs(2)),
            ..Faults::default()
        }));
        assert_eq!(run(&mut c, "AT\r", 0), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 100), "");
        assert_eq!(run(&mut c, "AT\r", 1500), "");
        assert_eq!(run(&mut c, "AT\r", 2200), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 2300), "\r\nOK\r\n", "hangs once");
    }

    #[test]
    fn every_command_has_one_handler() {
        let names: Vec<&str> = COMMANDS
            .iter()
            .flat_map(|family| family.iter().map(|(n, _)| *n))
            .collect();
        for (i, name) in names.iter().enumerate() {
            assert!(
                name.starts_with('+') || name.starts_with('^'),
                "{name} is not an extended command"
            );
            assert_eq!(
                name.to_ascii_uppercase(),
                *name,
                "the parser upper-cases names"
            );
            assert!(!names[..i].contains(name), "{name} is in two tables");
        }
    }

    /// Writes joined, other actions kept in order: what a chunking must not change.
    fn normalise(actions: Vec<Action>) -> (String, Vec<Action>) {
        let mut text = String::new();
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::Write(b) => text.push_str(&String::from_utf8_lossy(&b)),
                other => rest.push(other),
            }
        }
        (text, rest)
    }

    proptest::proptest! {
        #[test]
        fn chunking_does_not_change_the_session(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            let (len, hex) = pdu("+15551234567", "chunked text", true);
            let session = format!(
                "AT\r\nATE0;+CMEE=1\rAT+CNMI=2,1,0,1,0\rAT+CMGS={len}\r{hex}\x1aAT+CMGF=1\r\
                 AT+CMGS=\"+15550001\"\rtext body\x1aAT+CMGS=9\r00\x1bAT+CSQ\r"
            );
            let bytes = session.as_bytes();
            let whole = normalise(Core::new(cfg()).feed(bytes, Duration::ZERO, WALL));
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut core = Core::new(cfg());
            let mut actions = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                actions.extend(core.feed(&bytes[start..cut], Duration::ZERO, WALL));
                start = cut;
            }
            proptest::prop_assert_eq!(normalise(actions), whole);
        }

        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let mut core = Core::new(SimOptions { profile: Profile::Huawei, ..cfg() });
            let _ = core.feed(&input, Duration::ZERO, WALL);
            let mut text_mode = Core::new(cfg());
            let _ = text_mode.feed(b"AT+CMGF=1;+CSCS=\"UCS2\"\r", Duration::ZERO, WALL);
            let _ = text_mode.feed(&input, Duration::ZERO, WALL);
        }
    }
}
