//! The simulated modem's brain: a pure state machine from received bytes to [`Action`]s.
//!
//! It implements the AT commands of ITU-T V.250, 3GPP TS 27.007 (identification §5,
//! `+CMEE` §9.1, `+CPIN` §8.3, `+CFUN` §8.2, `+CREG` §7.2, `+CGREG` §10.1.20, `+CEREG`
//! §10.1.22, `+COPS` §7.3, `+CSQ` §8.5, `+CSCS` §5.5) and TS 27.005 (`+CMGF` §3.2.3, `+CSCA`
//! §3.3.1, `+CSMP` §3.3.2, `+CPMS` §3.2.2, `+CNMI` §3.4.1, `+CMGS` §3.5.1 / §4.3, `+CMGL`
//! §3.4.2, `+CMGR` §3.4.3, `+CMGD` §3.5.4, `+CDS` §3.4.1, `+CMS ERROR` §3.2.5) that real
//! clients use, with the faults of [`CoreConfig`].
//!
//! Time (`now`, monotonic since start, plus a wall clock for timestamps) and randomness (a
//! seeded RNG owned here) are inputs, so unit tests need no pty and are deterministic. The pty
//! task in `sim/mod.rs` only moves bytes and carries out the actions.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use time::OffsetDateTime;

use super::cmdline::{self, Cmd, Form};
use super::submit::{self, SubmitFacts};
use super::{Profile, SimOptions};

/// The longest command line kept; longer input is dropped like a real modem's line buffer does.
const MAX_LINE: usize = 2048;
/// Largest TPDU `AT+CMGS=<length>` accepts: a SUBMIT with the longest address and 140 octets
/// of user data.
const MAX_TPDU: usize = 164;
/// Number of message slots the simulated SIM storage reports (like a typical SIM).
const STORAGE_SLOTS: u32 = 30;
/// The PUK a `--pin` SIM accepts once the PIN is blocked (the value test SIMs often use).
pub const PUK: &str = "12345678";
/// Wrong PINs a SIM allows before it asks for the PUK (TS 31.102 default).
const PIN_ATTEMPTS: u8 = 3;

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
}

/// A message kept in the simulated message storage: a status report (TS 27.005 §3.4.1,
/// <ds>=2) or a received text (`--incoming`, <mt>=1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// Whether `+CMGR`/`+CMGL` has shown it (stat 1 "REC READ"), else 0 "REC UNREAD".
    pub read: bool,
    /// TPDU length for PDU-mode listings.
    pub tpdu_len: usize,
    /// The SMS-STATUS-REPORT PDU, uppercase hex, for PDU mode.
    pub pdu_hex: String,
    /// The text-mode fields after <stat>: `6,<mr>,"<ra>",<tora>,"<scts>","<dt>",<st>` for a
    /// report; `"<oa>",,"<scts>"`, a line break and the text for a received text.
    pub text_fields: String,
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

/// The fault and behaviour knobs of [`SimOptions`] that the core needs.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Which vendor's modem to imitate.
    pub profile: Profile,
    /// Overrides the profile's IMEI, so several simulators have distinct identities.
    pub imei: Option<String>,
    /// The SIM's ICCID; `None` answers [`super::DEFAULT_ICCID`].
    pub iccid: Option<String>,
    /// Network time per part before `+CMGS:` answers.
    pub send_delay: Duration,
    /// Share of sends that fail with a temporary `+CMS ERROR`.
    pub error_rate: f64,
    /// Seed of the RNG behind `error_rate`, the first TP-MR and Huawei's noise.
    pub seed: u64,
    /// Destinations starting with one of these fail permanently (`+CMS ERROR: 1`).
    pub reject_prefixes: Vec<String>,
    /// The SIM's PIN; `None` for an unlocked SIM.
    pub pin: Option<String>,
    /// Never registered.
    pub no_network: bool,
    /// Registered only after this long.
    pub network_after: Option<Duration>,
    /// Delay of a status report after `+CMGS:`.
    pub report_delay: Duration,
    /// TP-ST of status reports.
    pub report_status: u8,
    /// Stop answering after this many command lines.
    pub hang_after: Option<u64>,
    /// How long a hang lasts; `None`: forever.
    pub hang_for: Option<Duration>,
    /// Vanish at the `AT+CMGS` after this many accepted parts.
    pub unplug_after: Option<u64>,
    /// Texts the network delivers (sender, text), [`CoreConfig::incoming_after`] after the
    /// client first enables new-message indications.
    pub incoming: Vec<(String, String)>,
    /// See [`CoreConfig::incoming`].
    pub incoming_after: Duration,
}

impl CoreConfig {
    /// The core's share of the simulator's options.
    pub fn from_options(o: &SimOptions) -> CoreConfig {
        CoreConfig {
            profile: o.profile,
            imei: o.imei.clone(),
            iccid: o.iccid.clone(),
            send_delay: o.send_delay,
            error_rate: o.error_rate,
            seed: o.seed,
            reject_prefixes: o.reject_prefixes.clone(),
            pin: o.pin.clone(),
            no_network: o.no_network,
            network_after: o.network_after,
            report_delay: o.report_delay,
            report_status: o.report_status,
            hang_after: o.hang_after,
            hang_for: o.hang_for,
            unplug_after: o.unplug_after,
            incoming: o.incoming.clone(),
            incoming_after: o.incoming_after,
        }
    }
}

/// TS 27.007 §5.5 character sets, for text-mode strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Gsm,
    Ira,
    Latin1,
    Ucs2,
}

impl Charset {
    fn name(self) -> &'static str {
        match self {
            Charset::Gsm => "GSM",
            Charset::Ira => "IRA",
            Charset::Latin1 => "8859-1",
            Charset::Ucs2 => "UCS2",
        }
    }

    fn parse(s: &str) -> Option<Charset> {
        match s.to_ascii_uppercase().as_str() {
            "GSM" => Some(Charset::Gsm),
            "IRA" | "ASCII" => Some(Charset::Ira),
            "8859-1" => Some(Charset::Latin1),
            "UCS2" => Some(Charset::Ucs2),
            _ => None,
        }
    }

    /// Decodes a text-mode string argument or body (TS 27.005 §4.3: the body follows +CSCS).
    fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Ucs2 => {
                let raw = hex::decode(bytes.trim_ascii()).ok()?;
                if raw.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = raw
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16(&units).ok()
            }
            Charset::Gsm => {
                if bytes.iter().any(|&b| b > 0x7F) {
                    return None;
                }
                Some(crate::pdu::gsm7::decode(bytes))
            }
            Charset::Ira => {
                if bytes.iter().any(|&b| b > 0x7F) {
                    return None;
                }
                Some(bytes.iter().map(|&b| b as char).collect())
            }
            Charset::Latin1 => Some(bytes.iter().map(|&b| b as char).collect()),
        }
    }

    /// Encodes a string for an answer in this character set.
    fn encode(self, s: &str) -> String {
        match self {
            Charset::Ucs2 => s
                .encode_utf16()
                .map(|u| format!("{u:04X}"))
                .collect::<String>(),
            _ => s.to_string(),
        }
    }
}

/// The SIM's lock state (TS 27.007 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimLock {
    Ready,
    Pin { attempts_left: u8 },
    Puk,
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

/// How a command ended (V.250 §5.7, TS 27.007 §9.2, TS 27.005 §3.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Final {
    Ok,
    Error,
    Cme(u16),
    Cms(u16),
    /// `> `: waiting for the message body.
    Prompt,
}

type CmdResult = Result<Vec<String>, Final>;

/// Identity strings of a profile (TS 27.007 §5).
struct Identity {
    manufacturer: &'static str,
    model: &'static str,
    revision: &'static str,
    imei: &'static str,
    ati: &'static [&'static str],
    act: u8,
}

