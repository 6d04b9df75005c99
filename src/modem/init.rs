//! The AT steps of bringing a modem up, each a small function over an [`AtClient`], shared by
//! the driver, `simgate modem probe` ([`super::probe`]), `doctor` and discovery; and the driver's
//! init sequence built from them ([`initialize`], with the SIM unlock).
//!
//! Every step distinguishes "the modem said no" (tolerated where the step is optional) from
//! "the modem is gone or hung" ([`AtError::is_fatal`]), which always propagates so the caller can
//! recover; optional questions go through [`AtClient::ask`].

use std::time::Duration;

use tokio::sync::watch;

use super::{ModemConfig, ModemStatus};
use crate::at::cmd::{self, Field, Param};
use crate::at::{AtClient, AtError, CmeError, Refusal};

fn line(r: Result<String, cmd::CmdError>) -> String {
    // Every name and parameter below is a literal that `cmd` accepts; the tests prove it.
    r.unwrap_or_else(|e| unreachable!("static AT command refused by at::cmd: {e}"))
}

/// Gets the modem's attention: a bare CR and ESC first (to end a half-typed line or an open
/// `> ` prompt), then `AT` until it answers `OK` (echo and line noise are tolerated by the
/// digester). `attempts` tries of `timeout` each.
pub async fn sync(client: &mut AtClient, attempts: u32, timeout: Duration) -> Result<(), AtError> {
    client.write_raw(&[crate::at::engine::ESC, b'\r']).await?;
    let mut last = AtError::Timeout {
        payload_written: false,
    };
    for _ in 0..attempts.max(1) {
        match client.command("AT", timeout).await {
            Ok(_) => return Ok(()),
            Err(e @ AtError::Closed { .. }) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What `+CGMI`, `+CGMM`, `+CGMR` and `+CGSN` (TS 27.007 §5.1-5.4) say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Manufacturer.
    pub manufacturer: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Firmware revision.
    pub revision: Option<String>,
    /// IMEI (serial number).
    pub imei: Option<String>,
}

/// The answer text of an identification command: its lines joined, without a `+CGMI:`-style
/// prefix that some firmware adds.
fn ident_text(lines: Vec<String>, prefix: &str) -> Option<String> {
    let text = lines
        .iter()
        .map(|l| l.strip_prefix(prefix).unwrap_or(l).trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}

/// Identifies the modem; a refused command leaves its field `None`.
pub async fn identify(client: &mut AtClient, timeout: Duration) -> Result<Identity, AtError> {
    let mut id = Identity::default();
    for (name, slot) in [
        ("+CGMI", &mut id.manufacturer),
        ("+CGMM", &mut id.model),
        ("+CGMR", &mut id.revision),
        ("+CGSN", &mut id.imei),
    ] {
        if let Some(lines) = client.ask(&line(cmd::execute(name)), timeout).await? {
            *slot = ident_text(lines, &format!("{name}:"));
        }
    }
    Ok(id)
}

/// The IMEI alone (`+CGSN`, TS 27.007 §5.4), for discovery probes that need nothing else; a
/// refusal is `None`.
pub async fn imei(client: &mut AtClient, timeout: Duration) -> Result<Option<String>, AtError> {
    Ok(client
        .ask(&line(cmd::execute("+CGSN")), timeout)
        .await?
        .and_then(|lines| ident_text(lines, "+CGSN:")))
}

/// The SIM's ICCID. TS 27.007 has no command for it, so vendors invented theirs: `AT+CCID`
/// (SIMCom, Quectel, most generic firmware), `AT+ICCID` and Huawei's `AT^ICCID?`; they are
/// tried in that order and the first answer wins. Digits (and a trailing `F` filler) only.
pub async fn iccid(client: &mut AtClient, timeout: Duration) -> Result<Option<String>, AtError> {
    for (command, prefix) in [
        ("AT+CCID", "+CCID:"),
        ("AT+ICCID", "+ICCID:"),
        ("AT^ICCID?", "^ICCID:"),
    ] {
        if let Some(lines) = client.ask(command, timeout).await?
            && let Some(iccid) = lines.iter().find_map(|l| parse_iccid(l, prefix))
        {
            return Ok(Some(iccid));
        }
    }
    Ok(None)
}

/// The ICCID in one answer line (`+CCID: "8944..."`, or the bare digits some firmware sends).
pub fn parse_iccid(line: &str, prefix: &str) -> Option<String> {
    let text = line.strip_prefix(prefix).unwrap_or(line).trim();
    let text = text.trim_matches('"').trim();
    let ok = (18..=22).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'F' || b == b'f');
    ok.then(|| text.to_ascii_uppercase())
}

/// The SIM's IMSI from `AT+CIMI` (TS 27.007 §5.6): it names the subscription (country,
/// network, subscriber), so it tells which SIM is in a modem. Locked SIMs refuse it: `None`.
pub async fn imsi(client: &mut AtClient, timeout: Duration) -> Result<Option<String>, AtError> {
    Ok(client
        .ask(&line(cmd::execute("+CIMI")), timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| parse_imsi(l))))
}

/// An IMSI answer line: up to 15 digits (TS 23.003 §2.2), with or without a `+CIMI:` prefix.
pub fn parse_imsi(line: &str) -> Option<String> {
    let text = line.strip_prefix("+CIMI:").unwrap_or(line).trim();
    let text = text.trim_matches('"');
    ((6..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.to_string())
}

/// The service centre address from `AT+CSCA?` (TS 27.005 §3.3.1): `Some("")` when the SIM has
/// none set (sends then fail with `+CMS ERROR: 330`), `None` when the modem does not say.
pub async fn smsc(client: &mut AtClient, timeout: Duration) -> Result<Option<String>, AtError> {
    Ok(client
        .ask(&line(cmd::query("+CSCA")), timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| parse_csca(l))))
}

/// `+CSCA: "<sca>"[,<tosca>]` (TS 27.005 §3.3.1) → the address, possibly empty.
pub fn parse_csca(line: &str) -> Option<String> {
    match cmd::fields(line, "+CSCA:").ok()?.first()? {
        Field::Quoted(s) | Field::Bare(s) => Some(s.to_string()),
        Field::Empty => Some(String::new()),
    }
}

/// The SIM as `+CPIN?` (TS 27.007 §8.3) reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimState {
    /// Unlocked.
    Ready,
    /// Waiting for the PIN.
    PinRequired,
    /// Blocked: wants the PUK.
    PukRequired,
    /// No SIM in the slot.
    NotInserted,
    /// Busy (still booting); ask again shortly.
    Busy,
    /// Anything else (`PH-SIM PIN`, `SIM PIN2`, a SIM failure), as the modem said it.
    Other(String),
}

