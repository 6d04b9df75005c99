//! A hostile modem on a real pty, for faults the simulator does not play: a thread in the test
//! process answers the daemon's AT commands like a plain registered modem, except around
//! `AT+CMGS` (TS 27.005 §3.5.1), where it misbehaves as [`Hostile`] says.
//!
//! Include it with `#[path = "support/hostile_modem.rs"] mod hostile_modem;`.

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{self, SetArg};

/// How the modem misbehaves around `AT+CMGS`.
#[derive(Debug, Clone, Copy)]
pub enum Hostile {
    /// After the first PDU, lines of `len` bytes as fast as the port takes them for `secs`
    /// seconds, and no final result; then it answers normally again.
    FloodAfterPdu {
        /// How long the flood lasts.
        secs: u64,
        /// Bytes per line (without CRLF).
        len: usize,
    },
    /// Echoes every PDU back in lower case before answering `+CMGS`.
    LowercaseEcho,
    /// Answers the first `times` `AT+CMGS` with `OK` and no `> ` prompt; later ones normally.
    OkWithoutPrompt {
        /// How many sends get the bare `OK`.
        times: usize,
    },
}

/// What the modem saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every command line, in order (PDUs excluded).
    pub commands: Vec<String>,
    /// Every PDU written after a prompt, as hex.
    pub pdus: Vec<String>,
    /// Bytes a flood wrote.
    pub flooded: usize,
}

/// A running hostile modem; stops and removes its link on drop.
pub struct HostileModem {
    /// The symlink to the pty's slave: the daemon's `device`.
    pub link: PathBuf,
    /// What it saw so far.
    pub seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl HostileModem {
    /// Opens a pty (slave raw, held open so the line discipline never cooks bytes) behind a
    /// symlink in a fresh temporary directory and starts answering.
    pub fn start(hostile: Hostile) -> HostileModem {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("modem");
        let pair = nix::pty::openpty(None, None).unwrap();
        let mut t = termios::tcgetattr(&pair.slave).unwrap();
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).unwrap();
        let device = nix::unistd::ttyname(&pair.slave).unwrap();
        let flags = fcntl(&pair.master, FcntlArg::F_GETFL).unwrap();
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&pair.master, FcntlArg::F_SETFL(flags)).unwrap();
        std::os::unix::fs::symlink(&device, &link).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || serve(pair.master, pair.slave, hostile, &seen, &stop))
        };
        HostileModem {
            link,
            seen,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The commands seen so far.
    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().commands.clone()
    }

    /// The PDUs written so far.
    pub fn pdus(&self) -> Vec<String> {
        self.seen.lock().unwrap().pdus.clone()
    }
}

impl Drop for HostileModem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Port<'a> {
    master: OwnedFd,
    buf: Vec<u8>,
    stop: &'a AtomicBool,
}

impl Port<'_> {
    /// Reads what is there, or pauses briefly; false when nothing came.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match nix::unistd::read(&self.master, &mut chunk) {
            Ok(n) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            // EAGAIN, or EIO while no client has the slave open: wait.
            _ => {
                std::thread::sleep(Duration::from_millis(2));
                false
            }
        }
    }

    /// The next item ending in one of `ends` (without it), or `None` when stopped.
    fn until(&mut self, ends: &[u8]) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| ends.contains(b)) {
                let item: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8_lossy(&item[..i]).into_owned());
            }
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            self.fill();
        }
    }

    fn write(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            match nix::unistd::write(&self.master, rest) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EAGAIN) if !self.stop.load(Ordering::SeqCst) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => return,
            }
        }
    }
}

fn answer(line: &str) -> &'static str {
    let upper = line.to_ascii_uppercase();
    match upper.as_str() {
        "AT+CGMI" => "\r\nHostile\r\n\r\nOK\r\n",
        "AT+CGMM" => "\r\nH1\r\n\r\nOK\r\n",
        "AT+CGMR" => "\r\n1.0\r\n\r\nOK\r\n",
        "AT+CGSN" => "\r\n356938035643809\r\n\r\nOK\r\n",
        "AT+CPIN?" => "\r\n+CPIN: READY\r\n\r\nOK\r\n",
        "AT+CSMS?" => "\r\n+CSMS: 0,1,1,1\r\n\r\nOK\r\n",
        "AT+CREG?" => "\r\n+CREG: 1,1\r\n\r\nOK\r\n",
        "AT+CEREG?" => "\r\n+CEREG: 1,1\r\n\r\nOK\r\n",
        "AT+CGREG?" => "\r\n+CGREG: 1,1\r\n\r\nOK\r\n",
        "AT+COPS?" => "\r\n+COPS: 0,0,\"Hostile\",7\r\n\r\nOK\r\n",
        "AT+CSQ" => "\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
        _ => "\r\nOK\r\n",
    }
}

fn serve(
    master: OwnedFd,
    _slave: OwnedFd,
    hostile: Hostile,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) {
    let mut port = Port {
        master,
        buf: Vec::new(),
        stop,
    };
    let mut sends = 0usize;
    let mut mr = 0u8;
    while let Some(raw) = port.until(b"\r") {
        // ESC and stray line feeds from the daemon's re-sync are not part of a command.
        let line = raw
            .trim_matches(|c: char| c.is_control() || c == ' ')
            .to_owned();
        if line.is_empty() {
            continue;
        }
        seen.lock().unwrap().commands.push(line.clone());
        if !line.to_ascii_uppercase().starts_with("AT+CMGS=") {
            port.write(answer(&line).as_bytes());
            continue;
        }
        sends += 1;
        if let Hostile::OkWithoutPrompt { times } = hostile
            && sends <= times
        {
            port.write(b"\r\nOK\r\n");
            continue;
        }
        port.write(b"\r\n> ");
        let Some(pdu) = port.until(&[0x1a, 0x1b]) else {
            return;
        };
        let pdu = pdu.trim().to_owned();
        seen.lock().unwrap().pdus.push(pdu.clone());
        match hostile {
            Hostile::FloodAfterPdu { secs, len } if sends == 1 => {
                let line = format!("{}\r\n", "7".repeat(len));
                let end = std::time::Instant::now() + Duration::from_secs(secs);
                let mut bytes = 0usize;
                while std::time::Instant::now() < end {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    port.write(line.as_bytes());
                    bytes += line.len();
                }
                seen.lock().unwrap().flooded = bytes;
                // Commands written during the flood went unanswered by a modem out of its mind.
                port.buf.clear();
                continue;
            }
            Hostile::LowercaseEcho => {
                port.write(format!("\r\n{}\r\n", pdu.to_ascii_lowercase()).as_bytes());
            }
            _ => {}
        }
        mr = mr.wrapping_add(1);
        port.write(format!("\r\n+CMGS: {mr}\r\n\r\nOK\r\n").as_bytes());
    }
}

/// The daemon's `RUST_LOG` for these tests: every AT line at trace.
pub const TRACE: &str = "simgate=trace,info";
