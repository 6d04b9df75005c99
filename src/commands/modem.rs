//! `simgate modem probe`: identify the modem and SIM on a port, or say clearly why it is not a
//! usable modem.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::doctor::{OpenOutcome, advice, gather};
use crate::modem::init::SimState;
use crate::modem::probe::{self, ProbeError, ProbeReport};

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
    /// Identify the modem and SIM (manufacturer, model, revision, IMEI, SIM state, ICCID, IMSI,
    /// SMSC, registration, operator, signal); exit non-zero, with the reason, if it is not a
    /// modem that can send.
    #[command(after_help = PROBE_EXIT_CODES)]
    Probe(ProbeArgs),
}

/// The exit codes of `modem probe`, for its `--help`. Scripts branch on these (or on `reason`
/// in `--json` output); they never change meaning.
const PROBE_EXIT_CODES: &str = "\
Exit status:
  0   a modem with a ready SIM: it can send
  1   another failure (the link failed while probing, an open error without a better name)
  2   usage error
  3   not found: nothing at that path
  4   permission denied (join the group that owns the device, usually dialout)
  5   busy: another program holds the port open exclusively
  6   not a modem: not a serial port, or nothing answers AT on it
  7   the SIM wants its PIN or PUK (or another lock, e.g. PH-SIM PIN)
  8   the PIN given was rejected (it is sent once and never retried)
  9   no SIM card, or a SIM failure
  10  the SIM is still starting up: try again in a few seconds

Everything the modem said is printed in every case. To give the PIN: SIMGATE_PIN=<PIN>
simgate modem probe, or for the service a pin_file made with
sudo install -o simgate -g simgate -m 0600 /dev/null /etc/simgate/pin (then write the PIN
into it and set pin_file = \"/etc/simgate/pin\" under [[modem]]).";

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

/// Why a probe ends non-zero: one per exit code of [`PROBE_EXIT_CODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Usable,
    Failed,
    NotFound,
    PermissionDenied,
    Busy,
    NotAModem,
    SimLocked,
    PinRejected,
    NoSim,
    SimBusy,
}

impl Verdict {
    fn exit_code(self) -> u8 {
        match self {
            Verdict::Usable => 0,
            Verdict::Failed => 1,
            Verdict::NotFound => 3,
            Verdict::PermissionDenied => 4,
            Verdict::Busy => 5,
            Verdict::NotAModem => 6,
            Verdict::SimLocked => 7,
            Verdict::PinRejected => 8,
            Verdict::NoSim => 9,
            Verdict::SimBusy => 10,
        }
    }
}

/// The verdict on a modem that answered, the stable `reason` word for `--json`, and the
/// problem and fix in words (`None` when the modem is usable).
fn judge(r: &ProbeReport) -> (Verdict, &'static str, Option<(String, String)>) {
    if r.pin_rejected {
        return (
            Verdict::PinRejected,
            "pin-rejected",
            Some(advice::pin_rejected(&r.device, &r.sim)),
        );
    }
    let (verdict, reason) = match &r.sim {
        SimState::Ready => return (Verdict::Usable, "ready", None),
        SimState::PinRequired => (Verdict::SimLocked, "pin-required"),
        SimState::PukRequired => (Verdict::SimLocked, "puk-required"),
        SimState::NotInserted => (Verdict::NoSim, "no-sim"),
        SimState::Busy => (Verdict::SimBusy, "sim-busy"),
        SimState::Other(s) if s.eq_ignore_ascii_case("SIM failure") => {
            (Verdict::NoSim, "sim-failure")
        }
        SimState::Other(_) => (Verdict::SimLocked, "sim-locked"),
    };
    (verdict, reason, advice::sim_problem(&r.device, &r.sim))
}

/// The verdict on a probe that learnt nothing about a modem, the `reason` word, and the
/// problem and fix in words (the same words `simgate doctor` uses).
fn judge_error(e: &ProbeError, device: &Path) -> (Verdict, &'static str, String, Option<String>) {
    let name = device.display().to_string();
    match e {
        ProbeError::Open(open) => {
            let outcome = gather::open_outcome(open.clone(), device, Path::new("/etc/group"));
            let (verdict, reason) = match &outcome {
                OpenOutcome::NotFound => (Verdict::NotFound, "not-found"),
                OpenOutcome::PermissionDenied { .. } => {
                    (Verdict::PermissionDenied, "permission-denied")
                }
                OpenOutcome::Busy | OpenOutcome::InUse => (Verdict::Busy, "busy"),
                OpenOutcome::NotASerialPort | OpenOutcome::Console => {
                    (Verdict::NotAModem, "not-a-serial-port")
                }
                OpenOutcome::Opened | OpenOutcome::Failed(_) => (Verdict::Failed, "open-failed"),
            };
            match advice::open_failure(&name, device, &outcome, "") {
                Some((problem, fix)) => (verdict, reason, problem, Some(fix)),
                None => (verdict, reason, e.to_string(), None),
            }
        }
        ProbeError::NoAnswer(_) => (
            Verdict::NotAModem,
            "no-answer",
            e.to_string(),
            Some(
                "check that this is the modem's AT port (dongles have several; simgate doctor \
                 tries each), that --baud matches a real UART, and replug a hung modem"
                    .into(),
            ),
        ),
        ProbeError::Link(..) => (Verdict::Failed, "link-failed", e.to_string(), None),
    }
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
    let result = runtime.block_on(probe::probe(
        &args.device,
        args.baud,
        pin.as_deref(),
        timeout,
    ));
    match result {
        Ok(report) => {
            let (verdict, reason, words) = judge(&report);
            if json {
                let mut v = to_json(&report);
                v["usable"] = Value::Bool(verdict == Verdict::Usable);
                v["reason"] = reason.into();
                if let Some((problem, fix)) = &words {
                    v["error"] = problem.clone().into();
                    v["fix"] = fix.clone().into();
                }
                println!("{v}");
            } else {
                print!("{}", to_text(&report));
            }
            if let Some((problem, fix)) = &words {
                eprintln!("simgate modem probe: {problem}\n  fix: {fix}");
            }
            ExitCode::from(verdict.exit_code())
        }
        Err(e) => {
            let (verdict, reason, problem, fix) = judge_error(&e, &args.device);
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "device": args.device.display().to_string(),
                        "usable": false,
                        "error": problem,
                        "reason": reason,
                        "fix": fix,
                    })
                );
            }
            match fix {
                Some(fix) => eprintln!("simgate modem probe: {problem}\n  fix: {fix}"),
                None => eprintln!("simgate modem probe: {problem}"),
            }
            ExitCode::from(verdict.exit_code())
        }
    }
}

