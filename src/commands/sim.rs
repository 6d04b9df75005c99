//! `simgate sim`: run a simulated modem on a pseudo-terminal until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::sim::control::{Client, ControlAddr, ControlServer, Hub};
use crate::sim::{Faults, Profile, SimOptions, Simulator};

#[derive(Debug, clap::Args)]
#[command(
    after_help = BEHAVIOUR,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct SimArgs {
    /// A client of a running simulator's control socket.
    #[command(subcommand)]
    pub command: Option<Box<SimCommand>>,
    /// Path of the symlink to create; clients open it as their serial port. Repeat it for
    /// several modems in one process.
    #[arg(long, value_name = "PATH", required = true)]
    pub link: Vec<PathBuf>,
    /// With one --link PATH: N modems at PATH0 .. PATH{N-1}.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub count: Option<u16>,
    /// Which modem to imitate: generic, huawei, simcom or quectel.
    #[arg(long, value_name = "NAME", default_value = "generic", value_parser = parse_profile)]
    pub profile: Profile,
    /// The IMEI `AT+CGSN` answers (default: the profile's); repeat it per modem.
    #[arg(long, value_name = "DIGITS", value_parser = parse_digits)]
    pub imei: Vec<String>,
    /// The SIM's ICCID `AT+CCID` answers (default: 89001012012345678905); repeat it per modem.
    #[arg(long, value_name = "DIGITS", value_parser = parse_digits)]
    pub iccid: Vec<String>,
    /// Append one JSON line per accepted SMS to FILE.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Network time per SMS part before `+CMGS:` is answered.
    #[arg(long, value_name = "SECS", default_value_t = 0.0, value_parser = parse_secs)]
    pub send_delay: f64,
    /// Share of sends (0..1) that answer a temporary `+CMS ERROR` (38 or 42).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Seed of the random choices (error rate, message references, Huawei noise).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
    /// Destinations starting with PREFIX fail permanently with `+CMS ERROR: 1` (repeatable).
    #[arg(long = "reject", value_name = "PREFIX")]
    pub reject: Vec<String>,
    /// Lock the SIM with this PIN.
    #[arg(long, value_name = "PIN")]
    pub pin: Option<String>,
    /// Never register with the network.
    #[arg(long)]
    pub no_network: bool,
    /// Register only after SECS.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub network_after: Option<f64>,
    /// Delay of a requested status report (`+CDS`) after `+CMGS:`.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_secs)]
    pub report_delay: f64,
    /// TP-ST of status reports (0 = delivered; e.g. 64 = permanent failure).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub report_status: u8,
    /// Stop answering after N command lines.
    #[arg(long, value_name = "N")]
    pub hang_after: Option<u64>,
    /// With --hang-after: answer again after SECS.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, requires = "hang_after")]
    pub hang_for: Option<f64>,
    /// After N accepted SMS parts, vanish at the next `AT+CMGS`.
    #[arg(long, value_name = "N")]
    pub unplug_after: Option<u64>,
    /// With --unplug-after: come back at the same link after SECS.
    #[arg(long, value_name = "SECS", value_parser = parse_secs, requires = "unplug_after")]
    pub replug_after: Option<f64>,
    /// The network delivers a text from FROM (+digits or a name) to the SIM (repeatable).
    #[arg(long, value_name = "FROM:TEXT", value_parser = parse_incoming)]
    pub incoming: Vec<(String, String)>,
    /// Delay of the --incoming texts after the client first enables +CNMI indications.
    #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = parse_secs)]
    pub incoming_after: f64,
    /// Listen for control requests (JSON lines) on a Unix socket path or a loopback host:port.
    #[arg(long, value_name = "ADDR", value_parser = parse_control)]
    pub control: Option<ControlAddr>,
    /// Write FILE (JSON: link, device, control, pid) once the link accepts commands.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
}

/// `simgate sim`'s subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Send one request to a running simulator's control socket and print the answer.
    Ctl(CtlArgs),
}

