//! The judging half of doctor: [`Facts`] in, [`Finding`]s out. Pure, so each finding has a unit
//! test and none needs hardware.
//!
//! The fixes name commands and config keys, because the person reading them usually has just
//! plugged in a dongle and wants the next step, not a diagnosis.

use std::path::Path;

use super::advice;
use super::{
    AtOutcome, ConfiguredModem, Facts, Finding, ModemFacts, OpenOutcome, PortFacts, Severity,
};
use crate::at::cmd;
use crate::modem::init::SimState;

/// At or below this `+CSQ` level (dBm) texts start failing or crawling: rssi 4 of 31 is one bar.
const WEAK_SIGNAL_DBM: i32 = -105;

/// The fix for ModemManager, shared by the "running" and "holding a port" findings.
const MODEM_MANAGER_FIX: &str = "stop it for good: sudo systemctl disable --now ModemManager; or, \
     to keep it for other modems, make it ignore this one: simgate's udev rule \
     (60-simgate-modems.rules) sets ENV{ID_MM_DEVICE_IGNORE}=\"1\" for known modem vendors (add \
     yours if missing), then replug the modem";

/// What to check when no modem shows up at all.
const NO_MODEM_FIX: &str = "check that `lsusb` lists the modem; a dongle that shows up as a \
     CD-ROM or mass-storage device needs usb_modeswitch (sudo apt install usb-modeswitch, then \
     replug) before it offers serial ports; a HiLink dongle (it appears as a network interface \
     with a web page at 192.168.8.1) has no AT port and cannot be used by simgate; `dmesg` shows \
     whether a serial driver (option, qcserial, cdc_acm) claimed it. To try simgate without a \
     modem: simgate serve --simulate";

/// Judges `facts`: every problem found, most severe first (machine-wide findings before
/// per-port ones at the same severity). Empty means a usable modem and nothing to worry about.
pub fn diagnose(facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mm_holds: Vec<&PortFacts> = facts
        .ports
        .iter()
        .filter(|p| p.holders.iter().any(is_modem_manager))
        .collect();
    if !facts.modem_manager.is_empty() && mm_holds.is_empty() {
        let pids = pid_list(&facts.modem_manager);
        out.push(Finding {
            severity: Severity::Warning,
            port: None,
            problem: format!(
                "ModemManager is running (pid {pids}): it probes new serial ports and can take a \
                 modem away from simgate or confuse it with its own AT commands"
            ),
            fix: MODEM_MANAGER_FIX.into(),
        });
    }
    if let Some(cfg) = &facts.config
        && let Some(error) = &cfg.error
    {
        out.push(Finding {
            severity: Severity::Error,
            port: None,
            problem: format!("serve would not start with this config file: {error}"),
            fix: format!(
                "fix the key it names; simgate config check {} checks it again",
                cfg.path.display()
            ),
        });
    }
    for port in &facts.ports {
        judge_port(port, facts, &mut out);
    }
    if let Some(cfg) = &facts.config
        && cfg.error.is_none()
        && !facts.explicit
    {
        let ready: Vec<&PortFacts> = facts
            .ports
            .iter()
            .filter(|p| matches!(&p.at, Some(AtOutcome::Modem(m)) if is_usable(m)))
            .collect();
        if !ready.is_empty() && !ready.iter().any(|p| configured(facts, p).is_some()) {
            let p = ready[0];
            let name = p.links.first().unwrap_or(&p.path).display().to_string();
            out.push(Finding {
                severity: Severity::Warning,
                port: Some(p.path.clone()),
                problem: format!(
                    "{} is ready, but {} configures other devices ({})",
                    p.path.display(),
                    cfg.path.display(),
                    cfg.modems
                        .iter()
                        .map(|m| m.device.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                fix: format!(
                    "set device = \"{name}\" under [[modem]] in {}",
                    cfg.path.display()
                ),
            });
        }
    }
    let answering = facts
        .ports
        .iter()
        .any(|p| matches!(p.at, Some(AtOutcome::Modem(_))));
    if !facts.explicit && !answering {
        let problem = if facts.ports.is_empty() {
            if facts.sysfs_readable {
                "no modem found: this machine has no USB or hardware serial port".to_string()
            } else {
                "no modem found: /sys/class/tty cannot be read (a container?), so no serial port \
                 was seen"
                    .to_string()
            }
        } else {
            format!(
                "no modem found: none of the {} serial port(s) on this machine answered AT",
                facts.ports.len()
            )
        };
        out.push(Finding {
            severity: Severity::Error,
            port: None,
            problem,
            fix: NO_MODEM_FIX.into(),
        });
    }
    // Stable: per-port findings keep port order within a severity.
    out.sort_by_key(|f| f.severity);
    out
}

/// The ports whose modem can send now: SIM ready and registered at home or roaming (what the
/// driver waits for before it takes texts).
pub fn usable_ports(facts: &Facts) -> Vec<&Path> {
    facts
        .ports
        .iter()
        .filter(|p| match &p.at {
            Some(AtOutcome::Modem(m)) => is_usable(m),
            _ => false,
        })
        .map(|p| p.path.as_path())
        .collect()
}

fn is_usable(m: &ModemFacts) -> bool {
    m.sim == Some(SimState::Ready) && m.registration().is_some_and(cmd::reg_is_registered)
}

/// The config file's modem for `port`, matched by path or by resolved target.
fn configured<'a>(facts: &'a Facts, port: &PortFacts) -> Option<&'a ConfiguredModem> {
    facts.config.as_ref()?.modems.iter().find(|c| {
        c.device == port.path
            || c.resolved
                .as_ref()
                .is_some_and(|r| *r == port.path || Some(r) == port.target.as_ref())
    })
}

