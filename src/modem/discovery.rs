//! Finding a modem by what it is (IMEI, ICCID, USB serial number) rather than where it is.
//!
//! USB serial ports are named in plug order, so a replug or a second dongle turns `ttyUSB0`
//! into `ttyUSB3`. A `[[modem]]` that names an identity is bound by scanning candidate ports
//! (globs, `*` in the last path component only), skipping ports another modem of this daemon
//! already holds, and asking each what it is:
//! - USB serial: sysfs only (`/sys/class/tty/<name>/device`, walked up to the USB device
//!   directory holding `busnum`/`devnum`/`serial`); the port is never opened.
//! - IMEI: `AT+CGSN` (TS 27.007 §5.4) after a short re-sync.
//! - ICCID: `AT+CCID`, `AT+ICCID` or `AT^ICCID?` (vendor commands; TS 27.007 has none).
//!
//! Probes use short timeouts, change no setting and never send a PIN: a wrong port may be
//! another program's modem, and a PIN sent to the wrong SIM counts against its three tries.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::init;
use crate::transport;

/// Where identity-configured modems are looked for unless `scan` says otherwise.
pub const DEFAULT_SCAN: [&str; 3] = ["/dev/ttyUSB*", "/dev/ttyACM*", "/dev/simgate/*"];

/// The sysfs root; tests pass a fake tree to the functions that take it as an argument.
pub const SYSFS: &str = "/sys";

/// `AT` tries when probing a candidate: few and short, a silent port is just not ours.
const PROBE_SYNC_ATTEMPTS: u32 = 2;
/// Timeout of each probe command.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a modem is, as a `[[modem]]` may name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceIdentity {
    /// The modem's IMEI (`AT+CGSN`); follows the modem whatever SIM is in it.
    Imei(String),
    /// The SIM's ICCID; follows the SIM (and so the phone number) from modem to modem.
    Iccid(String),
    /// The USB device's `iSerial`, read from sysfs without opening the port.
    UsbSerial(String),
}

impl DeviceIdentity {
    /// The config key naming this kind of identity.
    pub fn key(&self) -> &'static str {
        match self {
            DeviceIdentity::Imei(_) => "imei",
            DeviceIdentity::Iccid(_) => "iccid",
            DeviceIdentity::UsbSerial(_) => "usb_serial",
        }
    }

    /// The wanted value.
    pub fn value(&self) -> &str {
        match self {
            DeviceIdentity::Imei(v) | DeviceIdentity::Iccid(v) | DeviceIdentity::UsbSerial(v) => v,
        }
    }

    /// Whether `reported` (what the port said) is this identity.
    pub fn matches(&self, reported: &str) -> bool {
        match self {
            DeviceIdentity::Imei(want) => want == reported.trim(),
            DeviceIdentity::Iccid(want) => iccid_matches(want, reported),
            DeviceIdentity::UsbSerial(want) => want == reported.trim(),
        }
    }
}

impl std::fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.key(), self.value())
    }
}