/// `simgate sim ctl ADDR OP [FIELD=VALUE]...`
#[derive(Debug, clap::Args)]
#[command(after_help = CTL_HELP)]
pub struct CtlArgs {
    /// The simulator's --control address: a Unix socket path or a loopback host:port.
    #[arg(value_name = "ADDR")]
    pub addr: String,
    /// The operation (deliver, report, network, wait, ...), or a whole JSON request object.
    #[arg(value_name = "OP")]
    pub op: String,
    /// Fields of the request; VALUE is read as JSON when it parses (numbers, true, lists,
    /// objects), else taken as a string.
    #[arg(value_name = "FIELD=VALUE")]
    pub fields: Vec<String>,
}

const CTL_HELP: &str = "\
Examples:
  simgate sim ctl ./sim.sock deliver from=+15551234567 text='Your parcel is here'
  simgate sim ctl ./sim.sock deliver from=Bank text=\"$(cat long.txt)\" ref=300 ref_bits=16 order='[2,1]'
  simgate sim ctl ./sim.sock report mr=17 outcome=failed status=69
  simgate sim ctl ./sim.sock network registration=searching
  simgate sim ctl 127.0.0.1:7000 wait 'until={\"sent\":3}' timeout_ms=5000
  simgate sim ctl ./sim.sock '{\"op\":\"commands\",\"last\":5}'

Prints the answer, one JSON object. docs/simulator.md describes every operation.