fn is_modem_manager(h: &super::Holder) -> bool {
    h.name == "ModemManager"
}

fn pid_list(holders: &[super::Holder]) -> String {
    holders
        .iter()
        .map(|h| h.pid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn judge_port(port: &PortFacts, facts: &Facts, out: &mut Vec<Finding>) {
    let at = |severity, problem: String, fix: String| Finding {
        severity,
        port: Some(port.path.clone()),
        problem,
        fix,
    };
    let name = port.path.display();
    let others: Vec<&super::Holder> = port
        .holders
        .iter()
        .filter(|h| !is_modem_manager(h))
        .collect();
    if port.holders.iter().any(is_modem_manager) {
        out.push(at(
            Severity::Error,
            format!(
                "ModemManager (pid {}) has {name} open, so simgate cannot use it",
                pid_list(&facts.modem_manager)
            ),
            MODEM_MANAGER_FIX.into(),
        ));
    }
    match &port.open {
        OpenOutcome::Opened => {}
        outcome @ (OpenOutcome::NotFound | OpenOutcome::PermissionDenied { .. }) => {
            if let Some((problem, fix)) =
                advice::open_failure(&name.to_string(), &port.path, outcome, "")
            {
                out.push(at(Severity::Error, problem, fix));
            }
            return;
        }
        OpenOutcome::Console => {
            out.push(at(
                Severity::Info,
                format!("{name} is the kernel console; not probed"),
                "nothing to do: a modem is never on the console port".into(),
            ));
            return;
        }
        OpenOutcome::Busy | OpenOutcome::InUse => {
            let who = if others.is_empty() {
                if port.holders.is_empty() && !facts.modem_manager.is_empty() {
                    " (probably by ModemManager, which is running)".to_string()
                } else if port.holders.is_empty() {
                    String::new()
                } else {
                    " by ModemManager".to_string()
                }
            } else {
                format!(
                    " by {}",
                    others
                        .iter()
                        .map(|h| format!("{} (pid {})", h.name, h.pid))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let (problem, fix) = if port.open == OpenOutcome::Busy {
                let (problem, fix) =
                    advice::open_failure(&name.to_string(), &port.path, &port.open, &who)
                        .unwrap_or_default();
                (format!("{problem}; skipped"), fix)
            } else {
                (
                    format!(
                        "{name} is in use{who}; not probed, since AT written into it would \
                         disturb that program, and simgate could not share the port anyway"
                    ),
                    "stop the program holding it (another simgate, minicom, screen, gammu, \
                     ModemManager) and run simgate doctor again; `sudo fuser -v` on the device \
                     names the holder when doctor cannot see it"
                        .to_string(),
                )
            };
            // A running simgate daemon holding its own modem is the normal case, not a fault
            // to remove: point at the daemon's view instead.
            let fix = if others.iter().any(|h| h.name == "simgate") {
                "simgate itself is using this port (the service, or serve in a terminal): \
                 GET /v1/modems on the running daemon shows the modem's state; to let doctor \
                 check the port, stop it first (sudo systemctl stop simgate)"
                    .to_string()
            } else {
                fix
            };
            // A built-in UART found by scanning and held by a getty is someone's terminal, not
            // a modem problem.
            let severity = if facts.explicit || port.usb.is_some() || port.open == OpenOutcome::Busy
            {
                Severity::Error
            } else {
                Severity::Info
            };
            out.push(at(severity, problem, fix));
            return;
        }
        outcome @ (OpenOutcome::NotASerialPort | OpenOutcome::Failed(_)) => {
            if let Some((problem, fix)) =
                advice::open_failure(&name.to_string(), &port.path, outcome, "")
            {
                out.push(at(Severity::Error, problem, fix));
            }
            return;
        }
    }
    if facts.as_root && port.usb.is_some() {
        out.push(at(
            Severity::Info,
            format!(
                "doctor runs as root, so opening {name} proves nothing about the service's user"
            ),
            "check as that user: sudo -u simgate simgate doctor (the service runs as simgate \
             with SupplementaryGroups=dialout; udev/60-simgate-modems.rules gives the port to \
             dialout)"
                .into(),
        ));
    }
    match &port.at {
        None => {}
        Some(AtOutcome::NoAnswer) => {
            let (severity, fix) = if facts.explicit {
                (
                    Severity::Error,
                    "this is not a modem's AT port, the baud rate is wrong, or the modem is hung: \
                     a dongle exposes several ports and usually only one or two speak AT \
                     (simgate doctor without --device tries them all); replug a hung modem",
                )
            } else if port.usb.is_some() {
                (
                    Severity::Info,
                    "nothing to do if another port of the same modem answers: dongles also have \
                     diagnostic, GPS and data ports that stay silent",
                )
            } else {
                (
                    Severity::Info,
                    "nothing to do unless a modem is wired to this built-in serial port; if one \
                     is, check the wiring, its power and the speed (--baud)",
                )
            };
            out.push(at(
                severity,
                format!("{name} does not answer AT"),
                fix.into(),
            ));
        }
        Some(AtOutcome::Lost(reason)) => out.push(at(
            Severity::Error,
            format!("{name} answered AT, then the link failed: {reason}"),
            "the modem may be resetting or losing power: use a powered USB hub or a shorter \
             cable, replug it, and check `dmesg` for disconnects"
                .into(),
        )),
        Some(AtOutcome::Modem(m)) => {
            let pin_file = configured(facts, port).and_then(|c| c.pin_file.as_deref());
            judge_modem(m, &mut |s, p, f| out.push(at(s, p, f)), port, pin_file);
            if let Some(finding) = stable_name(port) {
                out.push(at(Severity::Info, finding.0, finding.1));
            }
        }
    }
}

/// A USB modem addressed by its kernel name (`/dev/ttyUSB2`) may come back as another number
/// after a replug or reboot: point at the stable name, or at the rule that makes one.
fn stable_name(port: &PortFacts) -> Option<(String, String)> {
    let stable = |p: &Path| {
        let s = p.to_string_lossy();
        s.starts_with("/dev/simgate") || s.starts_with("/dev/serial/by-id/")
    };
    if port.usb.is_none() || stable(&port.path) {
        return None;
    }
    let name = port.path.display();
    let problem = format!("{name} is a kernel name that can change when the modem is replugged");
    let fix = match port.links.iter().find(|l| stable(l)) {
        Some(link) => format!(
            "configure it by its stable name: device = \"{}\" under [[modem]]",
            link.display()
        ),
        None => "install simgate's udev rule (udev/60-simgate-modems.rules as \
                 /lib/udev/rules.d/60-simgate-modems.rules, then sudo udevadm control --reload \
                 && sudo udevadm trigger) to get /dev/simgate-modem and /dev/simgate/* names"
            .to_string(),
    };
    Some((problem, fix))
}

fn judge_modem(
    m: &ModemFacts,
    push: &mut dyn FnMut(Severity, String, String),
    port: &PortFacts,
    pin_file: Option<&Path>,
) {
    let name = port.path.display();
    let sim_advice = |push: &mut dyn FnMut(Severity, String, String), state: &SimState| {
        if let Some((problem, fix)) = advice::sim_problem(&name.to_string(), state) {
            // A SIM still starting up is a moment's wait, not a fault.
            let severity = if *state == SimState::Busy {
                Severity::Warning
            } else {
                Severity::Error
            };
            push(severity, problem, fix);
        }
    };
    let sim_ready = match &m.sim {
        Some(SimState::Ready) => true,
        Some(SimState::PinRequired) => {
            if let Some(pin_file) = pin_file {
                push(
                    Severity::Warning,
                    format!(
                        "the SIM in {name} wants its PIN; the config gives it in {}",
                        pin_file.display()
                    ),
                    "nothing to do if simgate is stopped: serve sends that PIN once at start; \
                     simgate config check verifies the file is readable, private and holds 4 to \
                     8 digits"
                        .into(),
                );
            } else {
                sim_advice(push, &SimState::PinRequired);
            }
            false
        }
        Some(state) => {
            sim_advice(push, state);
            false
        }
        None => {
            push(
                Severity::Warning,
                format!("{name} answered AT but would not report the SIM state (+CPIN?)"),
                "the port may be a secondary AT port with limited commands: try the modem's \
                 other ports, or check the SIM in a phone"
                    .into(),
            );
            false
        }
    };
    // Without a ready SIM the registration and SMSC answers are consequences, not causes.
    if !sim_ready {
        return;
    }
    match m.registration() {
        Some(1) => {}
        Some(5) => push(
            Severity::Info,
            format!("{name} is roaming{}", operator_suffix(m)),
            "texts may cost more while roaming; nothing to do if that is expected".into(),
        ),
        Some(3) => push(
            Severity::Error,
            format!("the network denied registration to the SIM in {name}"),
            "the SIM is not activated, has expired or ran out of credit, or the modem's IMEI is \
             barred: check the SIM in a phone and ask the carrier"
                .into(),
        ),
        Some(s @ (6 | 7)) => push(
            Severity::Warning,
            format!(
                "{name} is registered for SMS only ({}); simgate waits for full registration",
                cmd::reg_name(s)
            ),
            "check that the SIM's plan includes voice or data service, or use the modem on a \
             network where it registers fully"
                .into(),
        ),
        Some(s) => push(
            Severity::Error,
            format!(
                "{name} is not registered on a network ({})",
                match s {
                    0 => "not searching",
                    2 => "searching",
                    8 => "emergency calls only",
                    _ => "unknown state",
                }
            ),
            "check the antenna and coverage (see the signal reading), that the SIM's plan is \
             active and includes SMS, and that the modem supports the carrier's bands; a modem \
             needs up to a minute after plugging in to register"
                .into(),
        ),
        None => push(
            Severity::Warning,
            format!("{name} would not report its registration (+CREG?/+CEREG?)"),
            "try the modem's other AT ports; some firmware answers only on one of them".into(),
        ),
    }
    match m.signal_dbm {
        Some(dbm) if dbm <= WEAK_SIGNAL_DBM => push(
            Severity::Warning,
            format!("weak signal on {name}: {dbm} dBm"),
            "move the modem (a USB extension cable to a window helps) or fit an external \
             antenna; texts fail or are slow below about -105 dBm"
                .into(),
        ),
        Some(_) => {}
        None if m.signal_answered => push(
            Severity::Warning,
            format!("{name} reports no measurable signal (+CSQ: 99)"),
            "check the antenna and coverage; move the modem near a window".into(),
        ),
        None => {}
    }
    match m.smsc.as_deref() {
        Some(s) if !s.trim().is_empty() => {}
        _ => push(
            Severity::Error,
            format!("{name} has no SMS service centre number (+CSCA is empty or refused)"),
            "sends fail with +CMS ERROR 330 without it: ask the carrier for its SMSC number and \
             store it once from a terminal (e.g. picocom) with AT+CSCA=\"+<number>\",145 then \
             AT+CSAS, or put the SIM in a phone, which usually restores it"
                .into(),
        ),
    }
}

fn operator_suffix(m: &ModemFacts) -> String {
    m.operator
        .as_deref()
        .map(|o| format!(" on {o}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Holder, UsbInfo};
    use std::path::PathBuf;

    fn port(path: &str, open: OpenOutcome, at: Option<AtOutcome>) -> PortFacts {
        PortFacts {
            path: PathBuf::from(path),
            target: None,
            links: Vec::new(),
            usb: None,
            driver: None,
            holders: Vec::new(),
            open,
            at,
        }
    }

    fn healthy() -> ModemFacts {
        ModemFacts {
            manufacturer: Some("huawei".into()),
            model: Some("E3372".into()),
            sim: Some(SimState::Ready),
            creg: Some(1),
            cereg: Some(1),
            operator: Some("Simgate Mobile".into()),
            signal_dbm: Some(-71),
            signal_answered: true,
            smsc: Some("+15550000000".into()),
        }
    }

    fn modem(m: ModemFacts) -> PortFacts {
        port(
            "/dev/ttyUSB2",
            OpenOutcome::Opened,
            Some(AtOutcome::Modem(m)),
        )
    }

    fn facts(explicit: bool, ports: Vec<PortFacts>) -> Facts {
        Facts {
            explicit,
            ports,
            modem_manager: Vec::new(),
            sysfs_readable: true,
            as_root: false,
            config: None,
        }
    }

    fn mm(pid: u32) -> Holder {
        Holder {
            pid,
            name: "ModemManager".into(),
        }
    }

    /// Asserts the findings, in order, by severity and a piece of the problem text, and returns
    /// them for checks on the fixes.
    fn check(facts: &Facts, expect: &[(Severity, &str)]) -> Vec<Finding> {
        let got = diagnose(facts);
        let summary: Vec<(Severity, &str)> = got
            .iter()
            .map(|f| (f.severity, f.problem.as_str()))
            .collect();
        assert_eq!(got.len(), expect.len(), "findings: {summary:#?}");
        for (f, (severity, text)) in got.iter().zip(expect) {
            assert_eq!(f.severity, *severity, "{summary:#?}");
            assert!(f.problem.contains(text), "{:?} lacks {text:?}", f.problem);
            assert!(!f.fix.is_empty());
        }
        got
    }

    #[test]
    fn a_healthy_modem_has_no_findings_and_is_usable() {
        let f = facts(true, vec![modem(healthy())]);
        check(&f, &[]);
        assert_eq!(usable_ports(&f), [Path::new("/dev/ttyUSB2")]);
    }

    #[test]
    fn no_ports_at_all_says_what_to_check() {
        let got = check(
            &facts(false, vec![]),
            &[(Severity::Error, "no modem found")],
        );
        assert!(got[0].port.is_none());
        for hint in ["lsusb", "usb_modeswitch", "HiLink", "--simulate"] {
            assert!(got[0].fix.contains(hint), "fix lacks {hint}");
        }
        let mut blind = facts(false, vec![]);
        blind.sysfs_readable = false;
        check(
            &blind,
            &[(Severity::Error, "/sys/class/tty cannot be read")],
        );
        assert!(usable_ports(&blind).is_empty());
    }

    #[test]
    fn scanned_silent_ports_are_info_but_no_modem_is_an_error() {
        let mut usb = port(
            "/dev/ttyUSB0",
            OpenOutcome::Opened,
            Some(AtOutcome::NoAnswer),
        );
        usb.usb = Some(UsbInfo::default());
        let uart = port("/dev/ttyS0", OpenOutcome::Opened, Some(AtOutcome::NoAnswer));
        let got = check(
            &facts(false, vec![usb, uart]),
            &[
                (Severity::Error, "none of the 2 serial port(s)"),
                (Severity::Info, "/dev/ttyUSB0 does not answer AT"),
                (Severity::Info, "/dev/ttyS0 does not answer AT"),
            ],
        );
        assert!(got[1].fix.contains("diagnostic, GPS"));
        assert!(got[2].fix.contains("built-in serial port"));
        // Once another port answers, the silent one is no longer part of a "no modem" verdict.
        let silent = port(
            "/dev/ttyUSB0",
            OpenOutcome::Opened,
            Some(AtOutcome::NoAnswer),
        );
        check(
            &facts(false, vec![silent, modem(healthy())]),
            &[(Severity::Info, "does not answer AT")],
        );
    }

    #[test]
    fn a_named_port_that_does_not_answer_is_an_error() {
        let got = check(
            &facts(
                true,
                vec![port(
                    "/tmp/x",
                    OpenOutcome::Opened,
                    Some(AtOutcome::NoAnswer),
                )],
            ),
            &[(Severity::Error, "/tmp/x does not answer AT")],
        );
        assert_eq!(got[0].port.as_deref(), Some(Path::new("/tmp/x")));
        assert!(got[0].fix.contains("not a modem's AT port"));
    }

    #[test]
    fn open_failures() {
        let denied = port(
            "/dev/ttyUSB2",
            OpenOutcome::PermissionDenied {
                group: Some("uucp".into()),
            },
            None,
        );
        let got = check(
            &facts(true, vec![denied]),
            &[(Severity::Error, "permission denied opening /dev/ttyUSB2")],
        );
        assert!(
            got[0]
                .fix
                .contains("sudo usermod -aG uucp $USER, then log in again")
        );
        let denied = port(
            "/dev/ttyUSB2",
            OpenOutcome::PermissionDenied { group: None },
            None,
        );
        let got = check(&facts(true, vec![denied]), &[(Severity::Error, "dialout")]);
        assert!(got[0].fix.contains("sudo usermod -aG dialout $USER"));

        let got = check(
            &facts(
                true,
                vec![port("/dev/simgate-modem", OpenOutcome::NotFound, None)],
            ),
            &[(Severity::Error, "does not exist")],
        );
        assert!(got[0].fix.contains("udev"));
        let got = check(
            &facts(
                true,
                vec![port("/dev/ttyUSB5", OpenOutcome::NotFound, None)],
            ),
            &[(Severity::Error, "does not exist")],
        );
        assert!(got[0].fix.contains("/dev/serial/by-id/"));
        check(
            &facts(
                true,
                vec![port("/dev/null", OpenOutcome::NotASerialPort, None)],
            ),
            &[(Severity::Error, "/dev/null is not a serial port")],
        );
        check(
            &facts(
                true,
                vec![port(
                    "/dev/ttyUSB2",
                    OpenOutcome::Failed("EIO".into()),
                    None,
                )],
            ),
            &[(Severity::Error, "cannot be opened: EIO")],
        );
    }

    #[test]
    fn busy_ports_are_skipped_and_the_holder_named() {
        let mut busy = port("/dev/ttyUSB2", OpenOutcome::Busy, None);
        busy.holders = vec![Holder {
            pid: 77,
            name: "minicom".into(),
        }];
        let got = check(
            &facts(true, vec![busy]),
            &[(
                Severity::Error,
                "busy: it is held open exclusively by minicom (pid 77); skipped",
            )],
        );
        assert!(got[0].fix.contains("fuser"));
        let mut daemon = port("/dev/ttyUSB2", OpenOutcome::Busy, None);
        daemon.holders = vec![Holder {
            pid: 90,
            name: "simgate".into(),
        }];
        let got = check(
            &facts(true, vec![daemon]),
            &[(Severity::Error, "by simgate (pid 90)")],
        );
        assert!(got[0].fix.contains("GET /v1/modems"));
        let mut f = facts(true, vec![port("/dev/ttyUSB2", OpenOutcome::Busy, None)]);
        f.modem_manager = vec![mm(812)];
        check(
            &f,
            &[
                (Severity::Error, "probably by ModemManager"),
                (Severity::Warning, "ModemManager is running (pid 812)"),
            ],
        );
    }

    #[test]
    fn modem_manager_running_or_holding() {
        let mut f = facts(true, vec![modem(healthy())]);
        f.modem_manager = vec![mm(812)];
        let got = check(
            &f,
            &[(Severity::Warning, "ModemManager is running (pid 812)")],
        );
        assert!(got[0].fix.contains("systemctl disable --now ModemManager"));
        assert!(got[0].fix.contains("ID_MM_DEVICE_IGNORE"));
        let mut held = port("/dev/ttyUSB2", OpenOutcome::Busy, None);
        held.holders = vec![mm(812)];
        f.ports = vec![held];
        check(
            &f,
            &[
                (
                    Severity::Error,
                    "ModemManager (pid 812) has /dev/ttyUSB2 open",
                ),
                (
                    Severity::Error,
                    "busy: it is held open exclusively by ModemManager",
                ),
            ],
        );
    }

    #[test]
    fn ports_in_use_or_the_console_are_not_probed() {
        let agetty = Holder {
            pid: 5,
            name: "agetty".into(),
        };
        let mut p = port("/dev/ttyS0", OpenOutcome::InUse, None);
        p.holders = vec![agetty.clone()];
        // Scanned and built in: someone's terminal, worth a note only.
        check(
            &facts(false, vec![p.clone()]),
            &[
                (Severity::Error, "no modem found"),
                (
                    Severity::Info,
                    "/dev/ttyS0 is in use by agetty (pid 5); not probed",
                ),
            ],
        );
        check(
            &facts(true, vec![p.clone()]),
            &[(Severity::Error, "in use by agetty (pid 5)")],
        );
        p.usb = Some(UsbInfo::default());
        check(
            &facts(false, vec![p]),
            &[
                (Severity::Error, "in use by agetty"),
                (Severity::Error, "no modem found"),
            ],
        );
        let console = port("/dev/ttyS0", OpenOutcome::Console, None);
        check(
            &facts(false, vec![console]),
            &[
                (Severity::Error, "no modem found"),
                (Severity::Info, "kernel console"),
            ],
        );
    }

    #[test]
    fn sim_states() {
        let with = |sim| {
            facts(
                true,
                vec![modem(ModemFacts {
                    sim,
                    creg: Some(0),
                    cereg: None,
                    signal_dbm: None,
                    smsc: None,
                    ..healthy()
                })],
            )
        };
        // A locked SIM explains the rest: no registration, signal or SMSC findings after it.
        let got = check(
            &with(Some(SimState::PinRequired)),
            &[(Severity::Error, "wants its PIN")],
        );
        // The file must belong to the service user: a root-owned 0600 file (what `umask 077;
        // echo > file` under sudo makes) is one the service cannot read (issue 16.4).
        for hint in [
            "pin_file",
            "SIMGATE_PIN",
            "install -o simgate -g simgate -m 0600",
        ] {
            assert!(
                got[0].fix.contains(hint),
                "fix lacks {hint}: {}",
                got[0].fix
            );
        }
        assert!(!got[0].fix.contains("umask"), "{}", got[0].fix);
        assert!(usable_ports(&with(Some(SimState::PinRequired))).is_empty());
        let got = check(
            &with(Some(SimState::PukRequired)),
            &[(Severity::Error, "PUK")],
        );
        assert!(got[0].fix.contains("never sends a PUK"));
        check(
            &with(Some(SimState::NotInserted)),
            &[(Severity::Error, "no SIM card")],
        );
        check(
            &with(Some(SimState::Busy)),
            &[(Severity::Warning, "still starting up")],
        );
        check(
            &with(Some(SimState::Other("PH-NET PIN".into()))),
            &[(Severity::Error, "\"PH-NET PIN\"")],
        );
        check(&with(None), &[(Severity::Warning, "+CPIN?")]);
    }

    #[test]
    fn registration_states() {
        let with = |creg, cereg| {
            facts(
                true,
                vec![modem(ModemFacts {
                    creg,
                    cereg,
                    ..healthy()
                })],
            )
        };
        let got = check(
            &with(Some(2), Some(0)),
            &[(Severity::Error, "not registered on a network (searching)")],
        );
        assert!(got[0].fix.contains("antenna"));
        assert!(got[0].fix.contains("plan"));
        assert!(usable_ports(&with(Some(2), None)).is_empty());
        check(
            &with(Some(0), None),
            &[(Severity::Error, "(not searching)")],
        );
        check(
            &with(Some(8), None),
            &[(Severity::Error, "emergency calls only")],
        );
        let got = check(&with(Some(3), None), &[(Severity::Error, "denied")]);
        assert!(got[0].fix.contains("activated"));
        check(
            &with(Some(5), None),
            &[(Severity::Info, "roaming on Simgate Mobile")],
        );
        assert_eq!(usable_ports(&with(Some(5), None)).len(), 1);
        check(&with(Some(6), None), &[(Severity::Warning, "SMS only")]);
        assert!(usable_ports(&with(Some(6), None)).is_empty());
        check(&with(None, None), &[(Severity::Warning, "+CREG?/+CEREG?")]);
        // LTE-only: CREG searching, CEREG registered — usable, nothing to say.
        let lte = with(Some(2), Some(1));
        check(&lte, &[]);
        assert_eq!(usable_ports(&lte).len(), 1);
    }

    #[test]
    fn signal_and_smsc() {
        let with = |signal_dbm, signal_answered, smsc: Option<&str>| {
            facts(
                true,
                vec![modem(ModemFacts {
                    signal_dbm,
                    signal_answered,
                    smsc: smsc.map(str::to_string),
                    ..healthy()
                })],
            )
        };
        check(
            &with(Some(-107), true, Some("+1555")),
            &[(Severity::Warning, "weak signal on /dev/ttyUSB2: -107 dBm")],
        );
        check(&with(Some(-103), true, Some("+1555")), &[]);
        check(
            &with(None, true, Some("+1555")),
            &[(Severity::Warning, "no measurable signal")],
        );
        check(&with(None, false, Some("+1555")), &[]);
        let got = check(
            &with(Some(-71), true, Some("")),
            &[(Severity::Error, "no SMS service centre number")],
        );
        assert!(got[0].fix.contains("AT+CSCA="));
        check(
            &with(Some(-71), true, None),
            &[(Severity::Error, "no SMS service centre number")],
        );
    }

    #[test]
    fn lost_link_after_answering() {
        check(
            &facts(
                true,
                vec![port(
                    "/dev/ttyUSB2",
                    OpenOutcome::Opened,
                    Some(AtOutcome::Lost("port closed: EOF".into())),
                )],
            ),
            &[(
                Severity::Error,
                "answered AT, then the link failed: port closed: EOF",
            )],
        );
    }

    #[test]
    fn usb_modems_get_stable_names_and_root_is_told_its_open_proves_little() {
        let mut p = modem(healthy());
        p.usb = Some(UsbInfo::default());
        let f = facts(true, vec![p.clone()]);
        let got = check(&f, &[(Severity::Info, "kernel name that can change")]);
        assert!(got[0].fix.contains("60-simgate-modems.rules"));
        p.links = vec![PathBuf::from("/dev/serial/by-id/usb-Quectel-if02-port0")];
        let got = check(
            &facts(true, vec![p.clone()]),
            &[(Severity::Info, "kernel name")],
        );
        assert!(
            got[0]
                .fix
                .contains("device = \"/dev/serial/by-id/usb-Quectel-if02-port0\"")
        );
        p.path = PathBuf::from("/dev/simgate-modem");
        let mut f = facts(true, vec![p]);
        check(&f, &[]);
        f.as_root = true;
        let got = check(&f, &[(Severity::Info, "doctor runs as root")]);
        assert!(got[0].fix.contains("sudo -u simgate simgate doctor"));
        // A pty or built-in UART has no service-user question worth asking.
        let mut f = facts(true, vec![modem(healthy())]);
        f.as_root = true;
        check(&f, &[]);
    }

    fn config(modems: Vec<ConfiguredModem>) -> Option<crate::doctor::ConfigFacts> {
        Some(crate::doctor::ConfigFacts {
            path: PathBuf::from("/etc/simgate/simgate.toml"),
            error: None,
            modems,
        })
    }

    fn configured_at(device: &str, resolved: Option<&str>, pin: Option<&str>) -> ConfiguredModem {
        ConfiguredModem {
            device: PathBuf::from(device),
            resolved: resolved.map(PathBuf::from),
            pin_file: pin.map(PathBuf::from),
        }
    }

    #[test]
    fn the_config_file_explains_a_locked_sim_and_names_the_device() {
        let locked = modem(ModemFacts {
            sim: Some(SimState::PinRequired),
            ..healthy()
        });
        let mut f = facts(true, vec![locked.clone()]);
        f.config = config(vec![configured_at(
            "/dev/simgate-modem",
            Some("/dev/ttyUSB2"),
            Some("/etc/simgate/pin"),
        )]);
        let got = check(
            &f,
            &[(
                Severity::Warning,
                "wants its PIN; the config gives it in /etc/simgate/pin",
            )],
        );
        assert!(got[0].fix.contains("simgate config check"));
        assert!(usable_ports(&f).is_empty());
        // A PIN for another modem does not count.
        f.config = config(vec![configured_at("/dev/ttyUSB7", None, Some("/x"))]);
        check(&f, &[(Severity::Error, "wants its PIN before it can send")]);

        // Scanning: a ready modem the config does not use.
        let mut ready = modem(healthy());
        ready.links = vec![PathBuf::from("/dev/serial/by-id/usb-X-if02")];
        let mut f = facts(false, vec![ready]);
        f.config = config(vec![configured_at("/dev/ttyUSB0", None, None)]);
        let got = check(
            &f,
            &[(
                Severity::Warning,
                "/dev/ttyUSB2 is ready, but /etc/simgate/simgate.toml configures other devices \
                 (/dev/ttyUSB0)",
            )],
        );
        assert!(
            got[0]
                .fix
                .contains("device = \"/dev/serial/by-id/usb-X-if02\"")
        );
        f.config = config(vec![configured_at(
            "/dev/simgate-modem",
            Some("/dev/ttyUSB2"),
            None,
        )]);
        check(&f, &[]);
    }

    #[test]
    fn a_config_file_that_does_not_load_is_an_error() {
        let mut f = facts(true, vec![modem(healthy())]);
        f.config = Some(crate::doctor::ConfigFacts {
            path: PathBuf::from("/etc/simgate/simgate.toml"),
            error: Some("/etc/simgate/simgate.toml: api.lisen: unknown field".into()),
            modems: Vec::new(),
        });
        let got = check(
            &f,
            &[(
                Severity::Error,
                "serve would not start with this config file",
            )],
        );
        assert!(got[0].port.is_none());
        assert!(
            got[0]
                .fix
                .contains("simgate config check /etc/simgate/simgate.toml")
        );
        assert_eq!(usable_ports(&f).len(), 1);
    }
}
