//! `simgate modem probe`: open a port, identify the modem and SIM with the steps of
//! [`super::init`], and report what was learnt, also when the modem is not usable.

use std::path::Path;
use std::time::Duration;

use super::init::{
    Identity, SimState, UnlockError, iccid, identify, imsi, operator, registration, signal,
    sim_state, smsc, sync, unlock,
};
use crate::at::cmd;
use crate::at::{AtClient, AtError};
use crate::transport::{self, OpenError};

/// What `simgate modem probe` prints: everything it learnt, also when the answer is that the
/// modem is not usable (a locked SIM still has an ICCID, the modem still has an IMEI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The device probed.
    pub device: String,
    /// `+CGMI`/`+CGMM`/`+CGMR`/`+CGSN`.
    pub identity: Identity,
    /// `+CPIN?` after an optional unlock (and after a rejected one: a third wrong PIN turns
    /// "PIN required" into "PUK required").
    pub sim: SimState,
    /// The PIN given was sent once and the SIM refused it. It is not sent again: three wrong
    /// PINs block the SIM.
    pub pin_rejected: bool,
    /// The SIM's ICCID (readable while locked), to tell SIMs apart.
    pub iccid: Option<String>,
    /// `+CIMI`; `None` while the SIM is locked.
    pub imsi: Option<String>,
    /// `+CSCA?`; `Some("")` when the SIM has no service centre set.
    pub smsc: Option<String>,
    /// Registration word ("home", "roaming", "searching"...), if the modem answered.
    pub registration: Option<String>,
    /// `+COPS?`.
    pub operator: Option<String>,
    /// `+CSQ` in dBm.
    pub signal_dbm: Option<i32>,
}

/// Why a probe could not identify a modem at all. A modem that answers but is not usable (a
/// locked or missing SIM) is a [`ProbeReport`], since what it said is worth printing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The port could not be opened.
    #[error("{0}")]
    Open(#[from] OpenError),
    /// The port opened but nothing answered `AT`.
    #[error("{0}: no answer to AT (not a modem's AT port, wrong baud rate, or the modem is hung)")]
    NoAnswer(String),
    /// The link failed while probing.
    #[error("{0}: {1}")]
    Link(String, String),
}

/// Opens `device` and identifies the modem and SIM, unlocking the SIM with `pin` (once) if it
/// asks for one. Changes nothing else on the modem besides turning echo off and numeric errors
/// on.
pub async fn probe(
    device: &Path,
    baud: u32,
    pin: Option<&str>,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let name = device.display().to_string();
    let port = transport::open(device, baud)?;
    let (r, w) = tokio::io::split(port);
    let (mut client, _urcs) = crate::at::engine::spawn(r, w);
    probe_client(&mut client, name, pin, timeout).await
}

/// The questions of [`probe`] over a client that is already connected.
pub async fn probe_client(
    client: &mut AtClient,
    name: String,
    pin: Option<&str>,
    timeout: Duration,
) -> Result<ProbeReport, ProbeError> {
    let link = |e: AtError| ProbeError::Link(name.clone(), e.to_string());
    let step = timeout.min(Duration::from_secs(2));
    sync(client, 3, step)
        .await
        .map_err(|_| ProbeError::NoAnswer(name.clone()))?;
    client.ask("ATE0", timeout).await.map_err(link)?;
    client.ask("AT+CMEE=1", timeout).await.map_err(link)?;
    let identity = identify(client, timeout).await.map_err(link)?;
    let mut sim = sim_state(client, timeout).await.map_err(link)?;
    let mut pin_rejected = false;
    if sim == SimState::PinRequired
        && let Some(pin) = pin
    {
        match unlock(client, pin, timeout).await {
            Ok(()) => sim = sim_state(client, timeout).await.map_err(link)?,
            Err(UnlockError::Rejected) => {
                pin_rejected = true;
                sim = sim_state(client, timeout).await.map_err(link)?;
            }
            Err(UnlockError::Unsendable) => {
                return Err(ProbeError::Link(
                    name,
                    "the PIN has characters a modem cannot receive".into(),
                ));
            }
            Err(UnlockError::At(e)) => return Err(link(e)),
        }
    }
    let iccid = iccid(client, timeout).await.map_err(link)?;
    let imsi = imsi(client, timeout).await.map_err(link)?;
    let smsc = smsc(client, timeout).await.map_err(link)?;
    let registration = registration(client, timeout)
        .await
        .map_err(link)?
        .map(|s| cmd::reg_name(s).to_string());
    let operator = operator(client, timeout).await.map_err(link)?;
    let signal_dbm = signal(client, timeout).await.map_err(link)?;
    Ok(ProbeReport {
        device: name,
        identity,
        sim,
        pin_rejected,
        iccid,
        imsi,
        smsc,
        registration,
        operator,
        signal_dbm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A modem over an in-memory pipe whose slot is empty: `+CPIN?` answers `+CME ERROR: 10`
    /// (TS 27.007 §9.2.1 "SIM not inserted"), everything else `OK`.
    async fn modem_without_sim(mut io: tokio::io::DuplexStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut line = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            for &b in &buf[..n] {
                if b != b'\r' {
                    line.push(b);
                    continue;
                }
                let text = String::from_utf8_lossy(&line).trim().to_string();
                line.clear();
                let answer = match text.as_str() {
                    "" => continue,
                    "AT+CPIN?" => "\r\n+CME ERROR: 10\r\n",
                    "AT+CGMI" => "\r\nacme\r\n\r\nOK\r\n",
                    _ => "\r\nOK\r\n",
                };
                if io.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_modem_without_a_sim_is_a_report_not_an_error() {
        let (ours, theirs) = tokio::io::duplex(4096);
        tokio::spawn(modem_without_sim(theirs));
        let (r, w) = tokio::io::split(ours);
        let (mut client, _urcs) = crate::at::engine::spawn(r, w);
        let report = probe_client(
            &mut client,
            "/dev/fake".into(),
            Some("1234"),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
        assert_eq!(report.sim, SimState::NotInserted);
        assert_eq!(report.identity.manufacturer.as_deref(), Some("acme"));
        // No SIM asked for a PIN, so none was sent or rejected.
        assert!(!report.pin_rejected);
    }
}
