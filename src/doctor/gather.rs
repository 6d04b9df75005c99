//! The fact-finding half of doctor: sysfs, `/dev` symlinks, `/proc`, and a short AT
//! conversation with each candidate port. Records, never judges (that is [`super::diagnose`]).
//!
//! The file-system roots are parameters ([`Roots`]) so the sysfs and `/proc` readers are tested
//! against a fake tree in a temporary directory.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AtOutcome, Facts, Holder, ModemFacts, OpenOutcome, PortFacts, UsbInfo, advice};
use crate::at::cmd;
use crate::at::{AtClient, AtError, Refusal};
use crate::modem::init;
use crate::transport::{self, OpenError};

/// Where doctor looks; the real system unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `/sys/class/tty`: one entry per tty, with a `device` link for real hardware.
    pub sys_class_tty: PathBuf,
    /// `/dev`: device nodes and the by-id and simgate symlinks.
    pub dev: PathBuf,
    /// `/proc`: ModemManager and which process holds which tty.
    pub proc: PathBuf,
    /// `/etc/group`, to name the group that owns a device the user may not open.
    pub group_file: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys_class_tty: "/sys/class/tty".into(),
            dev: "/dev".into(),
            proc: "/proc".into(),
            group_file: "/etc/group".into(),
        }
    }
}

/// How long doctor waits at the port.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Per `AT` attempt (two are made) before a port counts as silent: short, because most
    /// ports of a dongle never answer and a user is waiting.
    pub sync: Duration,
    /// Per command once the modem has answered (`+COPS?` can take seconds on some firmware).
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            sync: Duration::from_millis(1000),
            command: Duration::from_secs(5),
        }
    }
}

/// A tty that sysfs backs with a device (virtual consoles and ptys have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysTty {
    /// Kernel name (`ttyUSB2`).
    pub name: String,
    /// USB identity, if the tty hangs off a USB interface.
    pub usb: Option<UsbInfo>,
    /// Driver bound to the tty's device (or to its USB interface).
    pub driver: Option<String>,
    /// Whether there is hardware behind it: the 8250 driver registers `ttyS0`..`ttyS31`
    /// whether or not a UART exists, and marks the missing ones with `type` 0.
    pub hardware: bool,
}

/// Reads every tty under `root` that has a `device`; `None` if `root` cannot be read.
pub fn scan_sysfs(root: &Path) -> Option<Vec<SysTty>> {
    let entries = std::fs::read_dir(root).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names.iter().filter_map(|n| sys_tty(root, n)).collect())
}

/// One tty's sysfs facts; `None` when it has no `device` (not hardware-backed).
pub fn sys_tty(root: &Path, name: &str) -> Option<SysTty> {
    let entry = root.join(name);
    let device = std::fs::canonicalize(entry.join("device")).ok()?;
    let mut interface_dir = None;
    let mut usb_dir = None;
    for dir in device.ancestors() {
        if interface_dir.is_none() && dir.join("bInterfaceNumber").is_file() {
            interface_dir = Some(dir.to_path_buf());
        }
        if dir.join("idVendor").is_file() {
            usb_dir = Some(dir.to_path_buf());
            break;
        }
    }
    let usb = usb_dir.map(|d| UsbInfo {
        vendor_id: read_attr(&d, "idVendor").unwrap_or_default(),
        product_id: read_attr(&d, "idProduct").unwrap_or_default(),
        manufacturer: read_attr(&d, "manufacturer"),
        product: read_attr(&d, "product"),
        serial: read_attr(&d, "serial"),
        interface: interface_dir
            .as_ref()
            .and_then(|i| read_attr(i, "bInterfaceNumber"))
            .and_then(|n| u8::from_str_radix(&n, 16).ok()),
    });
    let driver = driver_name(&device).or_else(|| interface_dir.as_deref().and_then(driver_name));
    let hardware = usb.is_some() || read_attr(&entry, "type").is_none_or(|t| t != "0");
    Some(SysTty {
        name: name.to_string(),
        usb,
        driver,
        hardware,
    })
}

