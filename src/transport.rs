//! The only code that knows tokio-serial: opening a port, exclusive access, reconnect backoff.
//!
//! A port is opened exclusively (TIOCEXCL plus an exclusive `flock`, tokio-serial's default), so
//! two daemons — or a daemon and a terminal program — never interleave AT commands on one modem.
//! DTR is set best-effort by the serial crate and its failure on a pseudo-terminal is ignored; we
//! make no other modem-control calls, since they all fail on a pty.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_serial::{SerialPortBuilderExt, SerialStream};

/// Why a port could not be opened, in the terms a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Nothing at that path (a USB modem unplugged, or a wrong path).
    #[error("{0}: no such device")]
    NotFound(PathBuf),
    /// The user may not open it; serial devices usually belong to group `dialout`.
    #[error(
        "{0}: permission denied (add the user to the group owning the device, usually `dialout`)"
    )]
    PermissionDenied(PathBuf),
    /// Someone else holds it open exclusively (another simgate, ModemManager, a terminal).
    #[error("{0}: busy or locked by another program (ModemManager, another simgate, a terminal?)")]
    Busy(PathBuf),
    /// The path exists but is not a terminal (e.g. a regular file).
    #[error("{0}: not a serial port")]
    NotASerialPort(PathBuf),
    /// Anything else, with the system's words.
    #[error("{path}: {reason}")]
    Other {
        /// The device path.
        path: PathBuf,
        /// The error text from the system.
        reason: String,
    },
}

/// Opens `device` at `baud`, 8N1, no flow control, exclusively. Must run inside a tokio runtime
/// (the port registers with its reactor).
pub fn open(device: &Path, baud: u32) -> Result<SerialStream, OpenError> {
    let path = device.to_path_buf();
    // serialport resolves a symlink itself, but its errors do not say "not found" for a dangling
    // link; check first so the message is the useful one.
    if std::fs::metadata(device).is_err() && std::fs::symlink_metadata(device).is_ok() {
        return Err(OpenError::NotFound(path));
    }
    let builder = tokio_serial::new(device.to_string_lossy(), baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .timeout(Duration::from_millis(100));
    builder.open_native_async().map_err(|e| classify(path, e))
}

fn classify(path: PathBuf, e: tokio_serial::Error) -> OpenError {
    use std::io::ErrorKind as Io;
    use tokio_serial::ErrorKind as K;
    match e.kind() {
        K::Io(Io::NotFound) => OpenError::NotFound(path),
        K::Io(Io::PermissionDenied) => OpenError::PermissionDenied(path),
        // serialport reports EBUSY from TIOCEXCL and a held flock as NoDevice.
        K::NoDevice => OpenError::Busy(path),
        _ if e.description.contains("Inappropriate ioctl") || e.description.contains("ENOTTY") => {
            OpenError::NotASerialPort(path)
        }
        _ => OpenError::Other {
            path,
            reason: e.description,
        },
    }
}

/// Exponential backoff for reopening a port: 250 ms, doubling, capped at 30 s. Pure: the caller
/// sleeps.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The delay the next failure will wait.
    next: Duration,
    /// The first delay, restored by `reset`.
    initial: Duration,
    /// The ceiling: a modem replugged after an hour is found within this long.
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff starting at `initial` and never above `cap`.
    pub fn new(initial: Duration, cap: Duration) -> Self {
        Backoff {
            next: initial,
            initial,
            cap,
        }
    }

    /// The delay to wait now; the following one doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }

    /// Back to the initial delay (after a successful open).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }

    #[tokio::test]
    async fn open_errors_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("ttyUSB9");
        assert_eq!(
            open(&missing, 115200).unwrap_err(),
            OpenError::NotFound(missing.clone())
        );
        let dangling = dir.path().join("link");
        std::os::unix::fs::symlink(&missing, &dangling).unwrap();
        assert_eq!(
            open(&dangling, 115200).unwrap_err(),
            OpenError::NotFound(dangling.clone())
        );
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = open(&file, 115200).unwrap_err();
        assert!(
            matches!(err, OpenError::NotASerialPort(_) | OpenError::Other { .. }),
            "{err:?}"
        );
    }
}