impl SimState {
    /// A short word for probe output.
    pub fn describe(&self) -> String {
        match self {
            SimState::Ready => "ready".into(),
            SimState::PinRequired => "PIN required".into(),
            SimState::PukRequired => "PUK required (blocked)".into(),
            SimState::NotInserted => "not inserted".into(),
            SimState::Busy => "busy".into(),
            SimState::Other(s) => s.clone(),
        }
    }
}

/// Asks `+CPIN?`.
pub async fn sim_state(client: &mut AtClient, timeout: Duration) -> Result<SimState, AtError> {
    match client.command(&line(cmd::query("+CPIN")), timeout).await {
        Ok(lines) => {
            let code = lines
                .iter()
                .find_map(|l| cmd::parse_cpin(l).ok())
                .unwrap_or_default();
            Ok(match code.as_str() {
                "READY" => SimState::Ready,
                "SIM PIN" => SimState::PinRequired,
                "SIM PUK" => SimState::PukRequired,
                other => SimState::Other(other.to_string()),
            })
        }
        Err(AtError::Cme(CmeError::SimNotInserted)) => Ok(SimState::NotInserted),
        Err(AtError::Cme(CmeError::SimBusy)) => Ok(SimState::Busy),
        Err(AtError::Cme(CmeError::SimPukRequired)) => Ok(SimState::PukRequired),
        Err(AtError::Cme(CmeError::SimPinRequired)) => Ok(SimState::PinRequired),
        Err(AtError::Cme(CmeError::SimFailure)) => Ok(SimState::Other("SIM failure".into())),
        Err(e) => Err(e),
    }
}

/// Why unlocking failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockError {
    /// The SIM said the PIN is wrong. Never try it again.
    Rejected,
    /// The PIN cannot be sent (quotes or control characters in it).
    Unsendable,
    /// Another refusal or a link problem.
    At(AtError),
}