fn read_attr(dir: &Path, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn driver_name(dir: &Path) -> Option<String> {
    let link = std::fs::read_link(dir.join("driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The stable names udev gives serial ports: `/dev/serial/by-id/*` and our own rule's
/// `/dev/simgate-modem` and `/dev/simgate/*`. Returns (link, resolved target) pairs; dangling
/// links are kept with `None` so a missing modem behind a link can be reported.
pub fn scan_links(dev: &Path) -> Vec<(PathBuf, Option<PathBuf>)> {
    let mut links = Vec::new();
    for dir in [dev.join("serial/by-id"), dev.join("simgate")] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut found: Vec<PathBuf> =
                entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            found.sort();
            links.extend(found);
        }
    }
    let main = dev.join("simgate-modem");
    if main.symlink_metadata().is_ok() {
        links.push(main);
    }
    links
        .into_iter()
        .map(|l| {
            let target = std::fs::canonicalize(&l).ok();
            (l, target)
        })
        .collect()
}

/// The ttys the kernel console writes to, from `<sys/class/tty>/console/active` (e.g.
/// `tty0 ttyS0`).
pub fn console_names(sys_class_tty: &Path) -> Vec<String> {
    std::fs::read_to_string(sys_class_tty.join("console/active"))
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Running `ModemManager` processes, from `/proc/*/comm`.
pub fn modem_manager(proc: &Path) -> Vec<Holder> {
    processes(proc)
        .into_iter()
        .filter(|h| h.name == "ModemManager")
        .collect()
}

fn processes(proc: &Path) -> Vec<Holder> {
    let Ok(entries) = std::fs::read_dir(proc) else {
        return Vec::new();
    };
    let mut out: Vec<Holder> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some(Holder {
                pid,
                name: name.trim().to_string(),
            })
        })
        .collect();
    out.sort_by_key(|h| h.pid);
    out
}

/// Which processes (other than `except`, i.e. doctor itself) have each of `targets` open, from
/// the `/proc/*/fd` links. Without root only the user's own processes are visible; a busy port
/// with no visible holder is therefore still possible.
pub fn holders(proc: &Path, targets: &[PathBuf], except: u32) -> HashMap<PathBuf, Vec<Holder>> {
    let mut out: HashMap<PathBuf, Vec<Holder>> = HashMap::new();
    if targets.is_empty() {
        return out;
    }
    for p in processes(proc) {
        if p.pid == except {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.join(p.pid.to_string()).join("fd")) else {
            continue;
        };
        let mut seen = Vec::new();
        for fd in fds.filter_map(|e| e.ok()) {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.contains(&link) && !seen.contains(&link) {
                seen.push(link.clone());
                out.entry(link).or_default().push(p.clone());
            }
        }
    }
    out
}

/// The name of the group with id `gid` in an `/etc/group`-format file.
pub fn group_name(group_file: &Path, gid: u32) -> Option<String> {
    let text = std::fs::read_to_string(group_file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
    })
}

