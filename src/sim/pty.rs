//! The pseudo-terminal under the simulated modem: the master end driven by tokio, the slave end
//! in raw mode behind a symlink that clients open as their serial device.
//!
//! We hold one slave fd for the pty's whole life: without it, bytes written before a client
//! opens the port go through the default line discipline (echo, CR→LF), and after a client
//! closes, reads on the master fail at once forever (a busy loop). Dropping a `Pty` closes both
//! ends, which a client sees exactly like a USB modem being pulled.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{self, SetArg};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// One open pty pair with its symlink.
pub struct Pty {
    /// The master, non-blocking, registered with tokio.
    master: AsyncFd<OwnedFd>,
    /// Held open only to keep the slave's raw settings and the master's reads sane (see above).
    _slave: OwnedFd,
    /// The slave's device path (`/dev/pts/N`), printed at start.
    pub device: PathBuf,
    /// The symlink we created, removed again on unplug and on exit.
    pub link: PathBuf,
}

impl Pty {
    /// Opens a pair, makes the slave raw, and points `link` at it (replacing a stale symlink
    /// left by an earlier run, but never a regular file or directory).
    pub fn open(link: &Path) -> io::Result<Pty> {
        let pair = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        let mut t = termios::tcgetattr(&pair.slave).map_err(io::Error::from)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
        let device = nix::unistd::ttyname(&pair.slave).map_err(io::Error::from)?;
        let flags = fcntl(&pair.master, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&pair.master, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
        match std::fs::symlink_metadata(link) {
            Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a symlink", link.display()),
                ));
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&device, link)?;
        // SAFETY: an `OwnedFd` is a valid open descriptor that only closes when dropped, and the
        // `AsyncFd` owns it, so it stays the same open file description for its whole life.
        let master = unsafe {
            AsyncFd::register_with_interest(pair.master, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Pty {
            master,
            _slave: pair.slave,
            device,
            link: link.to_path_buf(),
        })
    }

    /// Reads what the client wrote; waits until something is there.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `bytes` to the client, waiting while the pty buffer is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(io::Error::from))
            {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Writes what fits now and drops the rest: for unsolicited noise that must not stall the
    /// simulator while no client drains the pty.
    pub fn try_write(&self, bytes: &[u8]) {
        let _ = nix::unistd::write(self.master.get_ref(), bytes);
    }

    /// Removes the symlink if it still points at this pty.
    pub fn remove_link(&self) {
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.device) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}