/// Sends the PIN once (`AT+CPIN="<pin>"`). The PIN is not logged: the engine logs the command
/// line at trace level, so the line is built here and the log shows only that a PIN was sent.
pub async fn unlock(
    client: &mut AtClient,
    pin: &str,
    timeout: Duration,
) -> Result<(), UnlockError> {
    let command = cmd::set("+CPIN", &[Param::Str(pin)]).map_err(|_| UnlockError::Unsendable)?;
    tracing::info!("sending the configured SIM PIN (once)");
    match client.command(&command, timeout).await {
        Ok(_) => Ok(()),
        Err(AtError::Cme(CmeError::IncorrectPassword)) => Err(UnlockError::Rejected),
        // With +CMEE=0 a wrong PIN is a bare ERROR.
        Err(AtError::Error) => Err(UnlockError::Rejected),
        Err(e) => Err(UnlockError::At(e)),
    }
}

/// The best registration `<stat>` of `+CREG?`, `+CGREG?` and `+CEREG?` (TS 27.007 §7.2,
/// §10.1.19, §10.1.22): circuit-switched first, then packet domains, since LTE-only modems
/// send SMS over IMS/SGs while reporting CREG "searching". `None` if the modem answers none.
pub async fn registration(client: &mut AtClient, timeout: Duration) -> Result<Option<u8>, AtError> {
    let mut best: Option<u8> = None;
    for name in ["+CREG", "+CEREG", "+CGREG"] {
        let Some(lines) = client.ask(&line(cmd::query(name)), timeout).await? else {
            continue;
        };
        let prefix = format!("{name}:");
        if let Some(stat) = lines
            .iter()
            .find_map(|l| cmd::parse_reg_stat(l, &prefix).ok())
        {
            if cmd::reg_is_registered(stat) {
                return Ok(Some(stat));
            }
            best.get_or_insert(stat);
        }
    }
    Ok(best)
}

/// The operator name from `+COPS?` (TS 27.007 §7.3).
pub async fn operator(client: &mut AtClient, timeout: Duration) -> Result<Option<String>, AtError> {
    Ok(client
        .ask(&line(cmd::query("+COPS")), timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| cmd::parse_cops(l).ok().flatten())))
}

/// Signal strength in dBm from `+CSQ` (TS 27.007 §8.5); `None` when unknown.
pub async fn signal(client: &mut AtClient, timeout: Duration) -> Result<Option<i32>, AtError> {
    Ok(client
        .ask(&line(cmd::execute("+CSQ")), timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| cmd::parse_csq(l).ok()))
        .and_then(|(rssi, _)| cmd::rssi_to_dbm(rssi)))
}

/// `+CSMS?` `<service>` (TS 27.005 §3.2.1): 1 means every `+CDS`/`+CMT` must be acknowledged
/// with `AT+CNMA`; 0 (the default) means it must not be.
pub async fn csms_service(client: &mut AtClient, timeout: Duration) -> Result<u8, AtError> {
    Ok(client
        .ask(&line(cmd::query("+CSMS")), timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| cmd::parse_csms_service(l).ok()))
        .unwrap_or(0))
}

/// `AT+CNMI` settings (TS 27.005 §3.4.1) tried in order: `<mt>=1` stores texts and says
/// `+CMTI`, `<ds>=1` routes status reports as `+CDS` (or `<ds>=2`: stored, `+CDSI`). Modems
/// differ in what they accept, so fall back until one is.
const CNMI_WITH_REPORTS: &[&[i32]] = &[
    &[2, 1, 0, 1, 0],
    &[1, 1, 0, 1, 0],
    &[2, 1, 0, 2, 0],
    &[1, 1, 0, 2, 0],
    &[2, 1, 0, 1],
];
const CNMI_WITHOUT_REPORTS: &[&[i32]] = &[&[2, 1, 0, 0, 0], &[1, 1, 0, 0, 0], &[2, 1]];

/// Configures new-message indications; returns the `AT+CNMI` line the modem accepted, if any.
pub async fn configure_notifications(
    client: &mut AtClient,
    delivery_reports: bool,
    timeout: Duration,
) -> Result<Option<String>, AtError> {
    let variants = if delivery_reports {
        CNMI_WITH_REPORTS
    } else {
        CNMI_WITHOUT_REPORTS
    };
    for values in variants {
        let params: Vec<Param<'_>> = values.iter().map(|v| Param::Int(*v)).collect();
        let command = line(cmd::set("+CNMI", &params));
        if client.ask(&command, timeout).await?.is_some() {
            return Ok(Some(command));
        }
    }
    Ok(None)
}

