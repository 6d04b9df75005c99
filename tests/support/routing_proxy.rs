//! A pty of its own in front of a [`super::SimProcess`] that changes how the simulator hands
//! incoming texts over: every byte passes through, except that
//! - with `cmt`, the daemon's `AT+CNMI=<mode>,1,…` goes to the simulator as
//!   `AT+CNMI=<mode>,2,…` (TS 27.005 §3.4.1, <mt>=2: routed as `+CMT`, never stored);
//! - with `service_1`, its `AT+CMGF=0` goes as `AT+CMGF=0;+CSMS=1` (§3.2.1: phase 2+ service,
//!   every `+CMT` waits for `AT+CNMA`);
//! - while [`RoutingProxy::swallow_deletes`] is set, its `AT+CMGD` never arrives (§3.5.4): the
//!   text stays on the SIM as if the daemon had died between the commit and the delete.
//!
//! simgate asks for stored texts (<mt>=1: the SIM keeps a text until it is committed), but a
//! modem may route texts to the TE anyway; `cmt` is that modem, with the simulator's own `+CMT`.
//!
//! Include it with `#[path = "support/routing_proxy.rs"] mod routing_proxy;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy; stops (and removes its link) on drop.
pub struct RoutingProxy {
    /// The symlink to this pty's serial end: the daemon's `device`.
    pub link: PathBuf,
    /// How many command lines were rewritten.
    pub rewritten: Arc<AtomicUsize>,
    /// While set, `AT+CMGD` lines are dropped.
    pub swallow_deletes: Arc<AtomicBool>,
    /// How many `AT+CMGD` lines were dropped.
    pub swallowed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl RoutingProxy {
    /// Starts the proxy between `sim_link` and a new symlink in a fresh temporary directory.
    pub fn start(sim_link: &Path, cmt: bool, service_1: bool) -> RoutingProxy {
        use nix::sys::termios::{self, SetArg};
        let dir = tempfile::tempdir().expect("create temporary directory");
        let link = dir.path().join("modem");
        let pair = nix::pty::openpty(None, None).expect("openpty");
        let mut t = termios::tcgetattr(&pair.slave).expect("tcgetattr");
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        let device = nix::unistd::ttyname(&pair.slave).expect("ttyname");
        std::os::unix::fs::symlink(&device, &link).expect("symlink the proxy's pty");
        let sim = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(sim_link)
            .expect("open the simulator's serial end");
        let master = std::fs::File::from(pair.master);
        let stop = Arc::new(AtomicBool::new(false));
        let rewritten = Arc::new(AtomicUsize::new(0));
        let swallow_deletes = Arc::new(AtomicBool::new(false));
        let swallowed = Arc::new(AtomicUsize::new(0));
        // The slave stays open for the proxy's life, or reads on the master would fail with EIO
        // whenever the daemon has the port closed.
        let slave = pair.slave;
        let to_sim = {
            let (mut from, mut to) = (master.try_clone().unwrap(), sim.try_clone().unwrap());
            let (stop, rewritten) = (stop.clone(), rewritten.clone());
            let (swallow, swallowed) = (swallow_deletes.clone(), swallowed.clone());
            std::thread::spawn(move || {
                let _slave = slave;
                let mut line: Vec<u8> = Vec::new();
                pump(&mut from, &stop, |chunk| {
                    for &b in chunk {
                        line.push(b);
                        // A command line ends with CR; a PDU after the prompt with Ctrl-Z (or
                        // ESC to cancel): pass either on whole, rewritten if it is one of ours.
                        if matches!(b, b'\r' | b'\n' | 0x1A | 0x1B) {
                            if swallow.load(Ordering::SeqCst)
                                && line.to_ascii_uppercase().starts_with(b"AT+CMGD")
                            {
                                swallowed.fetch_add(1, Ordering::SeqCst);
                                line.clear();
                                continue;
                            }
                            let out = rewrite(&line, cmt, service_1);
                            if out != line {
                                rewritten.fetch_add(1, Ordering::SeqCst);
                            }
                            to.write_all(&out)?;
                            line.clear();
                        }
                    }
                    Ok(())
                });
            })
        };
        let to_daemon = {
            let (mut from, mut to) = (sim, master);
            let stop = stop.clone();
            std::thread::spawn(move || pump(&mut from, &stop, |chunk| to.write_all(chunk)))
        };
        RoutingProxy {
            link,
            rewritten,
            swallow_deletes,
            swallowed,
            stop,
            threads: vec![to_sim, to_daemon],
            _dir: dir,
        }
    }
}

impl Drop for RoutingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The command line as the simulator gets it.
pub fn rewrite(line: &[u8], cmt: bool, service_1: bool) -> Vec<u8> {
    let text = String::from_utf8_lossy(line);
    let upper = text.trim_end().to_ascii_uppercase();
    if let Some(args) = upper.strip_prefix("AT+CNMI=")
        && cmt
    {
        let mut values: Vec<&str> = args.split(',').collect();
        if values.get(1) == Some(&"1") {
            values[1] = "2";
            return format!("AT+CNMI={}\r", values.join(",")).into_bytes();
        }
    }
    if service_1 && upper == "AT+CMGF=0" {
        return b"AT+CMGF=0;+CSMS=1\r".to_vec();
    }
    line.to_vec()
}

/// Reads `from` until `stop`, handing each chunk to `each`; polls so that `stop` is seen.
fn pump(
    from: &mut std::fs::File,
    stop: &AtomicBool,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut fd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor `from` keeps open during the call.
        let ready = unsafe { libc::poll(&mut fd, 1, 50) };
        if ready == 0
            || (ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
        {
            continue;
        }
        if ready < 0 {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if each(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO on the master while nobody has the slave open: wait for the next open.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
