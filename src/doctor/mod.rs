//! `simgate doctor`: gathers facts about serial ports, ModemManager and modems, then judges them.
//!
//! Two halves, kept apart so every judgement is testable without hardware:
//! - [`gather`] does the I/O: it reads sysfs (`/sys/class/tty/*/device` up to the USB interface
//!   and device), the `/dev/serial/by-id` and simgate udev symlinks, `/proc/*/comm` and
//!   `/proc/*/fd`, and talks AT to every candidate port. It records what it saw and judges
//!   nothing.
//! - [`diagnose`] is pure: [`Facts`] in, [`Finding`]s out, each with a plain-language fix.
//!
//! Doctor never changes a modem: it sends no PIN and stores no setting, so running it on a
//! production machine is safe (apart from briefly holding a port that a stopped daemon would use).

pub mod advice;
pub mod diagnose;
pub mod gather;

use std::path::PathBuf;

use crate::modem::init::SimState;

pub use diagnose::{diagnose, usable_ports};

/// Everything doctor learned about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Whether the ports were named by the user (`--device`) rather than found by scanning:
    /// a named port that is not a modem is an error, a scanned one is usually just another
    /// interface of a multi-port dongle.
    pub explicit: bool,
    /// The ports looked at, in a stable order.
    pub ports: Vec<PortFacts>,
    /// The `ModemManager` processes running (it probes and grabs serial modems).
    pub modem_manager: Vec<Holder>,
    /// Whether `/sys/class/tty` could be read: without it a "no ports" verdict means little.
    pub sysfs_readable: bool,
    /// Whether doctor runs as root: root opens every port, so a successful open then says
    /// nothing about whether the service's user may.
    pub as_root: bool,
    /// The config file's path and modems, when one was read: findings then say whether the
    /// modem found is the one configured and whether a PIN is configured for it.
    pub config: Option<ConfigFacts>,
}

/// What doctor took from the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFacts {
    /// The file, to name in fixes.
    pub path: PathBuf,
    /// Why `serve` would refuse the file (it does not load, or a modem's PIN cannot be used:
    /// the checks of `Config::check_startup`), if it would; then `modems` is empty. That
    /// matters more than any port.
    pub error: Option<String>,
    /// The `[[modem]]` tables.
    pub modems: Vec<ConfiguredModem>,
}

/// One `[[modem]]` of the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguredModem {
    /// `device` as written.
    pub device: PathBuf,
    /// `device` with symlinks resolved, to match it against a port found under another name.
    pub resolved: Option<PathBuf>,
    /// `pin_file`, if set: a SIM asking for its PIN is then expected while simgate is stopped.
    pub pin_file: Option<PathBuf>,
}

/// One serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFacts {
    /// The path as the user gave it or as found (`/dev/ttyUSB2`, a symlink to a pty).
    pub path: PathBuf,
    /// Where the path leads after resolving symlinks, when that differs from `path`, so the
    /// user sees that `/dev/simgate-modem` is really `/dev/ttyUSB2`.
    pub target: Option<PathBuf>,
    /// Symlinks pointing at this port (`/dev/serial/by-id/...`, `/dev/simgate-modem`): the
    /// stable names to put in the config file.
    pub links: Vec<PathBuf>,
    /// USB identity, `None` for a pty or a built-in UART.
    pub usb: Option<UsbInfo>,
    /// Kernel driver bound to the port (`option`, `qcserial`, `cdc_acm`, `serial8250`...).
    pub driver: Option<String>,
    /// Processes (other than doctor) that have the port open, as far as `/proc` lets us see.
    pub holders: Vec<Holder>,
    /// What happened when doctor tried to open the port.
    pub open: OpenOutcome,
    /// What the port answered, when it opened.
    pub at: Option<AtOutcome>,
}