fn to_json(r: &ProbeReport) -> Value {
    serde_json::json!({
        "device": r.device,
        "manufacturer": r.identity.manufacturer,
        "model": r.identity.model,
        "revision": r.identity.revision,
        "imei": r.identity.imei,
        "sim": r.sim.describe(),
        "iccid": r.iccid,
        "imsi": r.imsi,
        "smsc": r.smsc,
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
    let smsc = match r.smsc.as_deref() {
        Some("") => "not set".to_string(),
        other => or_unknown(&other.map(str::to_string)),
    };
    format!(
        "device:       {}\nmanufacturer: {}\nmodel:        {}\nrevision:     {}\nIMEI:         {}\nSIM:          {}\nICCID:        {}\nIMSI:         {}\nSMSC:         {}\nregistration: {}\noperator:     {}\nsignal:       {}\n",
        r.device,
        or_unknown(&r.identity.manufacturer),
        or_unknown(&r.identity.model),
        or_unknown(&r.identity.revision),
        or_unknown(&r.identity.imei),
        r.sim.describe(),
        or_unknown(&r.iccid),
        or_unknown(&r.imsi),
        smsc,
        or_unknown(&r.registration),
        or_unknown(&r.operator),
        signal,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modem::init::Identity;

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
            pin_rejected: false,
            iccid: Some("89001012012345678905".into()),
            imsi: None,
            smsc: Some(String::new()),
            registration: Some("home".into()),
            operator: Some("Simgate Mobile".into()),
            signal_dbm: Some(-71),
        };
        let text = to_text(&r);
        assert!(text.contains("manufacturer: huawei\n"));
        assert!(text.contains("revision:     unknown\n"));
        assert!(text.contains("signal:       -71 dBm\n"));
        assert!(text.contains("ICCID:        89001012012345678905\n"));
        assert!(text.contains("IMSI:         unknown\n"));
        assert!(text.contains("SMSC:         not set\n"));
        let json = to_json(&r);
        assert_eq!(json["imei"], "867223021234563");
        assert_eq!(json["sim"], "ready");
        assert_eq!(json["signal_dbm"], -71);
        assert!(json["revision"].is_null());
        assert_eq!(json["iccid"], "89001012012345678905");
        assert_eq!(judge(&r).0, Verdict::Usable);
    }

    #[test]
    fn every_sim_state_has_its_exit_code() {
        let report = |sim: SimState, pin_rejected: bool| ProbeReport {
            device: "/dev/ttyUSB2".into(),
            identity: Identity::default(),
            sim,
            pin_rejected,
            iccid: None,
            imsi: None,
            smsc: None,
            registration: None,
            operator: None,
            signal_dbm: None,
        };
        for (sim, rejected, code, reason) in [
            (SimState::Ready, false, 0, "ready"),
            (SimState::PinRequired, false, 7, "pin-required"),
            (SimState::PukRequired, false, 7, "puk-required"),
            (SimState::Other("PH-SIM PIN".into()), false, 7, "sim-locked"),
            (SimState::PinRequired, true, 8, "pin-rejected"),
            (SimState::PukRequired, true, 8, "pin-rejected"),
            (SimState::NotInserted, false, 9, "no-sim"),
            (
                SimState::Other("SIM failure".into()),
                false,
                9,
                "sim-failure",
            ),
            (SimState::Busy, false, 10, "sim-busy"),
        ] {
            let (verdict, word, words) = judge(&report(sim.clone(), rejected));
            assert_eq!((verdict.exit_code(), word), (code, reason), "{sim:?}");
            assert_eq!(words.is_none(), code == 0, "{sim:?}");
        }
        // The codes documented in --help are the codes used.
        for code in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            assert!(
                PROBE_EXIT_CODES.contains(&format!("\n  {code:<3} ")),
                "{code}"
            );
        }
    }

    #[test]
    fn open_errors_use_doctors_words() {
        use crate::transport::OpenError;
        let dev = Path::new("/dev/null");
        let e = ProbeError::Open(OpenError::Other {
            path: dev.into(),
            reason: "Not a typewriter".into(),
        });
        let (verdict, reason, problem, fix) = judge_error(&e, dev);
        assert_eq!((verdict.exit_code(), reason), (6, "not-a-serial-port"));
        assert_eq!(
            problem,
            "/dev/null is not a serial port, so it cannot be a modem"
        );
        assert!(fix.is_some());
        let missing = Path::new("/dev/ttyUSB7");
        let e = ProbeError::Open(OpenError::NotFound(missing.into()));
        let (verdict, _, problem, _) = judge_error(&e, missing);
        assert_eq!(verdict.exit_code(), 3);
        assert_eq!(problem, "/dev/ttyUSB7 does not exist");
    }
}
