//! The recovery ladder: what to try, in order, when a modem stops answering.
//!
//! Each rung is stronger (and slower, and more disruptive) than the one before:
//! 1. re-sync: ESC and `AT` until `OK` (a half-typed command, a stuck `> ` prompt);
//! 2. `AT+CFUN=1,1` (TS 27.007 §8.2, full functionality with reset): the modem reboots, its
//!    port may vanish for a while;
//! 3. USB device reset (`USBDEVFS_RESET` on `/dev/bus/usb/BBB/DDD`), the kernel re-enumerates
//!    the device as if it had been replugged; skipped on ports that are not USB (a pty);
//! 4. re-discovery (identity configs) or reopening the path (path configs), with backoff, as
//!    long as it takes.
//!
//! The ladder is climbed one rung per failure; a rung that brings the modem back resets it.
//! [`next_rung`] is the pure rule; the driver carries rungs out and logs each at warn.

use std::path::Path;

/// One step of recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rung {
    /// ESC, then `AT` with retries.
    Resync,
    /// `AT+CFUN=1,1`, then wait for the modem to answer again.
    CfunReset,
    /// `USBDEVFS_RESET` on the modem's USB device.
    UsbReset,
    /// Close the port and find the modem again (by identity, or at its path).
    Rediscover,
}

impl Rung {
    /// The rung's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Rung::Resync => "re-sync",
            Rung::CfunReset => "cfun-reset",
            Rung::UsbReset => "usb-reset",
            Rung::Rediscover => "re-discovery",
        }
    }
}

/// How a rung ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The modem answers again.
    Recovered,
    /// It did not help.
    Failed(String),
    /// It could not be tried here, with the reason (not a USB device, no permission).
    Skipped(String),
    /// It was carried out, but whether it helped shows only once the port is reopened (a USB
    /// reset re-enumerates the device).
    Pending,
}

impl Outcome {
    /// The outcome in a log line.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Recovered => "modem answers again".into(),
            Outcome::Failed(why) => format!("failed: {why}"),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Pending => "done; reopening the port".into(),
        }
    }
}

/// The rung to try after `history` (the rungs tried since the modem last answered, oldest
/// first). Any rung that did not recover leads to the next; the last rung repeats (the
/// driver's backoff spaces those attempts out).
pub fn next_rung(history: &[(Rung, Outcome)]) -> Rung {
    match history.last() {
        None => Rung::Resync,
        Some((_, Outcome::Recovered)) => Rung::Resync,
        Some((Rung::Resync, _)) => Rung::CfunReset,
        Some((Rung::CfunReset, _)) => Rung::UsbReset,
        Some((Rung::UsbReset, _)) | Some((Rung::Rediscover, _)) => Rung::Rediscover,
    }
}

/// The ladder's memory: rungs tried since the modem last answered.
#[derive(Debug, Clone, Default)]
pub struct Ladder {
    /// Rungs tried and how they ended, oldest first.
    history: Vec<(Rung, Outcome)>,
}

impl Ladder {
    /// The rung to try now.
    pub fn next(&self) -> Rung {
        next_rung(&self.history)
    }

    /// Records how `rung` ended; a recovery starts the ladder over.
    pub fn record(&mut self, rung: Rung, outcome: Outcome) {
        if outcome == Outcome::Recovered {
            self.history.clear();
        } else {
            self.history.push((rung, outcome));
        }
    }

    /// The modem works again (initialised): forget the climb.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// Whether a climb is under way.
    pub fn climbing(&self) -> bool {
        !self.history.is_empty()
    }
}

nix::ioctl_none!(usbdevfs_reset, b'U', 20);

/// Resets the USB device behind `device` (Linux `USBDEVFS_RESET`, as a replug would). Needs
/// write access to `/dev/bus/usb/BBB/DDD` (root, or a udev rule). Skipped when the port is not
/// on USB.
pub fn usb_reset(sys: &Path, device: &Path) -> Outcome {
    let Some(bus_path) = super::discovery::usb_bus_path(sys, device) else {
        return Outcome::Skipped(format!(
            "{} is not a USB device (a pty or a built-in UART)",
            device.display()
        ));
    };
    let file = match std::fs::OpenOptions::new().write(true).open(&bus_path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Outcome::Skipped(format!(
                "no write access to {} (needs root or a udev rule)",
                bus_path.display()
            ));
        }
        Err(e) => return Outcome::Failed(format!("{}: {e}", bus_path.display())),
    };
    use std::os::fd::AsRawFd;
    // SAFETY: USBDEVFS_RESET takes no argument; the fd is an open usbfs device node owned by
    // `file` for the whole call.
    match unsafe { usbdevfs_reset(file.as_raw_fd()) } {
        Ok(_) => Outcome::Pending,
        Err(e) => Outcome::Failed(format!("USBDEVFS_RESET on {}: {e}", bus_path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Outcome {
        Outcome::Failed("timeout".into())
    }

    #[test]
    fn rungs_climb_in_order_and_the_last_repeats() {
        let mut history = Vec::new();
        let mut order = Vec::new();
        for _ in 0..6 {
            let rung = next_rung(&history);
            order.push(rung);
            let outcome = match rung {
                Rung::UsbReset => Outcome::Skipped("pty".into()),
                _ => failed(),
            };
            history.push((rung, outcome));
        }
        assert_eq!(
            order,
            [
                Rung::Resync,
                Rung::CfunReset,
                Rung::UsbReset,
                Rung::Rediscover,
                Rung::Rediscover,
                Rung::Rediscover
            ]
        );
    }

    #[test]
    fn a_pending_usb_reset_still_leads_to_rediscovery() {
        let history = [
            (Rung::Resync, failed()),
            (Rung::CfunReset, failed()),
            (Rung::UsbReset, Outcome::Pending),
        ];
        assert_eq!(next_rung(&history), Rung::Rediscover);
    }

    #[test]
    fn a_recovery_starts_the_ladder_over() {
        let mut ladder = Ladder::default();
        assert_eq!(ladder.next(), Rung::Resync);
        ladder.record(Rung::Resync, failed());
        assert_eq!(ladder.next(), Rung::CfunReset);
        assert!(ladder.climbing());
        ladder.record(Rung::CfunReset, Outcome::Recovered);
        assert!(!ladder.climbing());
        assert_eq!(ladder.next(), Rung::Resync);
        ladder.record(Rung::Resync, failed());
        ladder.record(Rung::CfunReset, failed());
        ladder.reset();
        assert_eq!(ladder.next(), Rung::Resync);
        assert_eq!(
            next_rung(&[(Rung::Rediscover, Outcome::Recovered)]),
            Rung::Resync
        );
    }

    #[test]
    fn usb_reset_is_skipped_off_usb() {
        let sys = tempfile::tempdir().unwrap();
        let dev = tempfile::tempdir().unwrap();
        let tty = dev.path().join("pts7");
        std::fs::write(&tty, b"").unwrap();
        let outcome = usb_reset(sys.path(), &tty);
        assert!(
            matches!(&outcome, Outcome::Skipped(why) if why.contains("not a USB device")),
            "{outcome:?}"
        );
    }
}
