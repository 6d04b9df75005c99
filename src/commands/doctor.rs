//! `simgate doctor`: lists serial ports, finds the modem, and explains every problem with a fix.
//!
//! The work is in [`crate::doctor`]; this file parses arguments and renders the facts and
//! findings as text or as one JSON object. Exit codes: 0 when at least one modem can send (SIM
//! ready and registered), 1 otherwise, 2 for usage errors (clap's own code).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::at::cmd;
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::doctor::gather::{self, Roots, Timeouts};
use crate::doctor::{
    AtOutcome, ConfigFacts, ConfiguredModem, Facts, Finding, ModemFacts, OpenOutcome, PortFacts,
    UsbInfo,
};

/// Arguments of `simgate doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Check only this port (repeatable); it may be a symlink, e.g. to a `simgate sim` pty.
    /// Without it, every hardware serial port and udev link is checked.
    #[arg(long, value_name = "PATH")]
    pub device: Vec<PathBuf>,
    /// Serial speed (USB modems ignore it).
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Milliseconds to wait for each of two `AT` attempts before a port counts as silent.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub at_timeout_ms: u64,
    /// Seconds each later command may take once the modem has answered.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub timeout: u64,
    /// The config file whose modems to check as well (and whose pin_file settings explain a
    /// locked SIM). Default: /etc/simgate/simgate.toml when it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file's modems, from `path` or (when not given) the default file if it exists.
fn read_config(path: Option<&Path>) -> Option<ConfigFacts> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return None;
            }
            default
        }
    };
    // The same checks serve runs before it opens a modem (a pin_file it cannot or may not
    // read refuses the start), so doctor never passes a config serve refuses.
    let origin = path.display().to_string();
    let loaded = Config::load(&path).and_then(|c| c.check_startup(&origin, None).map(|()| c));
    Some(match loaded {
        Ok(config) => ConfigFacts {
            path,
            error: None,
            modems: config
                .modems
                .iter()
                .map(|m| ConfiguredModem {
                    device: m.device.clone(),
                    resolved: std::fs::canonicalize(&m.device).ok(),
                    pin_file: m.pin_file.clone(),
                })
                .collect(),
        },
        Err(e) => ConfigFacts {
            path,
            error: Some(e.to_string()),
            modems: Vec::new(),
        },
    })
}

/// Runs `simgate doctor`.
pub fn run(args: DoctorArgs, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate doctor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeouts = Timeouts {
        sync: Duration::from_millis(args.at_timeout_ms.max(100)),
        command: Duration::from_secs(args.timeout.max(1)),
    };
    let config = read_config(args.config.as_deref());
    let configured: Vec<PathBuf> = config
        .iter()
        .flat_map(|c| c.modems.iter().map(|m| m.device.clone()))
        .collect();
    let mut facts = runtime.block_on(gather::gather(
        &Roots::default(),
        &args.device,
        &configured,
        args.baud,
        timeouts,
    ));
    facts.config = config;
    let findings = crate::doctor::diagnose(&facts);
    let usable: Vec<String> = crate::doctor::usable_ports(&facts)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if json {
        println!("{}", to_json(&facts, &findings, &usable));
    } else {
        print!("{}", to_text(&facts, &findings, &usable));
    }
    if usable.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn open_word(o: &OpenOutcome) -> &'static str {
    match o {
        OpenOutcome::Opened => "ok",
        OpenOutcome::NotFound => "not-found",
        OpenOutcome::PermissionDenied { .. } => "permission-denied",
        OpenOutcome::Busy => "busy",
        OpenOutcome::InUse => "in-use",
        OpenOutcome::Console => "console",
        OpenOutcome::NotASerialPort => "not-a-serial-port",
        OpenOutcome::Failed(_) => "failed",
    }
}

fn usb_text(u: &UsbInfo) -> String {
    let mut s = format!("{}:{}", u.vendor_id, u.product_id);
    for part in [&u.manufacturer, &u.product].into_iter().flatten() {
        s.push(' ');
        s.push_str(part);
    }
    if let Some(serial) = &u.serial {
        let _ = write!(s, ", serial {serial}");
    }
    if let Some(i) = u.interface {
        let _ = write!(s, ", interface {i}");
    }
    s
}

fn registration_text(m: &ModemFacts) -> String {
    match m.registration() {
        Some(stat) => {
            let mut s = cmd::reg_name(stat).to_string();
            if let Some(op) = &m.operator {
                let _ = write!(s, " ({op})");
            }
            s
        }
        None => "unknown".into(),
    }
}

fn signal_text(m: &ModemFacts) -> String {
    match (m.signal_dbm, m.signal_answered) {
        (Some(dbm), _) => format!("{dbm} dBm"),
        (None, true) => "none (+CSQ: 99)".into(),
        (None, false) => "unknown".into(),
    }
}