Exit status:
  0  success: the answer is {\"ok\": true, ...}
  1  the simulator refused the request ({\"ok\": false, \"error\": ...})
  2  bad arguments
  3  the control socket cannot be reached";

/// What `simgate sim --help` says after the options: the behaviour and fault semantics.
const BEHAVIOUR: &str = "\
Behaviour:
  A simulated modem on a pseudo-terminal whose serial end is symlinked at --link. It answers
  the AT commands of 3GPP TS 27.005/27.007 that real clients (gammu, python-gsmmodem, simgate)
  use, in PDU and text mode, and appends every SMS the \"network\" accepts to --log as one
  JSON line, written when the last part of a concatenated message arrives. Echo is on at start
  (ATE1). ESC at the `> ` prompt cancels the send and answers OK. Prints the link and the log
  path at start; SIGINT/SIGTERM end it and remove the link.

Faults:
  --send-delay SECS    network time per SMS part before `+CMGS:` is answered.
  --error-rate P       that share of sends answers a temporary `+CMS ERROR: 38` or `42`
                       (drawn from --seed, so runs repeat).
  --reject PREFIX      destinations starting with PREFIX get a permanent `+CMS ERROR: 1`.
  --no-network         registration stat 2 (searching); sends fail with `+CMS ERROR: 331`.
  --network-after SECS not registered for SECS, then stat 1 with a `+CREG: 1` URC when
                       +CREG=1/2 was set.
  --pin PIN            SIM locked (`+CPIN: SIM PIN`) until AT+CPIN=\"PIN\"; a wrong PIN answers
                       `+CME ERROR: 16` and prints `sim: pin attempt N rejected` on stderr;
                       after 3 the SIM wants the PUK 12345678 (AT+CPIN=\"12345678\",\"NEWPIN\").
  --hang-after N       after N command lines, answer nothing (input is read and discarded),
                       for --hang-for SECS if given, else forever.
  --unplug-after N     after N accepted parts, the next AT+CMGS PDU makes the modem vanish
                       without an answer: pty closed, link removed. With --replug-after SECS a
                       fresh pty appears at the same link, the modem's state reset; the unplug
                       does not fire again.

Identity:
  --imei DIGITS        what AT+CGSN (and ATI) answer instead of the profile's IMEI.
  --iccid DIGITS       the SIM's ICCID, answered to AT+CCID, AT+ICCID and AT^ICCID? (even
                       while the SIM is PIN-locked, as real SIMs allow).

Several modems:
  --link A --link B (or --link P --count N for P0 .. P{N-1}) runs one modem per link in one
  process, all with the same options except identity and seed: the i-th --imei/--iccid goes
  to the i-th modem; one without its own gets the first modem's with the serial number plus i
  and the check digit recomputed, so each has its own IMEI and ICCID. Modem i uses --seed plus
  i. Their texts share --log; one --control socket steers them all (a request's \"modem\"
  field, the index from 0 or the link, picks one; without it, the first).

Incoming texts:
  --incoming FROM:TEXT the network delivers TEXT from FROM (+ and digits, or a name of up to 11
                       characters) --incoming-after SECS after the client first sets AT+CNMI
                       with <mt> other than 0: <mt>=1 stores it and says `+CMTI: \"SM\",<index>`
                       (read it with +CMGR/+CMGL, delete it with +CMGD), <mt>=2 routes it as
                       `+CMT` without storing it. It must fit one SMS.

Status reports:
  When a SUBMIT asks for one (TP-SRR; in text mode bit 5 of +CSMP's first octet) and +CNMI's
  <ds> is 1, `+CDS` arrives --report-delay after `+CMGS:` with the part's TP-MR, its recipient
  and TP-ST --report-status. With <ds>=2 the report is stored and announced with
  `+CDSI: \"SR\",<index>` for +CMGR/+CMGL/+CMGD.";

fn parse_control(s: &str) -> Result<ControlAddr, String> {
    ControlAddr::parse(s)
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s)
        .ok_or_else(|| format!("unknown profile {s:?}: generic, huawei, simcom or quectel"))
}

fn parse_digits(s: &str) -> Result<String, String> {
    // An identity a modem reports is digits (an ICCID may end in an F filler); anything else
    // would put quotes or separators on the wire.
    if !s.is_empty() && s.len() <= 22 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} must be 1 to 22 digits"))
    }
}

fn parse_incoming(s: &str) -> Result<(String, String), String> {
    let (from, text) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not FROM:TEXT"))?;
    let number = from
        .strip_prefix('+')
        .is_some_and(|d| (1..=20).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
    let name = (1..=11).contains(&from.chars().count())
        && from.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ');
    if !number && !name {
        return Err(format!(
            "sender {from:?} must be + and digits, or a name of up to 11 letters and digits"
        ));
    }
    if crate::pdu::plan(text).parts != 1 {
        return Err("the text must fit one SMS (160 GSM characters or 70 others)".into());
    }
    Ok((from.to_string(), text.to_string()))
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && (0.0..=86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be between 0 and 86400 seconds"))
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} must be between 0 and 1"))
    }
}

impl SimArgs {
    /// The links of the modems: the --link paths, or PATH0 .. PATH{N-1} with --count.
    pub fn links(&self) -> Result<Vec<PathBuf>, String> {
        match (self.count, self.link.as_slice()) {
            (None, links) => Ok(links.to_vec()),
            (Some(n), [one]) => Ok((0..n)
                .map(|i| {
                    let mut name = one.as_os_str().to_owned();
                    name.push(i.to_string());
                    PathBuf::from(name)
                })
                .collect()),
            (Some(_), _) => {
                Err("--count takes a single --link PATH (the modems are PATH0, PATH1, ...)".into())
            }
        }
    }

    /// The library's options for each modem, in link order.
    pub fn to_all_options(&self) -> Result<Vec<SimOptions>, String> {
        let links = self.links()?;
        let mut first = self.to_options();
        first.link = links[0].clone();
        let (imei0, iccid0) = crate::sim::core::Core::new(first.clone()).identity();
        if self.imei.len() > links.len() || self.iccid.len() > links.len() {
            return Err(format!(
                "{} modem(s) but {} --imei and {} --iccid",
                links.len(),
                self.imei.len(),
                self.iccid.len()
            ));
        }
        links
            .iter()
            .enumerate()
            .map(|(i, link)| {
                let n = i as u64;
                let imei = match self.imei.get(i) {
                    Some(v) => v.clone(),
                    None => crate::sim::nth_identity(&imei0, n).ok_or_else(|| {
                        format!("IMEI {imei0:?} is not all digits: give --imei for each modem")
                    })?,
                };
                let iccid = match self.iccid.get(i) {
                    Some(v) => v.clone(),
                    None => crate::sim::nth_identity(&iccid0, n).ok_or_else(|| {
                        format!("ICCID {iccid0:?} is not all digits: give --iccid for each modem")
                    })?,
                };
                Ok(SimOptions {
                    link: link.clone(),
                    imei: Some(imei),
                    iccid: Some(iccid),
                    seed: self.seed.wrapping_add(n),
                    ..first.clone()
                })
            })
            .collect()
    }

    /// The library's options for these arguments (the first modem's).
    pub fn to_options(&self) -> SimOptions {
        SimOptions {
            link: self.link.first().cloned().unwrap_or_default(),
            profile: self.profile,
            imei: self.imei.first().cloned(),
            iccid: self.iccid.first().cloned(),
            log: self.log.clone(),
            seed: self.seed,
            pin: self.pin.clone(),
            faults: Faults {
                send_delay: Duration::from_secs_f64(self.send_delay),
                error_rate: self.error_rate,
                reject_prefixes: self.reject.clone(),
                no_network: self.no_network,
                network_after: self.network_after.map(Duration::from_secs_f64),
                report_delay: Duration::from_secs_f64(self.report_delay),
                report_status: self.report_status,
                hang_after: self.hang_after,
                hang_for: self.hang_for.map(Duration::from_secs_f64),
                unplug_after: self.unplug_after,
                replug_after: self.replug_after.map(Duration::from_secs_f64),
                ..Faults::default()
            },
            incoming: self.incoming.clone(),
            incoming_after: Duration::from_secs_f64(self.incoming_after),
        }
    }
}

/// Runs the simulator until SIGINT or SIGTERM, or `sim ctl`.
pub fn run(args: SimArgs, json: bool) -> ExitCode {
    if let Some(command) = args.command {
        let SimCommand::Ctl(ctl) = *command;
        return run_ctl(ctl);
    }
    super::init_tracing("info");
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let all = match args.to_all_options() {
        Ok(all) => all,
        Err(e) => {
            eprintln!("simgate sim: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = all[0].clone();
    rt.block_on(async move {
        // Installed before the link is announced: a SIGTERM sent as soon as a test (or systemd)
        // sees the link must stop the simulator cleanly, not kill it with the link left behind.
        let signals = listen_for_signals();
        let mut sims = Vec::with_capacity(all.len());
        for o in &all {
            match Simulator::start(o.clone()).await {
                Ok(s) => sims.push(s),
                Err(e) => {
                    eprintln!("simgate sim: cannot start at {}: {e}", o.link.display());
                    stop_all(sims).await;
                    return ExitCode::FAILURE;
                }
            }
        }
        let hub = Hub::new(sims.iter().map(Simulator::controller).collect());
        let control = match &args.control {
            Some(addr) => match ControlServer::bind(addr, hub).await {
                Ok(server) => Some(server),
                Err(e) => {
                    eprintln!("simgate sim: cannot listen for control at {addr}: {e}");
                    stop_all(sims).await;
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let control_addr = control.as_ref().map(|c| c.addr().to_string());
        let modems: Vec<serde_json::Value> = sims
            .iter()
            .zip(&all)
            .map(|(s, o)| {
                serde_json::json!({
                    "link": s.link(), "device": s.device(), "imei": o.imei, "iccid": o.iccid,
                })
            })
            .collect();
        if let Some(path) = &args.ready_file {
            let ready = serde_json::json!({
                "link": sims[0].link(),
                "device": sims[0].device(),
                "control": control_addr,
                "pid": std::process::id(),
                "modems": modems,
            });
            if let Err(e) = write_ready(path, &ready.to_string()) {
                eprintln!("simgate sim: cannot write {}: {e}", path.display());
                stop_all(sims).await;
                return ExitCode::FAILURE;
            }
        }
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "link": sims[0].link(),
                    "device": sims[0].device(),
                    "log": opts.log,
                    "profile": opts.profile.name(),
                    "control": control_addr,
                    "modems": modems,
                })
            );
        } else {
            for s in &sims {
                println!(
                    "simgate sim: link {} -> {}",
                    s.link().display(),
                    s.device().display()
                );
            }
            match &opts.log {
                Some(log) => println!("simgate sim: log {}", log.display()),
                None => println!("simgate sim: no log"),
            }
            if let Some(addr) = &control_addr {
                println!("simgate sim: control {addr}");
            }
        }
        let ok = match signals {
            Some(signals) => {
                signals.await;
                true
            }
            None => false,
        };
        drop(control);
        stop_all(sims).await;
        if let Some(path) = &args.ready_file {
            let _ = std::fs::remove_file(path);
        }
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

async fn stop_all(sims: Vec<Simulator>) {
    for s in sims {
        s.stop().await;
    }
}

/// Installs the SIGINT and SIGTERM handlers now and returns a future that resolves on the
/// first of them; `None` when they cannot be installed.
fn listen_for_signals() -> Option<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("simgate sim: cannot install signal handlers");
        return None;
    };
    Some(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

/// Writes the ready file whole or not at all: a test polling for it never reads half of it.
fn write_ready(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{text}\n"))?;
    std::fs::rename(&tmp, path)
}

/// The request `simgate sim ctl` sends: OP as a JSON object, or `{"op": OP}` plus the fields.
fn ctl_request(args: &CtlArgs) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let mut request = if args.op.trim_start().starts_with('{') {
        match serde_json::from_str::<Value>(&args.op) {
            Ok(Value::Object(m)) => m,
            _ => return Err(format!("{:?} is not a JSON object", args.op)),
        }
    } else {
        let mut m = serde_json::Map::new();
        m.insert("op".into(), Value::String(args.op.clone()));
        m
    };
    for field in &args.fields {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("{field:?} is not FIELD=VALUE"))?;
        if key.is_empty() {
            return Err(format!("{field:?} has no field name"));
        }
        let value =
            serde_json::from_str::<Value>(value).unwrap_or_else(|_| Value::String(value.into()));
        request.insert(key.to_string(), value);
    }
    Ok(Value::Object(request))
}

fn run_ctl(args: CtlArgs) -> ExitCode {
    let request = match ctl_request(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simgate sim ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = Client::connect(&args.addr).and_then(|mut c| c.call(&request));
    match answer {
        Ok(answer) => {
            println!("{answer}");
            if answer["ok"] == serde_json::Value::Bool(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "simgate sim ctl: cannot reach the simulator at {}: {e}",
                args.addr
            );
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_fields_are_json_when_they_parse() {
        let args = CtlArgs {
            addr: "./s".into(),
            op: "wait".into(),
            fields: vec![
                "until={\"sent\":3}".into(),
                "timeout_ms=5000".into(),
                "text=hello world".into(),
                "from=+15551234567".into(),
            ],
        };
        let r = ctl_request(&args).unwrap();
        assert_eq!(
            r,
            serde_json::json!({"op": "wait", "until": {"sent": 3}, "timeout_ms": 5000,
                "text": "hello world", "from": "+15551234567"})
        );
        let whole = CtlArgs {
            addr: "./s".into(),
            op: "{\"op\":\"ping\"}".into(),
            fields: vec![],
        };
        assert_eq!(
            ctl_request(&whole).unwrap(),
            serde_json::json!({"op": "ping"})
        );
        let bad = CtlArgs {
            addr: "./s".into(),
            op: "ping".into(),
            fields: vec!["novalue".into()],
        };
        assert!(ctl_request(&bad).is_err());
    }
}