/// Gathers the facts: the given `devices`, or (when empty) every hardware serial port and
/// every udev link to one.
/// `configured` (the config file's modem devices) are checked too when scanning, so a
/// configured path that is missing is reported.
pub async fn gather(
    roots: &Roots,
    devices: &[PathBuf],
    configured: &[PathBuf],
    baud: u32,
    timeouts: Timeouts,
) -> Facts {
    let sysfs = scan_sysfs(&roots.sys_class_tty);
    let sys_by_name: BTreeMap<String, SysTty> = sysfs
        .iter()
        .flatten()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let links = scan_links(&roots.dev);
    let mut ports: Vec<PortFacts> = Vec::new();
    let explicit = !devices.is_empty();
    if explicit {
        for d in devices {
            let resolved = std::fs::canonicalize(d).ok();
            ports.push(describe(d.clone(), resolved, &sys_by_name, &links, roots));
        }
    } else {
        for t in sys_by_name.values().filter(|t| t.hardware) {
            let path = roots.dev.join(&t.name);
            let resolved = std::fs::canonicalize(&path).ok().or(Some(path.clone()));
            ports.push(describe(path, resolved, &sys_by_name, &links, roots));
        }
        // A link whose target is not a scanned port (a simulator's pty, or a dangling link
        // left by an unplugged modem) is a candidate of its own, and so is a configured device.
        let extra = links.iter().cloned().chain(
            configured
                .iter()
                .map(|d| (d.clone(), std::fs::canonicalize(d).ok())),
        );
        for (link, target) in extra {
            let known = ports.iter().any(|p| {
                p.path == link
                    || target
                        .as_ref()
                        .is_some_and(|t| p.target.as_ref() == Some(t))
            });
            if !known {
                ports.push(describe(link, target, &sys_by_name, &links, roots));
            }
        }
    }
    // Holders matter for the kernel's serial ttys only: a pty's other end is always held by
    // whoever created it (a simulator, a terminal), and everyone holds `/dev/null`.
    let targets: Vec<PathBuf> = ports
        .iter()
        .filter_map(|p| p.target.clone())
        .filter(|t| {
            t.parent() == Some(roots.dev.as_path())
                && t.file_name()
                    .is_some_and(|n| roots.sys_class_tty.join(n).exists())
        })
        .collect();
    let held = holders(&roots.proc, &targets, std::process::id());
    for p in &mut ports {
        if let Some(h) = p.target.as_ref().and_then(|t| held.get(t)) {
            p.holders = h.clone();
        }
    }
    let consoles = console_names(&roots.sys_class_tty);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, p) in ports.iter_mut().enumerate() {
        if !p.holders.is_empty() {
            p.open = OpenOutcome::InUse;
            continue;
        }
        let kernel_name = p
            .target
            .as_ref()
            .filter(|t| t.parent() == Some(roots.dev.as_path()))
            .and_then(|t| t.file_name())
            .map(|n| n.to_string_lossy().into_owned());
        if kernel_name.is_some_and(|n| consoles.contains(&n)) {
            p.open = OpenOutcome::Console;
            continue;
        }
        let path = p.path.clone();
        let group_file = roots.group_file.clone();
        tasks.spawn(async move { (i, check_port(&path, baud, timeouts, &group_file).await) });
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, (open, at))) => {
                ports[i].open = open;
                ports[i].at = at;
            }
            Err(e) => tracing::warn!(error = %e, "a port check panicked"),
        }
    }
    // `target` was kept for every port to match holders; show it only where it says something.
    // Holders of something that is not a serial port (`/dev/null`) are noise.
    for p in &mut ports {
        if !matches!(
            p.open,
            OpenOutcome::Opened
                | OpenOutcome::Busy
                | OpenOutcome::InUse
                | OpenOutcome::PermissionDenied { .. }
        ) {
            p.holders.clear();
        }
        if p.target.as_ref() == Some(&p.path) {
            p.target = None;
        }
    }
    Facts {
        explicit,
        ports,
        modem_manager: modem_manager(&roots.proc),
        sysfs_readable: sysfs.is_some(),
        // The owner of /proc/self is the effective user; no unsafe call or extra nix feature.
        as_root: std::fs::metadata(roots.proc.join("self")).is_ok_and(|m| m.uid() == 0),
        config: None,
    }
}

fn describe(
    path: PathBuf,
    resolved: Option<PathBuf>,
    sys: &BTreeMap<String, SysTty>,
    links: &[(PathBuf, Option<PathBuf>)],
    roots: &Roots,
) -> PortFacts {
    // sysfs knows a tty by its kernel name, which is the file name of the real device node.
    let tty = resolved
        .as_ref()
        .filter(|r| r.parent() == Some(roots.dev.as_path()))
        .and_then(|r| r.file_name())
        .and_then(|n| sys.get(n.to_string_lossy().as_ref()));
    let port_links = links
        .iter()
        .filter(|(l, t)| *l != path && t.is_some() && *t == resolved)
        .map(|(l, _)| l.clone())
        .collect();
    PortFacts {
        path,
        target: resolved,
        links: port_links,
        usb: tty.and_then(|t| t.usb.clone()),
        driver: tty.and_then(|t| t.driver.clone()),
        holders: Vec::new(),
        // Replaced by the check; a port that was never checked reads as unopened.
        open: OpenOutcome::Failed("not checked".into()),
        at: None,
    }
}