fn port_text(out: &mut String, p: &PortFacts) {
    let _ = write!(out, "{}", p.path.display());
    if let Some(t) = &p.target {
        let _ = write!(out, " -> {}", t.display());
    }
    out.push('\n');
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "  {:<13} {v}", format!("{k}:"));
    };
    line(
        "USB",
        p.usb
            .as_ref()
            .map(usb_text)
            .unwrap_or_else(|| "not a USB device (pty or built-in UART)".into()),
    );
    if let Some(d) = &p.driver {
        line("driver", d.clone());
    }
    for l in &p.links {
        line("link", l.display().to_string());
    }
    if !p.holders.is_empty() {
        line(
            "held by",
            p.holders
                .iter()
                .map(|h| format!("{} (pid {})", h.name, h.pid))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    let open = match &p.open {
        OpenOutcome::Opened => "ok".to_string(),
        OpenOutcome::NotFound => "no such device".into(),
        OpenOutcome::PermissionDenied { .. } => "permission denied".into(),
        OpenOutcome::Busy => "busy (skipped)".into(),
        OpenOutcome::InUse => "not tried: open in another program".into(),
        OpenOutcome::Console => "not tried: kernel console".into(),
        OpenOutcome::NotASerialPort => "not a serial port".into(),
        OpenOutcome::Failed(r) => format!("failed: {r}"),
    };
    line("open", open);
    match &p.at {
        None => {}
        Some(AtOutcome::NoAnswer) => line("AT", "no answer".into()),
        Some(AtOutcome::Lost(r)) => line("AT", format!("answered, then failed: {r}")),
        Some(AtOutcome::Modem(m)) => {
            let who = [&m.manufacturer, &m.model]
                .into_iter()
                .flatten()
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            line(
                "AT",
                if who.is_empty() {
                    "answers".into()
                } else {
                    format!("answers ({who})")
                },
            );
            line(
                "SIM",
                m.sim
                    .as_ref()
                    .map(|s| s.describe())
                    .unwrap_or_else(|| "unknown".into()),
            );
            line("registration", registration_text(m));
            line("signal", signal_text(m));
            line(
                "SMSC",
                match m.smsc.as_deref() {
                    Some("") => "empty".into(),
                    Some(s) => s.to_string(),
                    None => "unknown".into(),
                },
            );
        }
    }
}

fn to_text(facts: &Facts, findings: &[Finding], usable: &[String]) -> String {
    let mut out = String::new();
    if facts.ports.is_empty() {
        out.push_str("No serial ports found.\n");
    }
    for p in &facts.ports {
        port_text(&mut out, p);
        out.push('\n');
    }
    if facts.modem_manager.is_empty() {
        out.push_str("ModemManager: not running\n");
    } else {
        let pids: Vec<String> = facts
            .modem_manager
            .iter()
            .map(|h| h.pid.to_string())
            .collect();
        let _ = writeln!(out, "ModemManager: running (pid {})", pids.join(", "));
    }
    if !findings.is_empty() {
        out.push_str("\nFindings:\n");
        for f in findings {
            // Every per-port problem names its port in its own words.
            let _ = write!(out, "  {}: ", f.severity.as_str());
            let _ = writeln!(out, "{}\n    fix: {}", f.problem, f.fix);
        }
    }
    out.push('\n');
    if usable.is_empty() {
        out.push_str("Result: no usable modem.\n");
    } else {
        let _ = writeln!(
            out,
            "Result: ready to send (SIM ready, registered): {}",
            usable.join(", ")
        );
    }
    out
}

fn modem_json(m: &ModemFacts) -> Value {
    json!({
        "manufacturer": m.manufacturer,
        "model": m.model,
        "sim": m.sim.as_ref().map(|s| s.describe()),
        "registration": m.registration().map(cmd::reg_name),
        "creg": m.creg,
        "cereg": m.cereg,
        "operator": m.operator,
        "signal_dbm": m.signal_dbm,
        "smsc": m.smsc,
    })
}

fn port_json(p: &PortFacts) -> Value {
    let (answers_at, modem, at_error) = match &p.at {
        None => (Value::Null, Value::Null, Value::Null),
        Some(AtOutcome::NoAnswer) => (json!(false), Value::Null, Value::Null),
        Some(AtOutcome::Lost(r)) => (json!(true), Value::Null, json!(r)),
        Some(AtOutcome::Modem(m)) => (json!(true), modem_json(m), Value::Null),
    };
    json!({
        "path": p.path.display().to_string(),
        "target": p.target.as_ref().map(|t| t.display().to_string()),
        "links": p.links.iter().map(|l| l.display().to_string()).collect::<Vec<_>>(),
        "usb": p.usb.as_ref().map(|u| json!({
            "vendor_id": u.vendor_id,
            "product_id": u.product_id,
            "manufacturer": u.manufacturer,
            "product": u.product,
            "serial": u.serial,
            "interface": u.interface,
        })),
        "driver": p.driver,
        "holders": p.holders
            .iter()
            .map(|h| json!({"pid": h.pid, "name": h.name}))
            .collect::<Vec<_>>(),
        "open": open_word(&p.open),
        "open_error": match &p.open { OpenOutcome::Failed(r) => Some(r.clone()), _ => None },
        "answers_at": answers_at,
        "at_error": at_error,
        "modem": modem,
    })
}

fn to_json(facts: &Facts, findings: &[Finding], usable: &[String]) -> Value {
    json!({
        "ports": facts.ports.iter().map(port_json).collect::<Vec<_>>(),
        "modem_manager": {
            "running": !facts.modem_manager.is_empty(),
            "pids": facts.modem_manager.iter().map(|h| h.pid).collect::<Vec<_>>(),
        },
        "usable": usable,
        "findings": findings.iter().map(|f| {
            let mut v = json!({
                "severity": f.severity.as_str(),
                "problem": f.problem,
                "fix": f.fix,
            });
            if let Some(port) = &f.port {
                v["port"] = json!(port.display().to_string());
            }
            v
        }).collect::<Vec<_>>(),
    })
}