fn identity(p: Profile) -> Identity {
    match p {
        Profile::Generic => Identity {
            manufacturer: "simgate",
            model: "simgate-sim",
            revision: concat!("simgate-sim ", env!("CARGO_PKG_VERSION")),
            imei: "356938035643809",
            ati: &[
                "Manufacturer: simgate",
                "Model: simgate-sim",
                concat!("Revision: simgate-sim ", env!("CARGO_PKG_VERSION")),
                "IMEI: 356938035643809",
                "+GCAP: +CGSM",
            ],
            act: 7,
        },
        Profile::Huawei => Identity {
            manufacturer: "huawei",
            model: "E3372",
            revision: "22.328.62.00.00",
            imei: "867223021234563",
            ati: &[
                "Manufacturer: huawei",
                "Model: E3372",
                "Revision: 22.328.62.00.00",
                "IMEI: 867223021234563",
                "+GCAP: +CGSM,+DS,+ES",
            ],
            act: 7,
        },
        Profile::Simcom => Identity {
            manufacturer: "SIMCOM_Ltd",
            model: "SIMCOM_SIM800L",
            revision: "Revision:1418B04SIM800L24",
            imei: "865067021234564",
            ati: &["SIM800 R14.18"],
            act: 0,
        },
        Profile::Quectel => Identity {
            manufacturer: "Quectel",
            model: "EC25",
            revision: "EC25EFAR06A06M4G",
            imei: "866758041234561",
            ati: &["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"],
            act: 7,
        },
    }
}

/// The IMSI of the simulated SIM: MCC 001 / MNC 01 is the test network of TS 23.003.
const IMSI: &str = "001010123456789";
const OPERATOR_LONG: &str = "Simgate Mobile";
const OPERATOR_SHORT: &str = "Simgate";
const OPERATOR_NUMERIC: &str = "00101";
const DEFAULT_SMSC: &str = "+15550000000";

/// The simulated modem's state.
pub struct Core {
    /// Profile and faults.
    cfg: CoreConfig,
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
    /// Actions produced by the current call, handed back at its end.
    out: Vec<Action>,
}

impl Core {
    /// A freshly powered modem.
    pub fn new(cfg: CoreConfig) -> Core {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let next_mr = rng.random::<u8>();
        let sim = match cfg.pin {
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
            smsc: DEFAULT_SMSC.to_string(),
            mode: Mode::Command,
            line: Vec::new(),
            command_lines: 0,
            hung_since: None,
            hang_done: false,
            parts_accepted: 0,
            gone: false,
            next_mr,
            store: vec![None; STORAGE_SLOTS as usize],
            incoming_scheduled: false,
            wall: OffsetDateTime::UNIX_EPOCH,
            out: Vec::new(),
        }
    }

