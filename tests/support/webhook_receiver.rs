//! A webhook receiver on loopback for tests: a real HTTP/1.1 server (std sockets, a thread per
//! connection, keep-alive) that records every request and answers what the test says.
//!
//! Include it with `#[path = "support/webhook_receiver.rs"] mod webhook_receiver;`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// This status, empty body.
    Status(u16),
    /// Read the request, never answer (until the connection is closed by the sender).
    Hang,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    /// The body, parsed (`Null` if not JSON).
    pub body: Value,
    /// The raw body.
    pub raw: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with (`None`: hung).
    pub answered: Option<u16>,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

struct Shared {
    requests: Mutex<Vec<Received>>,
    behaviour: Mutex<Behaviour>,
    stopped: AtomicBool,
}

/// A running receiver; stops listening when dropped.
pub struct Receiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on an ephemeral port.
    pub fn start(behaviour: Behaviour) -> Receiver {
        Self::start_on(0, behaviour)
    }

    /// Listens on `port` (0: ephemeral), e.g. to come back on the port a test freed.
    pub fn start_on(port: u16, behaviour: Behaviour) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind 127.0.0.1:{port}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            behaviour: Mutex::new(behaviour),
            stopped: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            while !s.stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(stream, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver { port, shared }
    }

    /// `http://127.0.0.1:<port>/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Changes how later requests are answered.
    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    /// Waits until `done` holds for the requests; returns them (the last look on timeout).
    pub fn wait(&self, timeout: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if done(&r) || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        // Wait for a request line, giving up when the receiver is dropped.
        loop {
            if shared.stopped.load(Ordering::SeqCst) {
                return;
            }
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            match reader.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) => return,
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut raw = vec![0u8; len];
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)));
        if reader.read_exact(&mut raw).is_err() {
            return;
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let behaviour = *shared.behaviour.lock().unwrap();
        let answered = match behaviour {
            Behaviour::Status(s) => Some(s),
            Behaviour::Hang => None,
        };
        shared.requests.lock().unwrap().push(Received {
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            headers,
            raw,
            at: Instant::now(),
            answered,
        });
        match answered {
            Some(status) => {
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
                );
                if writer.write_all(answer.as_bytes()).is_err() {
                    return;
                }
            }
            None => {
                // Hold the connection open without a word until the sender gives up.
                let mut sink = [0u8; 64];
                let _ = reader.get_ref().set_read_timeout(None);
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        }
    }
}
