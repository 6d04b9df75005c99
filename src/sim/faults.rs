//! The faults a simulator injects on demand, in one place: [`super::SimOptions`] carries them
//! from the command line (or a test) to the core, which acts on them, and the runner, which
//! carries out unplugs and replugs.

use std::time::Duration;

/// What goes wrong, and when; `Default` is a modem on a network that works.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Network time per SMS part before `+CMGS:` is answered.
    pub send_delay: Duration,
    /// Share (0..=1) of sends that fail with a temporary `+CMS ERROR` (38 or 42).
    pub error_rate: f64,
    /// Destinations starting with one of these fail permanently with `+CMS ERROR: 1`.
    pub reject_prefixes: Vec<String>,
    /// Never registers (stat 2, searching); sends fail with `+CMS ERROR: 331`.
    pub no_network: bool,
    /// Registers only after this long, with `+CREG: 1` URCs when enabled.
    pub network_after: Option<Duration>,
    /// How long after `+CMGS:` a requested status report (`+CDS`) arrives.
    pub report_delay: Duration,
    /// TP-ST of those reports (0: delivered).
    pub report_status: u8,
    /// Stops answering after this many command lines.
    pub hang_after: Option<u64>,
    /// Ends a hang after this long; `None` hangs forever.
    pub hang_for: Option<Duration>,
    /// After this many accepted parts the next `AT+CMGS` makes the modem vanish mid-send.
    pub unplug_after: Option<u64>,
    /// Comes back (fresh pty, same link, state reset) this long after an unplug; `None` stays
    /// gone.
    pub replug_after: Option<Duration>,
    /// The `+CMS ERROR` codes `error_rate` draws from, evenly (TS 27.005 §3.2.5).
    pub error_codes: Vec<u16>,
    /// Registration stat forced by the control socket (TS 27.007 §7.2: 0 not searching, 1
    /// home, 2 searching, 3 denied, 4 unknown, 5 roaming); `None` follows `no_network` and
    /// `network_after`.
    pub registration: Option<u8>,
    /// `+CSQ` <rssi> and <ber> while registered (TS 27.007 §8.5).
    pub signal: (u8, u8),
    /// The operator `+COPS?` names: long, short and numeric; `None` is the simulator's own.
    pub operator: Option<[String; 3]>,
    /// How status reports are answered when no rule matches; `None` is TP-ST `report_status`
    /// after `report_delay`.
    pub report_default: Option<ReportOutcome>,
    /// Per-message answers set through the control socket, first match wins: a TP-MR rule is
    /// used once, a recipient rule until cleared.
    pub report_rules: Vec<ReportRule>,
    /// The SIM is out of its holder (the control socket's `sim` op): `+CPIN?` answers
    /// `+CME ERROR: 10`, SMS commands `+CMS ERROR: 310`, no registration. A physical state, so
    /// it survives a replug.
    pub sim_absent: bool,
    /// The SIM's PIN is blocked (it wants the PUK) from power-on, as a SIM blocked at run time
    /// stays blocked across a replug.
    pub sim_blocked: bool,
}

/// How the network answers the status report of one sent part (TS 23.040 §9.2.3.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// One final report with this TP-ST (0 delivered, 0x40..=0x7F failed) after `delay`.
    Status {
        /// TP-ST.
        status: u8,
        /// After `+CMGS:`.
        delay: Duration,
    },
    /// A report saying the SC is still trying (TP-ST 0x20..=0x3F) after `delay`, then a final
    /// one with `then_status` after `then_delay` more.
    Delayed {
        /// TP-ST of the first report.
        status: u8,
        /// After `+CMGS:`.
        delay: Duration,
        /// TP-ST of the final report.
        then_status: u8,
        /// After the first report.
        then_delay: Duration,
    },
    /// No report, ever.
    Never,
    /// Kept until the control socket answers it (`report` with this TP-MR or recipient).
    Hold,
}

/// Which sent part a [`ReportRule`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// The part with this TP-MR (the `+CMGS: <mr>` answer).
    Mr(u8),
    /// Every part to this recipient (as logged: `+` and digits, or as sent).
    To(String),
}

/// One per-message answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRule {
    /// Which part.
    pub target: ReportTarget,
    /// What its report says.
    pub outcome: ReportOutcome,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            send_delay: Duration::ZERO,
            error_rate: 0.0,
            reject_prefixes: Vec::new(),
            no_network: false,
            network_after: None,
            report_delay: Duration::from_secs(1),
            report_status: 0,
            hang_after: None,
            hang_for: None,
            unplug_after: None,
            replug_after: None,
            error_codes: vec![38, 42],
            registration: None,
            signal: (21, 99),
            operator: None,
            report_default: None,
            report_rules: Vec::new(),
            sim_absent: false,
            sim_blocked: false,
        }
    }
}