/// Opens `path`, says `AT`, and if it answers asks the questions doctor judges. Changes no
/// modem setting that outlives the session besides echo and error verbosity.
pub async fn check_port(
    path: &Path,
    baud: u32,
    timeouts: Timeouts,
    group_file: &Path,
) -> (OpenOutcome, Option<AtOutcome>) {
    let port = match transport::open(path, baud) {
        Ok(port) => port,
        Err(e) => return (open_outcome(e, path, group_file), None),
    };
    let (r, w) = tokio::io::split(port);
    let (mut client, _urcs) = crate::at::engine::spawn(r, w);
    if init::sync(&mut client, 2, timeouts.sync).await.is_err() {
        return (OpenOutcome::Opened, Some(AtOutcome::NoAnswer));
    }
    let at = match interrogate(&mut client, timeouts.command).await {
        Ok(m) => AtOutcome::Modem(m),
        Err(e) => AtOutcome::Lost(e.to_string()),
    };
    (OpenOutcome::Opened, Some(at))
}

/// `OpenError` in the terms a fix depends on; also how `simgate modem probe` words a failure.
pub fn open_outcome(e: OpenError, path: &Path, group_file: &Path) -> OpenOutcome {
    match e {
        OpenError::NotFound(_) => OpenOutcome::NotFound,
        OpenError::PermissionDenied(_) => OpenOutcome::PermissionDenied {
            group: std::fs::metadata(path)
                .ok()
                .and_then(|m| group_name(group_file, m.gid())),
        },
        OpenError::Busy(_) => OpenOutcome::Busy,
        OpenError::NotASerialPort(_) => OpenOutcome::NotASerialPort,
        // ENOTTY as the serial crate words it ("Not a typewriter"): the path is no terminal.
        OpenError::Other { reason, .. }
            if reason.contains("typewriter") || reason.contains("Inappropriate ioctl") =>
        {
            OpenOutcome::NotASerialPort
        }
        OpenError::Other { reason, .. } => OpenOutcome::Failed(reason),
    }
}

/// The problem and fix for a port that would not open, in the words doctor uses (the one
/// wording of `advice::open_failure`); `simgate modem probe` and the driver's `last_error` in
/// `GET /v1/modems` use this too.
pub fn open_error_words(e: OpenError, path: &Path) -> (String, String) {
    let fallback = e.to_string();
    let outcome = open_outcome(e, path, Path::new("/etc/group"));
    advice::open_failure(&path.display().to_string(), path, &outcome, "")
        .unwrap_or((fallback, String::new()))
}

