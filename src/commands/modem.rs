//! `simgate modem probe`: identify the modem and SIM on a port, or say clearly why it is not a
//! usable modem.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::modem::init::{self, ProbeError, ProbeReport};

/// `simgate modem ...`
#[derive(Debug, clap::Args)]
pub struct ModemArgs {
    /// What to do with the modem.
    #[command(subcommand)]
    pub command: ModemCommand,
}

/// The `modem` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ModemCommand {
    /// Identify the modem and SIM (manufacturer, model, revision, IMEI, SIM state,
    /// registration, operator, signal).
    Probe(ProbeArgs),
}

/// Arguments of `simgate modem probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The modem's serial device.
    #[arg(long, value_name = "PATH", default_value = "/dev/simgate-modem")]
    pub device: PathBuf,
    /// Serial speed (USB modems ignore it).
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// SIM PIN, sent once if the SIM asks for it (a rejected PIN is not retried). Default: the
    /// SIMGATE_PIN environment variable (safer: a command line is visible to other users).
    #[arg(long)]
    pub pin: Option<String>,
    /// Seconds each AT command may take.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
}

/// Runs `simgate modem <command>`.
pub fn run(args: ModemArgs, json: bool) -> ExitCode {
    match args.command {
        ModemCommand::Probe(p) => probe(p, json),
    }
}

fn probe(args: ProbeArgs, json: bool) -> ExitCode {
    // Quiet by default (the result is the output); `RUST_LOG=simgate=trace` shows the AT traffic
    // on stderr, PINs and PDUs redacted.
    super::init_tracing("error");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate modem probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_secs(args.timeout.max(1));
    let pin = args
        .pin
        .clone()
        .or_else(|| std::env::var("SIMGATE_PIN").ok().filter(|p| !p.is_empty()));
    let result = runtime.block_on(init::probe(
        &args.device,
        args.baud,
        pin.as_deref(),
        timeout,
    ));
    match result {
        Ok(report) => {
            if json {
                println!("{}", to_json(&report));
            } else {
                print!("{}", to_text(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"device": args.device.display().to_string(), "error": e.to_string(), "reason": reason_code(&e)})
                );
            }
            eprintln!("simgate modem probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A stable word for scripts reading `--json` errors.
fn reason_code(e: &ProbeError) -> &'static str {
    use crate::transport::OpenError as O;
    match e {
        ProbeError::Open(O::NotFound(_)) => "not-found",
        ProbeError::Open(O::PermissionDenied(_)) => "permission-denied",
        ProbeError::Open(O::Busy(_)) => "busy",
        ProbeError::Open(O::NotASerialPort(_)) => "not-a-serial-port",
        ProbeError::Open(O::Other { .. }) => "open-failed",
        ProbeError::NoAnswer(_) => "no-answer",
        ProbeError::Link(..) => "link-failed",
        ProbeError::PinRejected(_) => "pin-rejected",
    }
}

fn to_json(r: &ProbeReport) -> serde_json::Value {
    serde_json::json!({
        "device": r.device,
        "manufacturer": r.identity.manufacturer,
        "model": r.identity.model,
        "revision": r.identity.revision,
        "imei": r.identity.imei,
        "sim": r.sim.describe(),
        "registration": r.registration,
        "operator": r.operator,
        "signal_dbm": r.signal_dbm,
    })
}

fn to_text(r: &ProbeReport) -> String {
    let or_unknown = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    let signal = r
        .signal_dbm
        .map(|d| format!("{d} dBm"))
        .unwrap_or_else(|| "unknown".into());
    format!(
        "device:       {}\nmanufacturer: {}\nmodel:        {}\nrevision:     {}\nIMEI:         {}\nSIM:          {}\nregistration: {}\noperator:     {}\nsignal:       {}\n",
        r.device,
        or_unknown(&r.identity.manufacturer),
        or_unknown(&r.identity.model),
        or_unknown(&r.identity.revision),
        or_unknown(&r.identity.imei),
        r.sim.describe(),
        or_unknown(&r.registration),
        or_unknown(&r.operator),
        signal,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modem::init::{Identity, SimState};

    #[test]
    fn renders_text_and_json() {
        let r = ProbeReport {
            device: "/dev/ttyUSB2".into(),
            identity: Identity {
                manufacturer: Some("huawei".into()),
                model: Some("E3372".into()),
                revision: None,
                imei: Some("867223021234563".into()),
            },
            sim: SimState::Ready,
            registration: Some("home".into()),
            operator: Some("Simgate Mobile".into()),
            signal_dbm: Some(-71),
        };
        let text = to_text(&r);
        assert!(text.contains("manufacturer: huawei\n"));
        assert!(text.contains("revision:     unknown\n"));
        assert!(text.contains("signal:       -71 dBm\n"));
        let json = to_json(&r);
        assert_eq!(json["imei"], "867223021234563");
        assert_eq!(json["sim"], "ready");
        assert_eq!(json["signal_dbm"], -71);
        assert!(json["revision"].is_null());
    }
}
