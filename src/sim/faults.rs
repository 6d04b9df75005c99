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
        }
    }
}
