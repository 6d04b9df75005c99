//! The simulator's control interface: what a test uses to steer a running simulated modem
//! (`simgate sim --control ADDR`, or [`Simulator::controller`](super::Simulator::controller)
//! in-process) and to read what happened on its serial side.
//!
//! The protocol is JSON lines: one request object per line, one answer object per line, in
//! order, on a Unix socket or a loopback TCP port. A request names its operation in `op`; an
//! answer is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. docs/simulator.md lists
//! every operation.
//!
//! Changes go to the runner over a channel and are carried out between two serial reads, so
//! the modem side never waits for a test; what a test reads (the sent log, counters, the
//! storage, recent commands) is a copy the runner refreshes under a small lock after each
//! step, and `wait` watches a version counter instead of polling.
//!
//! Layout: this file holds the address and the runner's job type; `observed` is the copy a
//! test reads, `controller` carries out one request (its field parsing in `request`,
//! `wait` in `wait`), `hub` routes a request to one of several modems, `server` is the
//! socket and `client` the blocking client. Split so each part can be read on its own.

mod client;
mod controller;
mod hub;
mod observed;
mod request;
mod server;
mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;

use super::core::control::{Control, Reply};

pub use self::client::Client;
pub use self::controller::Controller;
pub use self::hub::Hub;
pub(super) use self::observed::Shared;
pub use self::server::ControlServer;

/// Where the control interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A Unix socket path (created owner-only, removed at exit).
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl ControlAddr {
    /// A path (anything with a `/`), or a loopback `host:port` (`127.0.0.1`, `[::1]`,
    /// `localhost`). Other hosts are refused: the socket can make the modem do anything.
    pub fn parse(s: &str) -> Result<ControlAddr, String> {
        if s.contains('/') {
            return Ok(ControlAddr::Unix(PathBuf::from(s)));
        }
        let addr = if let Some(port) = s.strip_prefix("localhost:") {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{s:?}: the port must be a number"))?;
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            s.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{s:?} is neither a socket path (give one with a '/', e.g. ./sim.sock) nor a \
                     loopback host:port such as 127.0.0.1:7000"
                )
            })?
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s:?} is not a loopback address: the control socket steers the modem, so it \
                 listens on 127.0.0.1, [::1] or a Unix socket only"
            ));
        }
        Ok(ControlAddr::Tcp(addr))
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Unix(p) => write!(f, "{}", p.display()),
            ControlAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// What the runner is asked to do.
#[derive(Debug)]
pub(super) enum Job {
    /// A change the core carries out.
    Core(Control),
    /// Vanish now; come back after `replug_after` (else on `replug`), at `link` if given.
    Unplug {
        replug_after: Option<Duration>,
        link: Option<PathBuf>,
    },
    /// Come back now, at `link` if given.
    Replug { link: Option<PathBuf> },
}

/// A job and where its answer goes.
pub(super) type JobMsg = (Job, oneshot::Sender<Result<Reply, String>>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_loopback_only() {
        assert_eq!(
            ControlAddr::parse("./sim.sock"),
            Ok(ControlAddr::Unix("./sim.sock".into()))
        );
        assert_eq!(
            ControlAddr::parse("127.0.0.1:7000"),
            Ok(ControlAddr::Tcp("127.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            ControlAddr::parse("localhost:0"),
            Ok(ControlAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert!(ControlAddr::parse("[::1]:7000").is_ok());
        assert!(
            ControlAddr::parse("0.0.0.0:7000")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(ControlAddr::parse("192.168.1.2:7000").is_err());
        assert!(ControlAddr::parse("sim.sock").is_err());
    }
}