/// `AT` attempts when the driver synchronises, each with a short timeout.
const SYNC_ATTEMPTS: u32 = 5;
/// The short timeout of one synchronising `AT`.
pub(super) const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Why initialisation stopped.
pub(super) enum InitError {
    /// Timeout or closed port.
    Link(AtError),
    /// Needs a human; `retry` when it may clear by itself (a SIM inserted later).
    Failed { reason: String, retry: bool },
}

impl From<AtError> for InitError {
    fn from(e: AtError) -> Self {
        InitError::Link(e)
    }
}

/// What the driver keeps of a successful initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Initialized {
    /// Whether the modem is registered.
    pub registered: bool,
    /// `+CSMS` service: 1 means `+CDS`/`+CMT` need `AT+CNMA`.
    pub csms_service: u8,
}

/// The driver's init sequence (see the module docs of `super`), publishing what it learns on
/// `status`.
pub(super) async fn initialize(
    cfg: &ModemConfig,
    client: &mut AtClient,
    pin_rejected: &mut bool,
    status: &watch::Sender<ModemStatus>,
) -> Result<Initialized, InitError> {
    let t = cfg.command_timeout;
    sync(client, SYNC_ATTEMPTS, SYNC_TIMEOUT.min(t)).await?;
    for line in ["ATE0", "AT+CMEE=1"] {
        match client.command(line, t).await.refusal()? {
            Ok(_) => {}
            Err(e) => tracing::warn!(modem = %cfg.id, %line, error = %e, "refused; continuing"),
        }
    }
    let id = identify(client, t).await?;
    let quirks = super::quirks::lookup(id.manufacturer.as_deref(), id.model.as_deref());
    tracing::info!(
        modem = %cfg.id,
        manufacturer = id.manufacturer.as_deref().unwrap_or("?"),
        model = id.model.as_deref().unwrap_or("?"),
        family = quirks.family,
        "modem identified"
    );
    status.send_modify(|s| {
        s.manufacturer = id.manufacturer.clone();
        s.model = id.model.clone();
        s.revision = id.revision.clone();
        s.imei = id.imei.clone();
    });
    for line in quirks.init {
        match client.command(line, t).await.refusal()? {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(modem = %cfg.id, %line, error = %e, "quirk refused; continuing")
            }
        }
    }
    unlock_sim(cfg, client, pin_rejected).await?;
    // Which SIM and subscription this is, and its service centre: an operator's first
    // questions when texts stop arriving.
    let iccid = iccid(client, t).await?;
    let imsi = imsi(client, t).await?;
    let smsc = smsc(client, t).await?;
    status.send_modify(|s| {
        s.iccid = iccid;
        s.imsi = imsi;
        s.smsc = smsc;
    });
    match client.command("AT+CMGF=0", t).await.refusal()? {
        Ok(_) => {}
        Err(e) => {
            return Err(InitError::Failed {
                reason: format!("modem refuses PDU mode (AT+CMGF=0): {e}"),
                retry: false,
            });
        }
    }
    let csms_service = csms_service(client, t).await?;
    if configure_notifications(client, cfg.delivery_reports, t)
        .await?
        .is_none()
    {
        tracing::warn!(modem = %cfg.id, "no AT+CNMI variant accepted: status reports and incoming texts will not be seen");
    }
    // Registration changes as URCs, so a lost network is noticed between polls.
    for line in ["AT+CREG=1", "AT+CEREG=1"] {
        // Refused: registration is still polled.
        let _ = client.command(line, t).await.refusal()?;
    }
    let stat = registration(client, t).await?;
    let operator = operator(client, t).await?;
    let signal = signal(client, t).await?;
    status.send_modify(|s| {
        s.registration = stat.map(|s| cmd::reg_name(s).to_string());
        s.operator = operator;
        s.signal_dbm = signal;
        s.last_error = None;
    });
    Ok(Initialized {
        registered: stat.is_some_and(cmd::reg_is_registered),
        csms_service,
    })
}