/// The questions after a successful `AT`: identity, SIM, registration, operator, signal, SMSC.
async fn interrogate(client: &mut AtClient, timeout: Duration) -> Result<ModemFacts, AtError> {
    client.ask("ATE0", timeout).await?;
    client.ask("AT+CMEE=1", timeout).await?;
    let identity = init::identify(client, timeout).await?;
    let sim = init::sim_state(client, timeout).await.refused_as_none()?;
    let mut reg = [None, None];
    for (slot, name) in reg.iter_mut().zip(["+CREG", "+CEREG"]) {
        let prefix = format!("{name}:");
        *slot = client
            .ask(&format!("AT{name}?"), timeout)
            .await?
            .and_then(|lines| {
                lines
                    .iter()
                    .find_map(|l| cmd::parse_reg_stat(l, &prefix).ok())
            });
    }
    let operator = init::operator(client, timeout).await?;
    let csq = client
        .ask("AT+CSQ", timeout)
        .await?
        .and_then(|lines| lines.iter().find_map(|l| cmd::parse_csq(l).ok()));
    let smsc = init::smsc(client, timeout).await?;
    Ok(ModemFacts {
        manufacturer: identity.manufacturer,
        model: identity.model,
        sim,
        creg: reg[0],
        cereg: reg[1],
        operator,
        signal_dbm: csq.and_then(|(rssi, _)| cmd::rssi_to_dbm(rssi)),
        signal_answered: csq.is_some(),
        smsc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A fake sysfs with a Huawei dongle (ttyUSB0 on interface 0, ttyUSB2 on interface 2), an
    /// ACM modem, a missing and a present 8250 UART, and a virtual console.
    fn fake_sysfs(root: &Path) -> PathBuf {
        let devices = root.join("devices");
        let usb = devices.join("pci0000:00/usb1/1-1");
        write(&usb.join("idVendor"), "12d1\n");
        write(&usb.join("idProduct"), "1506\n");
        write(&usb.join("manufacturer"), "HUAWEI\n");
        write(&usb.join("product"), "HUAWEI Mobile\n");
        let drivers = root.join("drivers");
        std::fs::create_dir_all(drivers.join("option1")).unwrap();
        std::fs::create_dir_all(drivers.join("cdc_acm")).unwrap();
        std::fs::create_dir_all(drivers.join("serial8250")).unwrap();
        for (dir, iface, tty) in [("1-1:1.0", "00", "ttyUSB0"), ("1-1:1.2", "02", "ttyUSB2")] {
            let i = usb.join(dir);
            write(&i.join("bInterfaceNumber"), &format!("{iface}\n"));
            std::fs::create_dir_all(i.join(tty)).unwrap();
            symlink(drivers.join("option1"), i.join(tty).join("driver")).unwrap();
        }
        let acm_dev = devices.join("pci0000:00/usb1/1-2");
        write(&acm_dev.join("idVendor"), "1e0e\n");
        write(&acm_dev.join("idProduct"), "9001\n");
        write(&acm_dev.join("serial"), "ABC123\n");
        let acm_if = acm_dev.join("1-2:1.3");
        write(&acm_if.join("bInterfaceNumber"), "03\n");
        symlink(drivers.join("cdc_acm"), acm_if.join("driver")).unwrap();
        let uart = devices.join("platform/serial8250");
        std::fs::create_dir_all(&uart).unwrap();
        symlink(drivers.join("serial8250"), uart.join("driver")).unwrap();

        let class = root.join("class/tty");
        for (name, dev) in [
            ("ttyUSB0", usb.join("1-1:1.0/ttyUSB0")),
            ("ttyUSB2", usb.join("1-1:1.2/ttyUSB2")),
            ("ttyACM0", acm_if.clone()),
            ("ttyS0", uart.clone()),
            ("ttyS1", uart.clone()),
        ] {
            std::fs::create_dir_all(class.join(name)).unwrap();
            symlink(dev, class.join(name).join("device")).unwrap();
        }
        write(&class.join("ttyS0/type"), "4\n");
        write(&class.join("console/active"), "tty0 ttyS0\n");
        write(&class.join("ttyS1/type"), "0\n");
        std::fs::create_dir_all(class.join("tty1")).unwrap();
        class
    }

    #[test]
    fn sysfs_reads_usb_identity_interface_and_driver() {
        let dir = tempfile::tempdir().unwrap();
        let class = fake_sysfs(dir.path());
        let ttys = scan_sysfs(&class).unwrap();
        let names: Vec<&str> = ttys.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["ttyACM0", "ttyS0", "ttyS1", "ttyUSB0", "ttyUSB2"]);
        let usb2 = &ttys[4];
        assert_eq!(
            usb2.usb,
            Some(UsbInfo {
                vendor_id: "12d1".into(),
                product_id: "1506".into(),
                manufacturer: Some("HUAWEI".into()),
                product: Some("HUAWEI Mobile".into()),
                serial: None,
                interface: Some(2),
            })
        );
        assert_eq!(usb2.driver.as_deref(), Some("option1"));
        assert!(usb2.hardware);
        let acm = &ttys[0];
        assert_eq!(acm.usb.as_ref().unwrap().interface, Some(3));
        assert_eq!(acm.usb.as_ref().unwrap().serial.as_deref(), Some("ABC123"));
        assert_eq!(acm.driver.as_deref(), Some("cdc_acm"));
        assert!(ttys[1].hardware && ttys[1].usb.is_none());
        assert_eq!(ttys[1].driver.as_deref(), Some("serial8250"));
        assert!(!ttys[2].hardware, "8250 type 0 means no UART");
        assert!(scan_sysfs(&dir.path().join("nope")).is_none());
        assert_eq!(console_names(&class), ["tty0", "ttyS0"]);
        assert!(console_names(&dir.path().join("nope")).is_empty());
    }

    #[test]
    fn links_and_holders_and_modem_manager_from_fake_dev_and_proc() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(dev.join("serial/by-id")).unwrap();
        std::fs::create_dir_all(dev.join("simgate")).unwrap();
        write(&dev.join("ttyUSB2"), "");
        symlink(
            dev.join("ttyUSB2"),
            dev.join("serial/by-id/usb-HUAWEI-if02-port0"),
        )
        .unwrap();
        symlink(dev.join("ttyUSB2"), dev.join("simgate-modem")).unwrap();
        symlink(dev.join("ttyUSB9"), dev.join("simgate/spare")).unwrap();
        let links = scan_links(&dev);
        let target = std::fs::canonicalize(dev.join("ttyUSB2")).unwrap();
        assert_eq!(
            links,
            vec![
                (
                    dev.join("serial/by-id/usb-HUAWEI-if02-port0"),
                    Some(target.clone())
                ),
                (dev.join("simgate/spare"), None),
                (dev.join("simgate-modem"), Some(target.clone())),
            ]
        );

        let proc = dir.path().join("proc");
        for (pid, comm, fd) in [
            (10, "ModemManager\n", Some(&target)),
            (20, "minicom\n", None),
            (30, "simgate\n", Some(&target)),
        ] {
            let p = proc.join(pid.to_string());
            write(&p.join("comm"), comm);
            std::fs::create_dir_all(p.join("fd")).unwrap();
            symlink("/dev/null", p.join("fd/0")).unwrap();
            if let Some(t) = fd {
                symlink(t, p.join("fd/5")).unwrap();
                symlink(t, p.join("fd/6")).unwrap();
            }
        }
        std::fs::create_dir_all(proc.join("self")).unwrap();
        let mm = Holder {
            pid: 10,
            name: "ModemManager".into(),
        };
        assert_eq!(modem_manager(&proc), vec![mm.clone()]);
        let held = holders(&proc, std::slice::from_ref(&target), 30);
        assert_eq!(held.get(&target), Some(&vec![mm]));
    }

    #[test]
    fn group_names_come_from_the_group_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("group");
        write(&f, "root:x:0:\ndialout:x:20:alice\nuucp:x:14:\n");
        assert_eq!(group_name(&f, 20).as_deref(), Some("dialout"));
        assert_eq!(group_name(&f, 14).as_deref(), Some("uucp"));
        assert_eq!(group_name(&f, 99), None);
    }

    #[tokio::test]
    async fn scanning_merges_sysfs_links_and_config_and_never_opens_held_or_console_ports() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let roots = Roots {
            sys_class_tty: fake_sysfs(&root),
            dev: root.join("dev"),
            proc: root.join("proc"),
            group_file: root.join("group"),
        };
        let dev = &roots.dev;
        write(&dev.join("ttyUSB2"), "");
        std::fs::create_dir_all(dev.join("serial/by-id")).unwrap();
        symlink(
            dev.join("ttyUSB2"),
            dev.join("serial/by-id/usb-HUAWEI-if02"),
        )
        .unwrap();
        symlink(dev.join("ttyUSB2"), dev.join("simgate-modem")).unwrap();
        let minicom = roots.proc.join("10");
        write(&minicom.join("comm"), "minicom\n");
        std::fs::create_dir_all(minicom.join("fd")).unwrap();
        symlink(dev.join("ttyUSB2"), minicom.join("fd/3")).unwrap();
        let configured = dev.join("configured-modem");

        let facts = gather(
            &roots,
            &[],
            std::slice::from_ref(&configured),
            115_200,
            Timeouts::default(),
        )
        .await;
        assert!(!facts.explicit && facts.sysfs_readable);
        assert!(facts.modem_manager.is_empty());
        let seen: Vec<(String, OpenOutcome)> = facts
            .ports
            .iter()
            .map(|p| {
                let name = p.path.strip_prefix(dev).unwrap().display().to_string();
                (name, p.open.clone())
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("ttyACM0".to_string(), OpenOutcome::NotFound),
                ("ttyS0".to_string(), OpenOutcome::Console),
                ("ttyUSB0".to_string(), OpenOutcome::NotFound),
                ("ttyUSB2".to_string(), OpenOutcome::InUse),
                ("configured-modem".to_string(), OpenOutcome::NotFound),
            ]
        );
        let usb2 = &facts.ports[3];
        assert_eq!(
            usb2.links,
            [
                dev.join("serial/by-id/usb-HUAWEI-if02"),
                dev.join("simgate-modem")
            ]
        );
        assert_eq!(usb2.usb.as_ref().unwrap().interface, Some(2));
        assert_eq!(usb2.driver.as_deref(), Some("option1"));
        assert_eq!(
            usb2.holders,
            [Holder {
                pid: 10,
                name: "minicom".into()
            }]
        );
        assert!(usb2.target.is_none(), "the path is already the device");
        assert!(facts.ports.iter().all(|p| p.at.is_none()));
    }
}