/// What sysfs says about the USB device behind a port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsbInfo {
    /// `idVendor` (four hex digits), what `lsusb` shows first.
    pub vendor_id: String,
    /// `idProduct`: tells a dongle in CD-ROM mode from the same dongle in modem mode.
    pub product_id: String,
    /// `manufacturer` string descriptor, if the device has one.
    pub manufacturer: Option<String>,
    /// `product` string descriptor.
    pub product: Option<String>,
    /// `serial` string descriptor: tells two identical dongles apart in udev rules.
    pub serial: Option<String>,
    /// `bInterfaceNumber` of the interface the port belongs to: dongles expose several ports
    /// and only some speak AT, and udev rules select the AT one by this number.
    pub interface: Option<u8>,
}

/// A process holding something open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Process id, for `kill` or `systemctl status`.
    pub pid: u32,
    /// Its `comm` name, which is what the user recognises.
    pub name: String,
}

/// The result of opening a port, in the terms a fix depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenOutcome {
    /// Opened (and closed again after the AT check).
    Opened,
    /// Nothing at that path.
    NotFound,
    /// The user may not open it; `group` owns the device node (usually `dialout`).
    PermissionDenied {
        /// The owning group's name, when it can be looked up.
        group: Option<String>,
    },
    /// Someone else holds it exclusively.
    Busy,
    /// Not opened: other processes have it open (see `holders`). Writing `AT` into a login
    /// prompt or a terminal program's session would disturb it, and simgate could not share the
    /// port anyway.
    InUse,
    /// Not opened: it is the kernel console (`/sys/class/tty/console/active`), which carries
    /// kernel messages and often a login prompt, never a modem.
    Console,
    /// The path is not a terminal at all (e.g. `/dev/null`, a regular file).
    NotASerialPort,
    /// Another failure, in the system's words.
    Failed(String),
}

/// What a port said to `AT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtOutcome {
    /// No `OK` within the timeout: not an AT port, a hung modem, or nothing connected.
    NoAnswer,
    /// It answered; what the modem then told us.
    Modem(ModemFacts),
    /// It answered `AT` but the link failed during the later questions.
    Lost(String),
}

/// What an answering modem reports. Every field is optional because firmware refuses some
/// queries; a refusal is a fact too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModemFacts {
    /// `+CGMI` (TS 27.007 §5.1).
    pub manufacturer: Option<String>,
    /// `+CGMM` (TS 27.007 §5.2).
    pub model: Option<String>,
    /// `+CPIN?` (TS 27.007 §8.3); `None` when the modem refused to say.
    pub sim: Option<SimState>,
    /// `<stat>` of `+CREG?` (TS 27.007 §7.2), circuit-switched registration.
    pub creg: Option<u8>,
    /// `<stat>` of `+CEREG?` (TS 27.007 §10.1.22): LTE-only modems register here and send SMS
    /// over SGs/IMS while `+CREG` says "searching".
    pub cereg: Option<u8>,
    /// `+COPS?` operator name (TS 27.007 §7.3).
    pub operator: Option<String>,
    /// `+CSQ` (TS 27.007 §8.5) in dBm; `None` for rssi 99 ("not known or not detectable").
    pub signal_dbm: Option<i32>,
    /// Whether `+CSQ` answered at all (to tell "no signal" from "refused").
    pub signal_answered: bool,
    /// `+CSCA?` (TS 27.005 §3.3.1) service centre address; `Some("")` when it is empty.
    pub smsc: Option<String>,
}

impl ModemFacts {
    /// The registration `<stat>` that matters for SMS: a registered domain wins, else the
    /// circuit-switched answer, else the LTE one.
    pub fn registration(&self) -> Option<u8> {
        let registered = |s: &Option<u8>| s.filter(|s| crate::at::cmd::reg_is_registered(*s));
        registered(&self.creg)
            .or(registered(&self.cereg))
            .or(self.creg)
            .or(self.cereg)
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Stops simgate from sending.
    Error,
    /// Sending may work, but something will likely bite later.
    Warning,
    /// Worth knowing; nothing to fix.
    Info,
}

impl Severity {
    /// The word used in text and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One problem and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters (findings are shown most severe first).
    pub severity: Severity,
    /// The port it is about; `None` for machine-wide findings (ModemManager, no modem).
    pub port: Option<PathBuf>,
    /// What is wrong, in plain words.
    pub problem: String,
    /// What to do, as concrete as a command line when one exists.
    pub fix: String,
}