/// Brings the SIM to READY, sending the configured PIN at most once and never after a rejection.
async fn unlock_sim(
    cfg: &ModemConfig,
    client: &mut AtClient,
    pin_rejected: &mut bool,
) -> Result<(), InitError> {
    let t = cfg.command_timeout;
    let failed = |reason: &str, retry| InitError::Failed {
        reason: reason.to_string(),
        retry,
    };
    let mut pin_sent = false;
    // A SIM that is still booting answers "busy" (or, just after a PIN, not yet READY).
    for _ in 0..10 {
        match sim_state(client, t).await? {
            SimState::Ready => return Ok(()),
            SimState::PinRequired if pin_sent => {}
            SimState::PinRequired => {
                let Some(pin) = cfg.pin.as_deref() else {
                    return Err(failed(
                        "SIM PIN required but no PIN is configured (pin_file or SIMGATE_PIN)",
                        false,
                    ));
                };
                if *pin_rejected {
                    return Err(failed(
                        "the SIM rejected the configured PIN earlier; not trying it again",
                        false,
                    ));
                }
                pin_sent = true;
                match unlock(client, pin, t).await {
                    Ok(()) => {}
                    Err(UnlockError::Rejected) => {
                        *pin_rejected = true;
                        return Err(failed(
                            "the SIM rejected the configured PIN; not trying it again (three wrong PINs block the SIM)",
                            false,
                        ));
                    }
                    Err(UnlockError::Unsendable) => {
                        return Err(failed(
                            "the configured PIN has characters a modem cannot receive",
                            false,
                        ));
                    }
                    Err(UnlockError::At(e)) if e.is_fatal() => return Err(e.into()),
                    Err(UnlockError::At(e)) => {
                        return Err(failed(&format!("PIN not accepted: {e}"), false));
                    }
                }
            }
            SimState::PukRequired => {
                return Err(failed(
                    "SIM PUK required: the SIM is blocked after wrong PINs; unblock it in a phone",
                    false,
                ));
            }
            SimState::NotInserted => return Err(failed("no SIM card inserted", true)),
            SimState::Busy => {}
            SimState::Other(s) => return Err(failed(&format!("SIM not usable: {s}"), true)),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(failed("SIM did not become ready", true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iccid_answers_of_each_vendor_parse() {
        assert_eq!(
            parse_iccid("+CCID: \"89001012012345678905\"", "+CCID:").as_deref(),
            Some("89001012012345678905")
        );
        assert_eq!(
            parse_iccid("^ICCID: 984405102091384028F6", "^ICCID:").as_deref(),
            Some("984405102091384028F6")
        );
        assert_eq!(
            parse_iccid("8944500102198304826f", "+CCID:").as_deref(),
            Some("8944500102198304826F")
        );
        assert_eq!(parse_iccid("+CCID: ERROR", "+CCID:"), None);
        assert_eq!(parse_iccid("+CCID: 1234", "+CCID:"), None);
    }

    #[test]
    fn static_commands_build() {
        for name in ["+CGMI", "+CGMM", "+CGMR", "+CGSN", "+CSQ", "+CIMI"] {
            cmd::execute(name).unwrap();
        }
        for name in [
            "+CPIN", "+CREG", "+CEREG", "+CGREG", "+COPS", "+CSMS", "+CSCA",
        ] {
            cmd::query(name).unwrap();
        }
        for v in CNMI_WITH_REPORTS.iter().chain(CNMI_WITHOUT_REPORTS) {
            let params: Vec<Param<'_>> = v.iter().map(|x| Param::Int(*x)).collect();
            assert!(cmd::set("+CNMI", &params).unwrap().starts_with("AT+CNMI="));
        }
    }

    #[test]
    fn imsi_and_smsc_answers_parse() {
        assert_eq!(
            parse_imsi("001010123456789").as_deref(),
            Some("001010123456789")
        );
        assert_eq!(
            parse_imsi("+CIMI: 262011234567890").as_deref(),
            Some("262011234567890")
        );
        assert_eq!(parse_imsi("ERROR"), None);
        assert_eq!(parse_imsi("0010101234567890"), None);
        assert_eq!(
            parse_csca("+CSCA: \"+15550000000\",145").as_deref(),
            Some("+15550000000")
        );
        assert_eq!(parse_csca("+CSCA: \"\",129").as_deref(), Some(""));
        assert_eq!(parse_csca("+CSQ: 1,2"), None);
    }

    #[test]
    fn identification_text() {
        assert_eq!(
            ident_text(vec!["+CGMI: SIMCOM_Ltd".into()], "+CGMI:"),
            Some("SIMCOM_Ltd".into())
        );
        assert_eq!(
            ident_text(vec!["huawei".into()], "+CGMI:"),
            Some("huawei".into())
        );
        assert_eq!(ident_text(vec![], "+CGMI:"), None);
    }
}