/// ICCIDs compared without the `F` filler of an odd length; some Huawei firmware answers
/// `^ICCID` with the raw EF_ICCID bytes (digits swapped in pairs), which is accepted too.
fn iccid_matches(want: &str, reported: &str) -> bool {
    let norm = |s: &str| {
        s.trim()
            .trim_matches('"')
            .to_ascii_uppercase()
            .trim_end_matches('F')
            .to_string()
    };
    let (want, got) = (norm(want), norm(reported));
    if got.is_empty() {
        return false;
    }
    if want == got {
        return true;
    }
    let swapped: String = reported
        .trim()
        .trim_matches('"')
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .flat_map(|pair| pair.iter().rev().map(|&b| b as char))
        .collect();
    norm(&swapped) == want
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (none
/// included) and everything else is literal.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// Why a scan pattern is unusable (config validation shows it).
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let path = Path::new(pattern);
    if !path.is_absolute() {
        return Err(format!("{pattern:?} is not an absolute path"));
    }
    let parent = path.parent().map(|p| p.to_string_lossy().into_owned());
    if parent.is_some_and(|p| p.contains('*')) {
        return Err(format!(
            "{pattern:?}: `*` is allowed in the last path component only"
        ));
    }
    if path.file_name().is_none() {
        return Err(format!("{pattern:?} names no file"));
    }
    Ok(())
}

/// The paths `pattern` matches now, sorted; a pattern without `*` yields itself if it exists.
/// An unreadable directory yields nothing (the modem is just not there yet).
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let file = file.to_string_lossy();
    if !file.contains('*') {
        return if std::fs::symlink_metadata(path).is_ok() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| glob_match(&file, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Candidate ports of `scan`, in pattern order, each real device once (a udev symlink and its
/// target are one port), without dangling links and without ports in `bound`.
pub fn candidates(scan: &[String], bound: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for pattern in scan {
        for path in expand(pattern) {
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if seen.contains(&real) || bound.contains(&real) {
                continue;
            }
            seen.push(real);
            out.push(path);
        }
    }
    out
}

/// Ports held by the modems of this process, by real path, so one modem's scan never probes
/// (and so disturbs) a port another modem is using.
static BOUND: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());

/// A port marked as in use by one modem until dropped.
#[derive(Debug)]
pub struct Claim {
    /// The real path (symlinks resolved) that is marked.
    real: PathBuf,
}

impl Claim {
    /// Marks `device` as used by `modem`.
    pub fn new(device: &Path, modem: &str) -> Claim {
        let real = std::fs::canonicalize(device).unwrap_or_else(|_| device.to_path_buf());
        let mut bound = BOUND.lock().unwrap_or_else(|e| e.into_inner());
        bound.push((real.clone(), modem.to_string()));
        Claim { real }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut bound = BOUND.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = bound.iter().position(|(p, _)| *p == self.real) {
            bound.remove(i);
        }
    }
}

/// The ports other modems of this process hold.
fn bound_by_others(modem: &str) -> Vec<PathBuf> {
    let bound = BOUND.lock().unwrap_or_else(|e| e.into_inner());
    bound
        .iter()
        .filter(|(_, m)| m != modem)
        .map(|(p, _)| p.clone())
        .collect()
}

/// The sysfs directory of the USB device behind tty `name` (e.g. `ttyUSB0`): the first
/// ancestor of `<sys>/class/tty/<name>/device` that has `busnum` and `devnum`. `None` for a
/// pty, a built-in UART or anything not on USB.
pub fn usb_device_dir(sys: &Path, name: &str) -> Option<PathBuf> {
    let start = std::fs::canonicalize(sys.join("class/tty").join(name).join("device")).ok()?;
    let mut dir = start.as_path();
    loop {
        if dir.join("busnum").is_file() && dir.join("devnum").is_file() {
            return Some(dir.to_path_buf());
        }
        dir = dir.parent()?;
        if dir == sys || dir.as_os_str().len() <= sys.as_os_str().len() {
            return None;
        }
    }
}

/// The tty name of a port path, symlinks resolved (`/dev/simgate/modem` → `ttyUSB0`).
pub fn tty_name(device: &Path) -> Option<String> {
    let real = std::fs::canonicalize(device).ok()?;
    Some(real.file_name()?.to_string_lossy().into_owned())
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The USB serial number (`iSerial`) of the device behind `device`, from sysfs.
pub fn usb_serial(sys: &Path, device: &Path) -> Option<String> {
    read_trimmed(&usb_device_dir(sys, &tty_name(device)?)?.join("serial"))
}

/// `/dev/bus/usb/BBB/DDD` of the USB device behind `device` (usbfs, for `USBDEVFS_RESET`).
pub fn usb_bus_path(sys: &Path, device: &Path) -> Option<PathBuf> {
    let dir = usb_device_dir(sys, &tty_name(device)?)?;
    let bus: u32 = read_trimmed(&dir.join("busnum"))?.parse().ok()?;
    let dev: u32 = read_trimmed(&dir.join("devnum"))?.parse().ok()?;
    Some(PathBuf::from(format!("/dev/bus/usb/{bus:03}/{dev:03}")))
}

/// Asks the port at `device` for the kind of identity `wanted` names; `Ok(None)` when the port
/// answers but does not know (e.g. no SIM for an ICCID). `Err` when it cannot be opened or
/// does not answer.
pub async fn probe(
    device: &Path,
    baud: u32,
    wanted: &DeviceIdentity,
) -> Result<Option<String>, String> {
    if let DeviceIdentity::UsbSerial(_) = wanted {
        return Ok(usb_serial(Path::new(SYSFS), device));
    }
    let port = transport::open(device, baud).map_err(|e| e.to_string())?;
    let (r, w) = tokio::io::split(port);
    let (mut client, _urcs) = crate::at::engine::spawn(r, w);
    let result = async {
        init::sync(&mut client, PROBE_SYNC_ATTEMPTS, PROBE_TIMEOUT).await?;
        match wanted {
            DeviceIdentity::Imei(_) => init::imei(&mut client, PROBE_TIMEOUT).await,
            _ => init::iccid(&mut client, PROBE_TIMEOUT).await,
        }
    }
    .await
    .map_err(|e| format!("no answer: {e}"));
    client.close().await;
    result
}

/// Finds the port of the modem `wanted` names among `scan` (or checks `expected`, when the
/// config names both a device and an identity), skipping ports other modems of this process
/// hold. Returns the path to open, or why nothing matched.
pub async fn find(
    modem: &str,
    wanted: &DeviceIdentity,
    scan: &[String],
    expected: Option<&Path>,
    baud: u32,
) -> Result<PathBuf, String> {
    let candidates = match expected {
        Some(device) => vec![device.to_path_buf()],
        None => candidates(scan, &bound_by_others(modem)),
    };
    if candidates.is_empty() {
        return Err(format!(
            "no candidate port for {wanted} in {}",
            scan.join(", ")
        ));
    }
    let mut seen = Vec::new();
    for device in candidates {
        match probe(&device, baud, wanted).await {
            Ok(Some(reported)) if wanted.matches(&reported) => {
                tracing::info!(modem, device = %device.display(), identity = %wanted, "modem found by identity");
                return Ok(device);
            }
            Ok(Some(reported)) => {
                tracing::debug!(modem, device = %device.display(), %reported, "another modem");
                seen.push(format!(
                    "{} has {} {reported}",
                    device.display(),
                    wanted.key()
                ));
            }
            Ok(None) => seen.push(format!("{} reports no {}", device.display(), wanted.key())),
            Err(e) => seen.push(format!("{}: {e}", device.display())),
        }
    }
    Err(format!("no port has {wanted} ({})", seen.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_anywhere_in_a_name() {
        assert!(glob_match("ttyUSB*", "ttyUSB0"));
        assert!(glob_match("ttyUSB*", "ttyUSB"));
        assert!(!glob_match("ttyUSB*", "ttyACM0"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("modem-*-if0*", "modem-a-if00"));
        assert!(!glob_match("modem-*-if0*", "modem-a-if10"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
        assert!(
            !glob_match("ab*ba", "aba"),
            "prefix and suffix must not overlap"
        );
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_pattern("/dev/ttyUSB*").is_ok());
        assert!(check_pattern("/dev/simgate/*").is_ok());
        assert!(check_pattern("dev/ttyUSB*").is_err());
        assert!(check_pattern("/dev/*/ttyUSB0").is_err());
    }

    #[test]
    fn candidates_expand_dedupe_and_skip_bound() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in ["tty0", "tty1", "other"] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        std::os::unix::fs::symlink(d.join("tty1"), d.join("link-tty1")).unwrap();
        std::os::unix::fs::symlink(d.join("gone"), d.join("link-gone")).unwrap();
        let scan = vec![
            format!("{}/tty*", d.display()),
            format!("{}/link-*", d.display()),
        ];
        assert_eq!(candidates(&scan, &[]), [d.join("tty0"), d.join("tty1")]);
        let bound = [std::fs::canonicalize(d.join("tty0")).unwrap()];
        assert_eq!(candidates(&scan, &bound), [d.join("tty1")]);
        let exact = vec![format!("{}/other", d.display())];
        assert_eq!(candidates(&exact, &[]), [d.join("other")]);
        assert!(candidates(&[format!("{}/nothing/*", d.display())], &[]).is_empty());
    }

    #[test]
    fn claims_hide_ports_from_other_modems_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let port = dir.path().join("claimed");
        std::fs::write(&port, b"").unwrap();
        let real = std::fs::canonicalize(&port).unwrap();
        let claim = Claim::new(&port, "claims-test-a");
        assert!(bound_by_others("claims-test-b").contains(&real));
        assert!(!bound_by_others("claims-test-a").contains(&real));
        drop(claim);
        assert!(!bound_by_others("claims-test-b").contains(&real));
    }

    #[test]
    fn sysfs_walk_finds_the_usb_device_of_a_tty() {
        // A fake sysfs laid out like the kernel's: the tty's `device` link points at the USB
        // interface, whose parent is the USB device with busnum/devnum/serial.
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let usb = s.join("devices/pci0000:00/usb1/1-2");
        let intf = usb.join("1-2:1.0");
        std::fs::create_dir_all(intf.join("ttyUSB3")).unwrap();
        std::fs::write(usb.join("busnum"), "1\n").unwrap();
        std::fs::write(usb.join("devnum"), "7\n").unwrap();
        std::fs::write(usb.join("serial"), "0123456789ABCDEF\n").unwrap();
        std::fs::create_dir_all(s.join("class/tty/ttyUSB3")).unwrap();
        std::os::unix::fs::symlink(&intf, s.join("class/tty/ttyUSB3/device")).unwrap();
        std::fs::create_dir_all(s.join("class/tty/ttyS0")).unwrap();

        let dev = tempfile::tempdir().unwrap();
        let tty = dev.path().join("ttyUSB3");
        std::fs::write(&tty, b"").unwrap();
        let link = dev.path().join("simgate-modem");
        std::os::unix::fs::symlink(&tty, &link).unwrap();

        assert_eq!(
            usb_device_dir(s, "ttyUSB3"),
            Some(std::fs::canonicalize(&usb).unwrap())
        );
        assert_eq!(usb_serial(s, &link).as_deref(), Some("0123456789ABCDEF"));
        assert_eq!(
            usb_bus_path(s, &link),
            Some(PathBuf::from("/dev/bus/usb/001/007"))
        );
        assert_eq!(usb_device_dir(s, "ttyS0"), None);
        assert_eq!(usb_device_dir(s, "pts"), None);
    }

    #[test]
    fn identities_match_what_modems_report() {
        let imei = DeviceIdentity::Imei("356938035643809".into());
        assert!(imei.matches("356938035643809"));
        assert!(!imei.matches("356938035643808"));
        let iccid = DeviceIdentity::Iccid("8944500102198304826".into());
        assert!(iccid.matches("8944500102198304826F"));
        assert!(iccid.matches("8944500102198304826"));
        assert!(
            iccid.matches("984405102091384028F6"),
            "nibble-swapped EF_ICCID"
        );
        assert!(!iccid.matches("8944500102198304827"));
        assert!(!iccid.matches(""));
        assert_eq!(iccid.to_string(), "iccid 8944500102198304826");
    }
}