    /// What the modem says when powered on, and the timers it starts.
    pub fn boot(&mut self, _now: Duration) -> Vec<Action> {
        self.emit_boot_lines();
        if let Some(after) = self.cfg.network_after {
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
            Event::StoreReport(report) => {
                // A full storage drops the report, as a real modem does.
                if let Some(i) = self.store.iter().position(Option::is_none) {
                    self.store[i] = Some(report);
                    self.urc(&format!("+CDSI: \"SR\",{}", i + 1));
                }
            }
            Event::Incoming { from, text } => self.receive(&from, &text),
            Event::NetworkUp => {
                if self.reg_stat(now) == 1 {
                    self.registration_urcs();
                }
            }
            Event::Booted => self.emit_boot_lines(),
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

    /// How many wrong PINs the SIM has seen.
    pub fn pin_rejections(&self) -> u32 {
        self.pin_rejections
    }

    fn hanging(&mut self, now: Duration) -> bool {
        match (self.hung_since, self.cfg.hang_for) {
            (Some(since), Some(d)) if now >= since + d => {
                self.hung_since = None;
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
        if let Some(n) = self.cfg.hang_after
            && !self.hang_done
            && self.command_lines > n
        {
            tracing::info!("sim: hanging after {n} commands");
            self.hang_done = true;
            self.hung_since = Some(now);
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

    fn finish(&mut self, info: Vec<String>, fin: Final) {
        let mut text = String::new();
        for line in &info {
            if self.settings.verbose {
                text.push_str("\r\n");
            }
            text.push_str(line);
            text.push_str("\r\n");
        }
        // Huawei sticks URCs anywhere, including between an information line and the OK.
        if self.cfg.profile == Profile::Huawei
            && self.settings.curc
            && !info.is_empty()
            && fin != Final::Prompt
            && self.rng.random_bool(0.5)
        {
            let noise = self.noise_line();
            text.push_str(&format!("\r\n{noise}\r\n"));
        }
        text.push_str(&self.final_text(fin));
        self.write(text.as_bytes());
    }

    fn final_text(&self, fin: Final) -> String {
        let v = self.settings.verbose;
        let (word, code) = match fin {
            Final::Ok => ("OK".to_string(), 0),
            Final::Error => ("ERROR".to_string(), 4),
            Final::Cme(n) => match self.settings.cmee {
                0 => ("ERROR".to_string(), 4),
                1 => (format!("+CME ERROR: {n}"), 4),
                _ => (format!("+CME ERROR: {}", cme_text(n)), 4),
            },
            Final::Cms(n) => match self.settings.cmee {
                0 => ("ERROR".to_string(), 4),
                1 => (format!("+CMS ERROR: {n}"), 4),
                _ => (format!("+CMS ERROR: {}", cms_text(n)), 4),
            },
            Final::Prompt => return "\r\n> ".to_string(),
        };
        if v {
            format!("\r\n{word}\r\n")
        } else if word.starts_with('+') {
            // Extended errors stay verbose even in numeric mode (TS 27.007 §9.1).
            format!("{word}\r\n")
        } else {
            format!("{code}\r")
        }
    }

    fn iccid(&self) -> &str {
        self.cfg.iccid.as_deref().unwrap_or(super::DEFAULT_ICCID)
    }

    fn cme_if_not_ready(&self) -> Result<(), Final> {
        match self.sim {
            SimLock::Ready => Ok(()),
            SimLock::Pin { .. } => Err(Final::Cme(11)),
            SimLock::Puk => Err(Final::Cme(12)),
        }
    }

    fn cms_if_not_ready(&self) -> Result<(), Final> {
        match self.sim {
            SimLock::Ready => Ok(()),
            SimLock::Pin { .. } => Err(Final::Cms(311)),
            SimLock::Puk => Err(Final::Cms(316)),
        }
    }

    fn reg_stat(&self, now: Duration) -> u8 {
        if self.cfun != 1 || self.sim != SimLock::Ready {
            0
        } else if self.cfg.no_network || self.cfg.network_after.is_some_and(|d| now < d) {
            2
        } else {
            1
        }
    }

    fn reg_line(&self, name: &str, n: u8, stat: u8, read: bool) -> String {
        let prefix = if read {
            format!("{name}: {n},{stat}")
        } else {
            format!("{name}: {stat}")
        };
        if n >= 2 && (stat == 1 || stat == 5) {
            if name == "+CEREG" {
                format!("{prefix},\"00A1\",\"01A2B3C\",7")
            } else {
                format!("{prefix},\"00A1\",\"1A2B\"")
            }
        } else {
            prefix
        }
    }

    fn registration_urcs(&mut self) {
        let s = self.settings.clone();
        for (name, n) in [("+CREG", s.creg), ("+CGREG", s.cgreg), ("+CEREG", s.cereg)] {
            if n > 0 {
                let line = self.reg_line(name, n, 1, false);
                self.urc(&line);
            }
        }
    }

    fn emit_boot_lines(&mut self) {
        let cpin = match self.sim {
            SimLock::Ready => "+CPIN: READY",
            SimLock::Pin { .. } => "+CPIN: SIM PIN",
            SimLock::Puk => "+CPIN: SIM PUK",
        };
        match self.cfg.profile {
            Profile::Generic => {}
            Profile::Huawei => {
                let line = self.noise_boot();
                self.urc(&line);
            }
            Profile::Simcom => {
                self.urc("RDY");
                self.urc("+CFUN: 1");
                self.urc(cpin);
                if self.sim == SimLock::Ready {
                    self.urc("Call Ready");
                    self.urc("SMS Ready");
                }
            }
            Profile::Quectel => {
                self.urc("RDY");
                self.urc("+CFUN: 1");
                self.urc(cpin);
                if self.sim == SimLock::Ready {
                    self.urc("+QIND: SMS DONE");
                }
            }
        }
    }

    /// What a SIM800 / EC25 says once the SIM gets unlocked.
    fn unlocked_lines(&mut self) {
        match self.cfg.profile {
            Profile::Simcom => {
                self.urc("+CPIN: READY");
                self.urc("Call Ready");
                self.urc("SMS Ready");
            }
            Profile::Quectel => {
                self.urc("+CPIN: READY");
                self.urc("+QIND: SMS DONE");
            }
            Profile::Generic | Profile::Huawei => {}
        }
    }

    fn schedule_noise(&mut self) {
        let ms = self.rng.random_range(300..2000);
        self.out.push(Action::Later {
            after: Duration::from_millis(ms),
            event: Event::Noise,
        });
    }

    fn noise_line(&mut self) -> String {
        match self.rng.random_range(0..3) {
            0 => format!("^RSSI:{}", self.rng.random_range(12..28)),
            1 => "^MODE:5,4".to_string(),
            _ => self.noise_boot(),
        }
    }

    fn noise_boot(&mut self) -> String {
        format!(
            "^BOOT:{},0,0,0,72",
            self.rng.random_range(10_000_000..99_999_999)
        )
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

    fn basic(&mut self, name: &str, value: Option<&str>, read: bool) -> CmdResult {
        let num = value
            .map(|v| v.parse::<u32>().map_err(|_| Final::Error))
            .transpose()?;
        match name {
            "E" => {
                self.settings.echo = flag(num)?;
                Ok(vec![])
            }
            "V" => {
                self.settings.verbose = flag(num)?;
                Ok(vec![])
            }
            "Z" | "&F" => {
                self.reset_settings();
                Ok(vec![])
            }
            "I" => {
                let id = identity(self.cfg.profile);
                let imei = self.cfg.imei.as_deref().unwrap_or(id.imei);
                // ATI repeats the IMEI on profiles that show it; keep it consistent with +CGSN.
                Ok(id.ati.iter().map(|s| s.replace(id.imei, imei)).collect())
            }
            "Q" if num.unwrap_or(0) == 0 => Ok(vec![]),
            "&C" | "&D" | "&K" | "&W" | "X" | "L" | "M" => Ok(vec![]),
            s if s.starts_with('S') => {
                if read {
                    Ok(vec![format!(
                        "{:03}",
                        match s {
                            "S3" => 13,
                            "S4" => 10,
                            "S5" => 8,
                            _ => 0,
                        }
                    )])
                } else {
                    Ok(vec![])
                }
            }
            _ => Err(Final::Error),
        }
    }

    fn extended(&mut self, name: &str, form: Form, now: Duration) -> CmdResult {
        let id = identity(self.cfg.profile);
        let cs = self.settings.cscs;
        match (name, form) {
            ("+CGMI" | "+GMI", Form::Exec) => Ok(vec![id.manufacturer.into()]),
            ("+CGMM" | "+GMM", Form::Exec) => Ok(vec![id.model.into()]),
            ("+CGMR" | "+GMR", Form::Exec) => Ok(vec![id.revision.into()]),
            ("+CGSN" | "+GSN", Form::Exec) => {
                Ok(vec![self.cfg.imei.as_deref().unwrap_or(id.imei).into()])
            }
            // The ICCID (EF_ICCID, readable without the PIN on real SIMs). Vendors disagree on
            // the command: `+CCID` (SIMCom, Quectel, many generic), `+ICCID` and Huawei's
            // `^ICCID?`; all answer here so every client's fallback finds it.
            ("+CCID" | "+ICCID", Form::Exec | Form::Read) => {
                Ok(vec![format!("{name}: {}", self.iccid())])
            }
            ("^ICCID", Form::Read) => Ok(vec![format!("^ICCID: {}", self.iccid())]),
            ("+CCID" | "+ICCID" | "^ICCID", Form::Test) => Ok(vec![]),
            ("+CGMI" | "+GMI" | "+CGMM" | "+GMM" | "+CGMR" | "+GMR" | "+CGSN" | "+GSN", Form::Test) => {
                Ok(vec![])
            }
            ("+CIMI", Form::Exec) => {
                self.cme_if_not_ready()?;
                Ok(vec![IMSI.into()])
            }
            ("+CIMI", Form::Test) => Ok(vec![]),
            ("+GCAP", Form::Exec) => Ok(vec!["+GCAP: +CGSM".into()]),
            ("+CMEE", Form::Set(a)) => {
                self.settings.cmee = num_arg(&a, 0, 0..=2, Some(0))?;
                Ok(vec![])
            }
            ("+CMEE", Form::Read) => Ok(vec![format!("+CMEE: {}", self.settings.cmee)]),
            ("+CMEE", Form::Test) => Ok(vec!["+CMEE: (0-2)".into()]),
            ("+CPIN", Form::Read) => Ok(vec![
                match self.sim {
                    SimLock::Ready => "+CPIN: READY",
                    SimLock::Pin { .. } => "+CPIN: SIM PIN",
                    SimLock::Puk => "+CPIN: SIM PUK",
                }
                .into(),
            ]),
            ("+CPIN", Form::Test) => Ok(vec![]),
            ("+CPIN", Form::Set(a)) => self.cpin(&a),
            ("+CFUN", Form::Read) => Ok(vec![format!("+CFUN: {}", self.cfun)]),
            ("+CFUN", Form::Test) => Ok(vec!["+CFUN: (0,1,4),(0,1)".into()]),
            ("+CFUN", Form::Set(a)) => {
                let fun = num_arg(&a, 0, 0..=4, None)?;
                let rst = num_arg(&a, 1, 0..=1, Some(0))?;
                if fun == 2 || fun == 3 {
                    return Err(Final::Cme(4));
                }
                self.cfun = fun;
                if rst == 1 {
                    // A reset reboots the modem: settings back to defaults, SIM locked again,
                    // boot lines a moment later.
                    self.cfun = 1;
                    self.reset_settings();
                    if self.pin.is_some() && self.sim == SimLock::Ready
                    {
                        self.sim = SimLock::Pin {
                            attempts_left: PIN_ATTEMPTS,
                        };
                    }
                    self.out.push(Action::Later {
                        after: Duration::from_millis(200),
                        event: Event::Booted,
                    });
                }
                Ok(vec![])
            }
            ("+CREG" | "+CGREG" | "+CEREG", Form::Set(a)) => {
                let n = num_arg(&a, 0, 0..=2, Some(0))?;
                *self.reg_setting(name) = n;
                Ok(vec![])
            }
            ("+CREG" | "+CGREG" | "+CEREG", Form::Read) => {
                let n = *self.reg_setting(name);
                let stat = self.reg_stat(now);
                Ok(vec![self.reg_line(name, n, stat, true)])
            }
            ("+CREG" | "+CGREG" | "+CEREG", Form::Test) => Ok(vec![format!("{name}: (0-2)")]),
            ("+CGATT", Form::Read) => Ok(vec![format!(
                "+CGATT: {}",
                u8::from(self.reg_stat(now) == 1)
            )]),
            ("+CGATT", Form::Set(a)) => {
                num_arg(&a, 0, 0..=1, None)?;
                Ok(vec![])
            }
            ("+CGATT", Form::Test) => Ok(vec!["+CGATT: (0,1)".into()]),
            ("+CSQ", Form::Exec) => Ok(vec![if self.reg_stat(now) == 1 {
                "+CSQ: 21,99".into()
            } else {
                "+CSQ: 99,99".into()
            }]),
            ("+CSQ", Form::Test) => Ok(vec!["+CSQ: (0-31,99),(0-7,99)".into()]),
            ("+COPS", Form::Read) => {
                if self.reg_stat(now) != 1 {
                    return Ok(vec!["+COPS: 0".into()]);
                }
                let f = self.settings.cops_format;
                let oper = match f {
                    0 => OPERATOR_LONG,
                    1 => OPERATOR_SHORT,
                    _ => OPERATOR_NUMERIC,
                };
                Ok(vec![format!("+COPS: 0,{f},\"{}\",{}", cs.encode(oper), id.act)])
            }
            ("+COPS", Form::Set(a)) => {
                let mode = num_arg(&a, 0, 0..=4, Some(0))?;
                let format = num_arg(&a, 1, 0..=2, Some(self.settings.cops_format))?;
                if mode == 3 || cmdline::args(&a).get(1).is_some_and(Option::is_some) {
                    self.settings.cops_format = format;
                }
                Ok(vec![])
            }
            ("+COPS", Form::Test) => Ok(vec![format!(
                "+COPS: (2,\"{OPERATOR_LONG}\",\"{OPERATOR_SHORT}\",\"{OPERATOR_NUMERIC}\",{}),,(0-4),(0-2)",
                id.act
            )]),
            ("+CSCS", Form::Set(a)) => {
                let v = cmdline::args(&a).into_iter().next().flatten().ok_or(Final::Cme(50))?;
                // In UCS2 the argument itself may arrive hex-coded (TS 27.007 §5.5).
                let parsed = Charset::parse(&v)
                    .or_else(|| cs.decode(v.as_bytes()).and_then(|s| Charset::parse(&s)));
                self.settings.cscs = parsed.ok_or(Final::Cme(50))?;
                Ok(vec![])
            }
            ("+CSCS", Form::Read) => Ok(vec![format!("+CSCS: \"{}\"", cs.encode(cs.name()))]),
            ("+CSCS", Form::Test) => Ok(vec!["+CSCS: (\"GSM\",\"IRA\",\"8859-1\",\"UCS2\")".into()]),
            ("+CMGF", Form::Set(a)) => {
                self.settings.text_mode = num_arg(&a, 0, 0..=1, Some(0))? == 1;
                Ok(vec![])
            }
            ("+CMGF", Form::Read) => Ok(vec![format!("+CMGF: {}", u8::from(self.settings.text_mode))]),
            ("+CMGF", Form::Test) => Ok(vec!["+CMGF: (0,1)".into()]),
            ("+CSMS", Form::Set(a)) => {
                self.settings.csms = num_arg(&a, 0, 0..=1, None).map_err(|_| Final::Cms(302))?;
                Ok(vec!["+CSMS: 1,1,1".into()])
            }
            ("+CSMS", Form::Read) => Ok(vec![format!("+CSMS: {},1,1,1", self.settings.csms)]),
            ("+CSMS", Form::Test) => Ok(vec!["+CSMS: (0,1)".into()]),
            ("+CSCA", Form::Read) => {
                self.cms_if_not_ready()?;
                let toa = if self.smsc.starts_with('+') { 145 } else { 129 };
                Ok(vec![format!("+CSCA: \"{}\",{toa}", cs.encode(&self.smsc))])
            }
            ("+CSCA", Form::Set(a)) => {
                self.cms_if_not_ready()?;
                let v = cmdline::args(&a).into_iter().next().flatten().ok_or(Final::Cms(304))?;
                let num = cs.decode(v.as_bytes()).ok_or(Final::Cms(304))?;
                self.smsc = num;
                Ok(vec![])
            }
            ("+CSCA", Form::Test) => Ok(vec![]),
            ("+CSMP", Form::Set(a)) => {
                let args = cmdline::args(&a);
                for (i, slot) in self.settings.csmp.clone().iter().enumerate() {
                    let v = match args.get(i).cloned().flatten() {
                        Some(s) => s.parse::<u8>().map_err(|_| Final::Cms(305))?,
                        None => *slot,
                    };
                    self.settings.csmp[i] = v;
                }
                Ok(vec![])
            }
            ("+CSMP", Form::Read) => {
                let [fo, vp, pid, dcs] = self.settings.csmp;
                Ok(vec![format!("+CSMP: {fo},{vp},{pid},{dcs}")])
            }
            ("+CSMP", Form::Test) => Ok(vec![]),
            ("+CSDH", Form::Set(a)) => {
                self.settings.csdh = num_arg(&a, 0, 0..=1, Some(0))?;
                Ok(vec![])
            }
            ("+CSDH", Form::Read) => Ok(vec![format!("+CSDH: {}", self.settings.csdh)]),
            ("+CSDH", Form::Test) => Ok(vec!["+CSDH: (0,1)".into()]),
            ("+CNMI", Form::Set(a)) => {
                let args = cmdline::args(&a);
                let limits = [2u8, 3, 3, 2, 1];
                let mut v = self.settings.cnmi;
                for (i, max) in limits.iter().enumerate() {
                    if let Some(Some(s)) = args.get(i) {
                        let n = s.parse::<u8>().map_err(|_| Final::Cms(303))?;
                        if n > *max {
                            return Err(Final::Cms(303));
                        }
                        v[i] = n;
                    }
                }
                if args.len() > 5 {
                    return Err(Final::Cms(303));
                }
                self.settings.cnmi = v;
                // The network's texts wait until the client can hear about them, so a test
                // knows they arrive after its client set up indications.
                if !self.incoming_scheduled && v[1] != 0 && !self.cfg.incoming.is_empty() {
                    self.incoming_scheduled = true;
                    for (from, text) in self.cfg.incoming.clone() {
                        self.out.push(Action::Later {
                            after: self.cfg.incoming_after,
                            event: Event::Incoming { from, text },
                        });
                    }
                }
                Ok(vec![])
            }
            ("+CNMI", Form::Read) => {
                let [a, b, c, d, e] = self.settings.cnmi;
                Ok(vec![format!("+CNMI: {a},{b},{c},{d},{e}")])
            }
            ("+CNMI", Form::Test) => Ok(vec!["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)".into()]),
            ("+CPMS", Form::Set(a)) => {
                self.cms_if_not_ready()?;
                for m in cmdline::args(&a).into_iter().flatten() {
                    if !matches!(m.to_ascii_uppercase().as_str(), "SM" | "ME" | "MT" | "SR") {
                        return Err(Final::Cms(302));
                    }
                }
                let n = self.stored();
                Ok(vec![format!(
                    "+CPMS: {n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS}"
                )])
            }
            ("+CPMS", Form::Read) => {
                self.cms_if_not_ready()?;
                let n = self.stored();
                Ok(vec![format!(
                    "+CPMS: \"SM\",{n},{STORAGE_SLOTS},\"SM\",{n},{STORAGE_SLOTS},\"SM\",{n},{STORAGE_SLOTS}"
                )])
            }
            ("+CPMS", Form::Test) => Ok(vec![
                "+CPMS: (\"SM\",\"ME\",\"MT\",\"SR\"),(\"SM\",\"ME\",\"MT\"),(\"SM\",\"ME\",\"MT\")".into(),
            ]),
            ("+CMGL", Form::Set(a)) => {
                self.cms_if_not_ready()?;
                let v = cmdline::args(&a).into_iter().next().flatten().ok_or(Final::Cms(302))?;
                let wanted = if self.settings.text_mode {
                    match v.to_ascii_uppercase().as_str() {
                        "REC UNREAD" => Some(false),
                        "REC READ" => Some(true),
                        "ALL" => None,
                        "STO UNSENT" | "STO SENT" => return Ok(vec![]),
                        _ => return Err(Final::Cms(302)),
                    }
                } else {
                    match v.as_str() {
                        "0" => Some(false),
                        "1" => Some(true),
                        "4" => None,
                        "2" | "3" => return Ok(vec![]),
                        _ => return Err(Final::Cms(302)),
                    }
                };
                Ok(self.list(wanted))
            }
            ("+CMGL", Form::Exec) => {
                self.cms_if_not_ready()?;
                Ok(self.list(Some(false)))
            }
            ("+CMGL", Form::Test) => Ok(vec![if self.settings.text_mode {
                "+CMGL: (\"REC UNREAD\",\"REC READ\",\"STO UNSENT\",\"STO SENT\",\"ALL\")".into()
            } else {
                "+CMGL: (0-4)".into()
            }]),
            ("+CMGR", Form::Set(a)) => {
                self.cms_if_not_ready()?;
                let i = storage_index(&a)?;
                let text_mode = self.settings.text_mode;
                let slot = self.store.get_mut(i.wrapping_sub(1) as usize);
                let Some(Some(r)) = slot else {
                    return Err(Final::Cms(321));
                };
                let lines = if text_mode {
                    vec![format!("+CMGR: {},{}", text_stat(r.read), r.text_fields)]
                } else {
                    vec![
                        format!("+CMGR: {},,{}", u8::from(r.read), r.tpdu_len),
                        r.pdu_hex.clone(),
                    ]
                };
                r.read = true;
                Ok(lines)
            }
            ("+CMGR", Form::Test) => Ok(vec![]),
            ("+CMGD", Form::Set(a)) => {
                self.cms_if_not_ready()?;
                let flag = cmdline::args(&a).get(1).cloned().flatten();
                match flag.as_deref() {
                    None | Some("0") => {
                        let i = storage_index(&a)?;
                        if let Some(slot) = self.store.get_mut(i.wrapping_sub(1) as usize) {
                            *slot = None;
                        }
                    }
                    // 1: read ones; 2 and 3 also sent/unsent (never stored here); 4: all.
                    Some("1" | "2" | "3") => {
                        for slot in &mut self.store {
                            if slot.as_ref().is_some_and(|r| r.read) {
                                *slot = None;
                            }
                        }
                    }
                    Some("4") => self.store.iter_mut().for_each(|s| *s = None),
                    Some(_) => return Err(Final::Cms(302)),
                }
                Ok(vec![])
            }
            ("+CMGD", Form::Test) => Ok(vec![format!("+CMGD: (1-{STORAGE_SLOTS}),(0-4)")]),
            ("+CMGS", Form::Set(a)) => self.cmgs(&a),
            ("+CMGS", Form::Test) => Ok(vec![]),
            ("+CNMA", Form::Exec) => {
                if self.settings.csms == 1 {
                    Ok(vec![])
                } else {
                    Err(Final::Cms(340))
                }
            }
            ("+CLIP" | "+CRC" | "+CVHU", Form::Set(a)) => {
                let n = num_arg(&a, 0, 0..=1, Some(0))?;
                match name {
                    "+CLIP" => self.settings.clip = n,
                    "+CRC" => self.settings.crc = n,
                    _ => {}
                }
                Ok(vec![])
            }
            ("+CLIP", Form::Read) => Ok(vec![format!("+CLIP: {},1", self.settings.clip)]),
            ("+CRC", Form::Read) => Ok(vec![format!("+CRC: {}", self.settings.crc)]),
            ("^CURC", Form::Set(a)) if self.cfg.profile == Profile::Huawei => {
                self.settings.curc = num_arg(&a, 0, 0..=1, None)? == 1;
                Ok(vec![])
            }
            // Which port carries URCs on a multi-port stick; gammu sets it during its Huawei
            // init and gives up when it fails.
            ("^PORTSEL", Form::Set(a)) if self.cfg.profile == Profile::Huawei => {
                self.settings.portsel = num_arg(&a, 0, 0..=1, None)?;
                Ok(vec![])
            }
            ("^PORTSEL", Form::Read) if self.cfg.profile == Profile::Huawei => {
                Ok(vec![format!("^PORTSEL: {}", self.settings.portsel)])
            }
            ("^PORTSEL", Form::Test) if self.cfg.profile == Profile::Huawei => {
                Ok(vec!["^PORTSEL: (0,1)".into()])
            }
            ("^CURC", Form::Read) if self.cfg.profile == Profile::Huawei => {
                Ok(vec![format!("^CURC: {}", u8::from(self.settings.curc))])
            }
            // Unknown commands get a plain ERROR whatever +CMEE says, as on real modems.
            _ => Err(Final::Error),
        }
    }

    /// A text from the network, routed as `+CNMI` <mt> says (TS 27.005 §3.4.1): 2 hands it
    /// over as `+CMT` without storing it; otherwise it is stored and, unless <mt> is 0,
    /// announced with `+CMTI`. A full storage loses it, as on a real SIM.
    fn receive(&mut self, from: &str, text: &str) {
        let (tpdu_len, pdu_hex) = match submit::deliver(from, text, self.wall) {
            Ok(p) => p,
            Err(e) => {
                self.out.push(Action::Notice(format!(
                    "sim: cannot deliver an incoming text: {e}"
                )));
                return;
            }
        };
        let text_fields = format!("\"{from}\",,\"{}\"\r\n{text}", text_timestamp(self.wall));
        if self.settings.cnmi[1] == 2 {
            let line = if self.settings.text_mode {
                format!("+CMT: {text_fields}")
            } else {
                format!("+CMT: ,{tpdu_len}\r\n{pdu_hex}")
            };
            self.urc(&line);
            return;
        }
        let Some(i) = self.store.iter().position(Option::is_none) else {
            self.out.push(Action::Notice(
                "sim: message storage full; an incoming text was lost".into(),
            ));
            return;
        };
        self.store[i] = Some(StoredReport {
            read: false,
            tpdu_len,
            pdu_hex,
            text_fields,
        });
        if self.settings.cnmi[1] != 0 {
            self.urc(&format!("+CMTI: \"SM\",{}", i + 1));
        }
    }

    fn stored(&self) -> usize {
        self.store.iter().flatten().count()
    }

    /// `+CMGL` lines for stored reports whose read flag matches (`None`: all); listing marks
    /// them read, as TS 27.005 §3.4.2 says.
    fn list(&mut self, wanted: Option<bool>) -> Vec<String> {
        let text_mode = self.settings.text_mode;
        let mut lines = Vec::new();
        for (i, slot) in self.store.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            if wanted.is_some_and(|w| w != r.read) {
                continue;
            }
            if text_mode {
                lines.push(format!(
                    "+CMGL: {},{},{}",
                    i + 1,
                    text_stat(r.read),
                    r.text_fields
                ));
            } else {
                lines.push(format!(
                    "+CMGL: {},{},,{}",
                    i + 1,
                    u8::from(r.read),
                    r.tpdu_len
                ));
                lines.push(r.pdu_hex.clone());
            }
            r.read = true;
        }
        lines
    }

    fn reg_setting(&mut self, name: &str) -> &mut u8 {
        match name {
            "+CGREG" => &mut self.settings.cgreg,
            "+CEREG" => &mut self.settings.cereg,
            _ => &mut self.settings.creg,
        }
    }

    fn cpin(&mut self, a: &str) -> CmdResult {
        let args = cmdline::args(a);
        let first = args.first().cloned().flatten().ok_or(Final::Cme(50))?;
        match self.sim {
            SimLock::Ready => Err(Final::Cme(3)),
            SimLock::Pin { attempts_left } => {
                if Some(&first) == self.pin.as_ref() {
                    self.sim = SimLock::Ready;
                    tracing::info!("sim: PIN accepted");
                    self.unlocked_lines_later();
                    Ok(vec![])
                } else {
                    self.pin_rejections += 1;
                    let left = attempts_left.saturating_sub(1);
                    self.sim = if left == 0 {
                        SimLock::Puk
                    } else {
                        SimLock::Pin {
                            attempts_left: left,
                        }
                    };
                    let notice = format!("sim: pin attempt {} rejected", self.pin_rejections);
                    tracing::warn!("{notice}");
                    self.out.push(Action::Notice(notice));
                    Err(Final::Cme(16))
                }
            }
            SimLock::Puk => {
                let new_pin = args.get(1).cloned().flatten().ok_or(Final::Cme(12))?;
                if first == PUK {
                    self.pin = Some(new_pin);
                    self.sim = SimLock::Ready;
                    self.unlocked_lines_later();
                    Ok(vec![])
                } else {
                    self.pin_rejections += 1;
                    let notice = format!(
                        "sim: puk attempt rejected ({} wrong codes)",
                        self.pin_rejections
                    );
                    self.out.push(Action::Notice(notice));
                    Err(Final::Cme(16))
                }
            }
        }
    }

    fn unlocked_lines_later(&mut self) {
        // The URCs follow the OK of the `+CPIN` command, as on the real modules; the runner
        // writes actions in order, so queue them after the answer via a zero-delay write.
        let saved = std::mem::take(&mut self.out);
        self.unlocked_lines();
        let lines = std::mem::replace(&mut self.out, saved);
        for a in lines {
            if let Action::Write(bytes) = a {
                self.out.push(Action::Later {
                    after: Duration::from_millis(50),
                    event: Event::Urc(bytes),
                });
            }
        }
    }

    fn cmgs(&mut self, a: &str) -> CmdResult {
        self.cms_if_not_ready()?;
        let kind = if self.settings.text_mode {
            let args = cmdline::args(a);
            let raw = args.first().cloned().flatten().ok_or(Final::Cms(305))?;
            let to = self
                .settings
                .cscs
                .decode(raw.as_bytes())
                .ok_or(Final::Cms(305))?;
            let toa = match args.get(1).cloned().flatten() {
                Some(t) => t.parse::<u8>().map_err(|_| Final::Cms(305))?,
                None if to.starts_with('+') => 145,
                None => 129,
            };
            let digits = to.trim_start_matches('+');
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Final::Cms(305));
            }
            let to = if toa == 145 {
                format!("+{digits}")
            } else {
                digits.to_string()
            };
            PromptKind::Text { to }
        } else {
            let len = a.trim().parse::<usize>().map_err(|_| Final::Cms(304))?;
            if len == 0 || len > MAX_TPDU {
                return Err(Final::Cms(304));
            }
            PromptKind::Pdu { tpdu_len: len }
        };
        self.mode = Mode::Prompt {
            kind,
            body: Vec::new(),
        };
        Err(Final::Prompt)
    }

    fn prompt_byte(&mut self, b: u8, now: Duration, wall: OffsetDateTime) {
        let Mode::Prompt { kind, body } = &mut self.mode else {
            return;
        };
        match b {
            0x1A => {
                let kind = kind.clone();
                let body = std::mem::take(body);
                self.mode = Mode::Command;
                if self.settings.echo {
                    self.write(&[b]);
                }
                self.submit(kind, &body, now, wall);
            }
            0x1B => {
                // ESC cancels the send; like SIM800 and Quectel modules we answer OK.
                self.mode = Mode::Command;
                tracing::debug!("sim: send canceled with ESC");
                self.finish(Vec::new(), Final::Ok);
            }
            b'\r' | b'\n' => {
                let text = matches!(kind, PromptKind::Text { .. });
                if text && b == b'\r' {
                    body.push(b'\n');
                    // Text mode: a new line inside the message gets a fresh prompt.
                    self.write(b"\r\n> ");
                }
            }
            0x08 => {
                body.pop();
            }
            _ => {
                if body.len() < MAX_LINE {
                    body.push(b);
                }
                if self.settings.echo {
                    self.write(&[b]);
                }
            }
        }
    }

    fn submit(&mut self, kind: PromptKind, body: &[u8], now: Duration, wall: OffsetDateTime) {
        let facts = match &kind {
            PromptKind::Pdu { tpdu_len } => {
                // The PDU holds the text (an OTP code): only its size reaches the log.
                tracing::trace!(bytes = body.len(), "sim: PDU received");
                match submit::parse(body, *tpdu_len) {
                    Ok(f) => f,
                    Err(why) => {
                        tracing::debug!("sim: rejected PDU: {why}");
                        return self.finish(Vec::new(), Final::Cms(304));
                    }
                }
            }
            PromptKind::Text { to } => {
                let Some(text) = self.settings.cscs.decode(body) else {
                    return self.finish(Vec::new(), Final::Cms(305));
                };
                SubmitFacts {
                    to: to.clone(),
                    text,
                    concat: None,
                    status_report: self.settings.csmp[0] & 0x20 != 0,
                    recipient: None,
                    pdu_hex: None,
                }
            }
        };
        if let Some(n) = self.cfg.unplug_after
            && self.parts_accepted >= n
        {
            tracing::info!("sim: unplugging mid-send after {n} parts");
            self.gone = true;
            self.out
                .push(Action::Notice(format!("sim: unplugged after {n} parts")));
            self.out.push(Action::Unplug);
            return;
        }
        if self.reg_stat(now) != 1 {
            return self.finish(Vec::new(), Final::Cms(331));
        }
        if !self.cfg.send_delay.is_zero() {
            self.out.push(Action::Busy(self.cfg.send_delay));
        }
        let digits = facts.to.trim_start_matches('+');
        if self
            .cfg
            .reject_prefixes
            .iter()
            .any(|p| facts.to.starts_with(p.as_str()) || digits.starts_with(p.as_str()))
        {
            tracing::debug!("sim: destination rejected by --reject");
            return self.finish(Vec::new(), Final::Cms(1));
        }
        if self.cfg.error_rate > 0.0 && self.rng.random::<f64>() < self.cfg.error_rate {
            let code = if self.rng.random_bool(0.5) { 38 } else { 42 };
            tracing::debug!("sim: injected temporary error {code}");
            return self.finish(Vec::new(), Final::Cms(code));
        }
        let mr = self.next_mr;
        self.next_mr = self.next_mr.wrapping_add(1);
        self.parts_accepted += 1;
        self.finish(vec![format!("+CMGS: {mr}")], Final::Ok);
        self.out.push(Action::Accepted(AcceptedPart {
            to: facts.to.clone(),
            text: facts.text.clone(),
            concat: facts.concat,
            pdu_hex: facts.pdu_hex.clone(),
        }));
        let ds = self.settings.cnmi[3];
        if facts.status_report && (ds == 1 || ds == 2) {
            let ts = text_timestamp(wall);
            let toa = if facts.to.starts_with('+') { 145 } else { 129 };
            let text_fields = format!(
                "6,{mr},\"{}\",{toa},\"{ts}\",\"{ts}\",{}",
                facts.to, self.cfg.report_status
            );
            let (tpdu_len, pdu_hex) =
                submit::status_report(&facts, mr, self.cfg.report_status, wall);
            let event = if ds == 2 {
                Event::StoreReport(StoredReport {
                    read: false,
                    tpdu_len,
                    pdu_hex,
                    text_fields,
                })
            } else if self.settings.text_mode {
                Event::Urc(format!("\r\n+CDS: {text_fields}\r\n").into_bytes())
            } else {
                Event::Urc(format!("\r\n+CDS: {tpdu_len}\r\n{pdu_hex}\r\n").into_bytes())
            };
            self.out.push(Action::Later {
                after: self.cfg.report_delay,
                event,
            });
        }
    }
}

/// Text-mode <stat> of a received message (TS 27.005 §3.1).
fn text_stat(read: bool) -> &'static str {
    if read {
        "\"REC READ\""
    } else {
        "\"REC UNREAD\""
    }
}

/// `yy/MM/dd,hh:mm:ss±zz` of TS 27.005 §3.3.2 text-mode timestamps.
fn text_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:02}/{:02}/{:02},{:02}:{:02}:{:02}+00",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn flag(v: Option<u32>) -> Result<bool, Final> {
    match v.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Final::Error),
    }
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

fn storage_index(a: &str) -> Result<u32, Final> {
    cmdline::args(a)
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|n| (1..=STORAGE_SLOTS).contains(n) || *n == 0)
        .ok_or(Final::Cms(321))
}

/// Verbose `+CME ERROR` texts (TS 27.007 §9.2.1).
fn cme_text(n: u16) -> &'static str {
    match n {
        3 => "operation not allowed",
        4 => "operation not supported",
        10 => "SIM not inserted",
        11 => "SIM PIN required",
        12 => "SIM PUK required",
        16 => "incorrect password",
        30 => "no network service",
        50 => "Incorrect parameters",
        _ => "unknown",
    }
}

/// Verbose `+CMS ERROR` texts (TS 27.005 §3.2.5; 0..=127 are TS 24.011 RP causes).
fn cms_text(n: u16) -> &'static str {
    match n {
        1 => "Unassigned (unallocated) number",
        38 => "Network out of order",
        42 => "Congestion",
        302 => "operation not allowed",
        303 => "operation not supported",
        304 => "invalid PDU mode parameter",
        305 => "invalid text mode parameter",
        311 => "SIM PIN required",
        316 => "SIM PUK required",
        321 => "invalid memory index",
        331 => "no network service",
        340 => "no +CNMA acknowledgement expected",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::{SubmitOptions, encode_submit};
    use time::macros::datetime;

    const WALL: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn cfg() -> CoreConfig {
        CoreConfig::from_options(&SimOptions::default())
    }

    fn writes(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// Feeds `input` at time `now_ms` and returns what was written.
    fn run(core: &mut Core, input: &str, now_ms: u64) -> String {
        writes(&core.feed(input.as_bytes(), Duration::from_millis(now_ms), WALL))
    }

    /// A core with echo off, numeric errors.
    fn quiet(cfg: CoreConfig) -> Core {
        let mut core = Core::new(cfg);
        core.boot(Duration::ZERO);
        assert_eq!(run(&mut core, "ATE0\r", 0), "ATE0\r\r\nOK\r\n");
        assert_eq!(run(&mut core, "AT+CMEE=1\r", 0), "\r\nOK\r\n");
        core
    }

    fn check(core: &mut Core, input: &str, expect: &str) {
        assert_eq!(run(core, input, 0), expect, "input {input:?}");
    }

    fn pdu(to: &str, text: &str, srr: bool) -> (usize, String) {
        let opts = SubmitOptions {
            status_report: srr,
            ..SubmitOptions::default()
        };
        let p = &encode_submit(to, text, &opts, 1).unwrap()[0];
        (p.tpdu_len, p.to_hex())
    }

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
    fn echo_repeats_input_and_reset_restores_it() {
        let mut c = Core::new(cfg());
        assert_eq!(run(&mut c, "AT\r", 0), "AT\r\r\nOK\r\n");
        assert_eq!(run(&mut c, "ATE0\r", 0), "ATE0\r\r\nOK\r\n");
        assert_eq!(run(&mut c, "ATZ\r", 0), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 0), "AT\r\r\nOK\r\n");
    }

    #[test]
    fn cmee_selects_the_error_form() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CPIN=\"1\"\r", "\r\n+CME ERROR: 3\r\n");
        check(&mut c, "AT+CMEE=2\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CPIN=\"1\"\r",
            "\r\n+CME ERROR: operation not allowed\r\n",
        );
        check(&mut c, "AT+CMEE=0\r", "\r\nOK\r\n");
        check(&mut c, "AT+CPIN=\"1\"\r", "\r\nERROR\r\n");
    }

    #[test]
    fn pdu_send_answers_a_rotating_reference_and_reports_the_part() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", false);
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let actions = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let first = writes(&actions);
        assert!(first.starts_with("\r\n+CMGS: ") && first.ends_with("\r\n\r\nOK\r\n"));
        let accepted: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Accepted(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            accepted,
            vec![AcceptedPart {
                to: "+15551234567".into(),
                text: "hello".into(),
                concat: None,
                pdu_hex: Some(hex.clone()),
            }]
        );
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let second = run(&mut c, &format!("{hex}\x1a"), 0);
        let mr = |s: &str| s[9..s.find("\r\n\r\n").unwrap()].parse::<u8>().unwrap();
        assert_eq!(mr(&second), mr(&first).wrapping_add(1));
    }

    #[test]
    fn invalid_pdus_answer_304() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", false);
        for (l, body) in [
            (len - 1, hex.clone()),
            (len, hex[..hex.len() - 2].to_string()),
            (2, "00ZZXX".to_string()),
            (1, "0000".to_string()),
        ] {
            check(&mut c, &format!("AT+CMGS={l}\r"), "\r\n> ");
            check(&mut c, &format!("{body}\x1a"), "\r\n+CMS ERROR: 304\r\n");
        }
        check(&mut c, "AT+CMGS=0\r", "\r\n+CMS ERROR: 304\r\n");
        check(&mut c, "AT+CMGS=abc\r", "\r\n+CMS ERROR: 304\r\n");
    }

    #[test]
    fn status_report_is_scheduled_only_with_srr_and_ds_1() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", true);
        let later = |actions: &[Action]| {
            actions.iter().find_map(|a| match a {
                Action::Later {
                    after,
                    event: Event::Urc(b),
                } => Some((*after, String::from_utf8_lossy(b).into_owned())),
                _ => None,
            })
        };
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(later(&a), None, "<ds> is 0 by default");
        check(&mut c, "AT+CNMI=2,1,0,1,0\r", "\r\nOK\r\n");
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let (after, urc) = later(&a).expect("a status report");
        assert_eq!(after, Duration::from_secs(1));
        assert!(urc.starts_with("\r\n+CDS: "), "{urc:?}");
        let (plain_len, plain) = pdu("+15551234567", "hello", false);
        run(&mut c, &format!("AT+CMGS={plain_len}\r"), 0);
        let a = c.feed(format!("{plain}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(later(&a), None, "no TP-SRR, no report");
    }

    /// The `Event::Incoming` timers an input scheduled.
    fn incoming(actions: &[Action]) -> Vec<Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Later {
                    event: e @ Event::Incoming { .. },
                    ..
                } => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn incoming_texts_are_stored_and_announced_once_indications_are_on() {
        let mut c = quiet(CoreConfig {
            incoming: vec![("+15550001111".into(), "Hi there".into())],
            ..cfg()
        });
        // <mt>=0: nothing is on its way yet.
        assert!(incoming(&c.feed(b"AT+CNMI=2,0,0,0,0\r", Duration::ZERO, WALL)).is_empty());
        let events = incoming(&c.feed(b"AT+CNMI=2,1,0,1,0\r", Duration::ZERO, WALL));
        assert_eq!(events.len(), 1);
        // Scheduled once per power-on.
        assert!(incoming(&c.feed(b"AT+CNMI=2,1,0,1,0\r", Duration::ZERO, WALL)).is_empty());
        let event = events.into_iter().next().unwrap();
        assert_eq!(
            writes(&c.fire(event, Duration::ZERO)),
            "\r\n+CMTI: \"SM\",1\r\n"
        );
        let read = run(&mut c, "AT+CMGR=1\r", 0);
        let lines: Vec<&str> = read.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert!(lines[0].starts_with("+CMGR: 0,,"), "{read:?}");
        match crate::pdu::decode_hex(lines[1]).unwrap() {
            crate::pdu::Pdu::Deliver(d) => {
                assert_eq!(d.originator.to_string(), "+15550001111");
                assert_eq!(d.text, "Hi there");
            }
            other => panic!("{other:?}"),
        }
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CMGL=\"ALL\"\r",
            "\r\n+CMGL: 1,\"REC READ\",\"+15550001111\",,\"26/11/22,10:00:00+00\"\r\nHi there\r\n\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGD=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGL=\"ALL\"\r", "\r\nOK\r\n");
    }

    #[test]
    fn mt_2_routes_an_incoming_text_without_storing_it() {
        let mut c = quiet(CoreConfig {
            incoming: vec![("Bank".into(), "Hello".into())],
            ..cfg()
        });
        let event = incoming(&c.feed(b"AT+CNMI=2,2,0,0,0\r", Duration::ZERO, WALL)).remove(0);
        let urc = writes(&c.fire(event, Duration::ZERO));
        assert!(urc.starts_with("\r\n+CMT: ,"), "{urc:?}");
        check(&mut c, "AT+CMGL=4\r", "\r\nOK\r\n");
    }

    #[test]
    fn ds_2_stores_reports_for_cmgr_cmgl_and_cmgd() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CNMI=2,1,0,2,0\r", "\r\nOK\r\n");
        let (len, hex) = pdu("+15551234567", "hello", true);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let report = a
            .iter()
            .find_map(|x| match x {
                Action::Later {
                    event: e @ Event::StoreReport(_),
                    ..
                } => Some(e.clone()),
                _ => None,
            })
            .expect("a report to store");
        let Event::StoreReport(stored) = &report else {
            unreachable!()
        };
        let pdu_hex = stored.pdu_hex.clone();
        let len = stored.tpdu_len;
        assert_eq!(
            writes(&c.fire(report, Duration::ZERO)),
            "\r\n+CDSI: \"SR\",1\r\n"
        );
        check(
            &mut c,
            "AT+CPMS?\r",
            "\r\n+CPMS: \"SM\",1,30,\"SM\",1,30,\"SM\",1,30\r\n\r\nOK\r\n",
        );
        check(
            &mut c,
            "AT+CMGL=0\r",
            &format!("\r\n+CMGL: 1,0,,{len}\r\n\r\n{pdu_hex}\r\n\r\nOK\r\n"),
        );
        check(&mut c, "AT+CMGL=0\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CMGR=1\r",
            &format!("\r\n+CMGR: 1,,{len}\r\n\r\n{pdu_hex}\r\n\r\nOK\r\n"),
        );
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        let text = run(&mut c, "AT+CMGR=1\r", 0);
        assert!(text.starts_with("\r\n+CMGR: \"REC READ\",6,"), "{text:?}");
        assert!(
            text.contains(",\"+15551234567\",145,\"26/11/22,10:00:00+00\","),
            "{text:?}"
        );
        check(&mut c, "AT+CMGD=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGR=1\r", "\r\n+CMS ERROR: 321\r\n");
        check(&mut c, "AT+CMGL=\"ALL\"\r", "\r\nOK\r\n");
    }

    #[test]
    fn text_mode_status_report_urc() {
        let mut c = quiet(cfg());
        check(
            &mut c,
            "AT+CMGF=1;+CNMI=2,1,0,1,0;+CSMP=49,167,0,0\r",
            "\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGS=\"+15551234567\"\r", "\r\n> ");
        let a = c.feed(b"hi\x1a", Duration::ZERO, WALL);
        let urc = a.iter().find_map(|x| match x {
            Action::Later {
                event: Event::Urc(b),
                ..
            } => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        });
        let w = writes(&a);
        let mr = &w[9..w.find("\r\n\r\n").unwrap()];
        assert_eq!(
            urc.as_deref(),
            Some(
                format!(
                    "\r\n+CDS: 6,{mr},\"+15551234567\",145,\"26/11/22,10:00:00+00\",\"26/11/22,10:00:00+00\",0\r\n"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn text_mode_send_in_ucs2() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CSCS=\"UCS2\"\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CSCS?\r",
            "\r\n+CSCS: \"0055004300530032\"\r\n\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGS=\"002B0031003200330034\"\r", "\r\n> ");
        let a = c.feed(b"00480069\x1a", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(x, Action::Accepted(p)
            if p.to == "+1234" && p.text == "Hi" && p.pdu_hex.is_none())));
    }

    #[test]
    fn text_mode_line_breaks_get_a_new_prompt() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGS=\"5551234\"\r", "\r\n> ");
        check(&mut c, "line1\r", "\r\n> ");
        let a = c.feed(b"line2\x1a", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(x, Action::Accepted(p)
            if p.to == "5551234" && p.text == "line1\nline2")));
    }

    #[test]
    fn faults_reject_no_network_and_error_rate() {
        let mut c = quiet(CoreConfig {
            reject_prefixes: vec!["+1555".into()],
            ..cfg()
        });
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 1\r\n");

        let mut c = quiet(CoreConfig {
            no_network: true,
            ..cfg()
        });
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,2\r\n\r\nOK\r\n");
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 331\r\n");

        let mut c = quiet(CoreConfig {
            error_rate: 1.0,
            send_delay: Duration::from_millis(250),
            ..cfg()
        });
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert!(a.contains(&Action::Busy(Duration::from_millis(250))));
        let w = writes(&a);
        assert!(
            w == "\r\n+CMS ERROR: 38\r\n" || w == "\r\n+CMS ERROR: 42\r\n",
            "{w:?}"
        );
    }

    #[test]
    fn network_after_registers_at_its_time_with_urcs() {
        let mut c = Core::new(CoreConfig {
            network_after: Some(Duration::from_secs(5)),
            ..cfg()
        });
        let boot = c.boot(Duration::ZERO);
        assert!(boot.contains(&Action::Later {
            after: Duration::from_secs(5),
            event: Event::NetworkUp
        }));
        run(&mut c, "ATE0\r", 0);
        check(&mut c, "AT+CREG=1;+CGREG=1\r", "\r\nOK\r\n");
        assert_eq!(
            run(&mut c, "AT+CREG?\r", 1000),
            "\r\n+CREG: 1,2\r\n\r\nOK\r\n"
        );
        let urcs = writes(&c.fire(Event::NetworkUp, Duration::from_secs(5)));
        assert_eq!(urcs, "\r\n+CREG: 1\r\n\r\n+CGREG: 1\r\n");
        assert_eq!(
            run(&mut c, "AT+CREG?\r", 5000),
            "\r\n+CREG: 1,1\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn pin_attempts_are_counted_and_block_after_three() {
        let mut c = quiet(CoreConfig {
            pin: Some("1234".into()),
            ..cfg()
        });
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,0\r\n\r\nOK\r\n");
        let (len, _) = pdu("+15551234567", "x", false);
        check(
            &mut c,
            &format!("AT+CMGS={len}\r"),
            "\r\n+CMS ERROR: 311\r\n",
        );
        let a = c.feed(b"AT+CPIN=\"9999\"\r", Duration::ZERO, WALL);
        assert!(a.contains(&Action::Notice("sim: pin attempt 1 rejected".into())));
        assert_eq!(writes(&a), "\r\n+CME ERROR: 16\r\n");
        check(&mut c, "AT+CPIN=\"9999\"\r", "\r\n+CME ERROR: 16\r\n");
        check(&mut c, "AT+CPIN=\"9999\"\r", "\r\n+CME ERROR: 16\r\n");
        assert_eq!(c.pin_rejections(), 3);
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PUK\r\n\r\nOK\r\n");
        check(&mut c, "AT+CPIN=\"1234\"\r", "\r\n+CME ERROR: 12\r\n");
        check(
            &mut c,
            &format!("AT+CPIN=\"{PUK}\",\"4321\"\r"),
            "\r\nOK\r\n",
        );
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: READY\r\n\r\nOK\r\n");
    }

    #[test]
    fn identity_options_change_cgsn_and_ccid_even_when_locked() {
        let mut c = quiet(CoreConfig {
            imei: Some("490154203237518".into()),
            iccid: Some("8944500102198304826".into()),
            pin: Some("1234".into()),
            ..cfg()
        });
        check(&mut c, "AT+CGSN\r", "\r\n490154203237518\r\n\r\nOK\r\n");
        check(
            &mut c,
            "AT+CCID\r",
            "\r\n+CCID: 8944500102198304826\r\n\r\nOK\r\n",
        );
        check(
            &mut c,
            "AT^ICCID?\r",
            "\r\n^ICCID: 8944500102198304826\r\n\r\nOK\r\n",
        );
        assert!(run(&mut c, "ATI\r", 0).contains("IMEI: 490154203237518"));
        let mut d = quiet(cfg());
        check(&mut d, "AT+CGSN\r", "\r\n356938035643809\r\n\r\nOK\r\n");
        check(
            &mut d,
            "AT+ICCID\r",
            &format!("\r\n+ICCID: {}\r\n\r\nOK\r\n", super::super::DEFAULT_ICCID),
        );
    }

    #[test]
    fn hang_after_discards_until_hang_for_passes() {
        let mut c = quiet(CoreConfig {
            hang_after: Some(3),
            hang_for: Some(Duration::from_secs(2)),
            ..cfg()
        });
        assert_eq!(run(&mut c, "AT\r", 0), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 100), "");
        assert_eq!(run(&mut c, "AT\r", 1500), "");
        assert_eq!(run(&mut c, "AT\r", 2200), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 2300), "\r\nOK\r\n", "hangs once");
    }

    #[test]
    fn unplug_after_vanishes_at_the_next_send() {
        let mut c = quiet(CoreConfig {
            unplug_after: Some(1),
            ..cfg()
        });
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        assert!(run(&mut c, &format!("{hex}\x1a"), 0).contains("+CMGS"));
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(a.last(), Some(&Action::Unplug));
        assert_eq!(writes(&a), "");
        assert!(
            c.feed(b"AT\r", Duration::ZERO, WALL).is_empty(),
            "gone for good"
        );
    }

    #[test]
    fn radio_off_deregisters_and_numeric_results_follow_atv0() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CFUN=0\r", "\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,0\r\n\r\nOK\r\n");
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 331\r\n");
        check(&mut c, "AT+CFUN=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,1\r\n\r\nOK\r\n");
        check(&mut c, "ATV0\r", "0\r");
        check(&mut c, "AT+CSQ\r", "+CSQ: 21,99\r\n0\r");
        check(&mut c, "AT+BOGUS\r", "4\r");
        check(&mut c, "AT+CMGR=1\r", "+CMS ERROR: 321\r\n");
    }

    #[test]
    fn escape_cancels_the_prompt() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGS=10\r", "\r\n> ");
        check(&mut c, "0011\x1b", "\r\nOK\r\n");
        check(&mut c, "AT\r", "\r\nOK\r\n");
    }

    #[test]
    fn simcom_boot_lines_and_reset() {
        let mut c = Core::new(CoreConfig {
            profile: Profile::Simcom,
            ..cfg()
        });
        assert_eq!(
            writes(&c.boot(Duration::ZERO)),
            "\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"
        );
        let a = c.feed(b"AT+CFUN=1,1\r", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Later {
                event: Event::Booted,
                ..
            }
        )));
        assert!(writes(&c.fire(Event::Booted, Duration::ZERO)).contains("SMS Ready"));
    }

    #[test]
    fn huawei_noise_is_muted_by_curc() {
        let mut c = quiet(CoreConfig {
            profile: Profile::Huawei,
            ..cfg()
        });
        let noise: String = (0..20)
            .map(|_| writes(&c.fire(Event::Noise, Duration::ZERO)))
            .collect();
        assert!(noise.contains("\r\n^"), "{noise:?}");
        run(&mut c, "AT^CURC=0\r", 0);
        for _ in 0..20 {
            assert_eq!(writes(&c.fire(Event::Noise, Duration::ZERO)), "");
            check(&mut c, "AT+CSQ\r", "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
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
            let mut core = Core::new(CoreConfig { profile: Profile::Huawei, ..cfg() });
            let _ = core.feed(&input, Duration::ZERO, WALL);
            let mut text_mode = Core::new(cfg());
            let _ = text_mode.feed(b"AT+CMGF=1;+CSCS=\"UCS2\"\r", Duration::ZERO, WALL);
            let _ = text_mode.feed(&input, Duration::ZERO, WALL);
        }
    }
}
