//! [`ControlServer`]: the listening socket (Unix, owner-only, or loopback TCP) and the
//! per-connection JSON-lines loop. Separate because it is the only part that does socket I/O
//! on the server side.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ControlAddr;
use super::hub::Hub;
/// The longest request line accepted: a long multi-part text with room to spare.
const MAX_REQUEST: usize = 256 * 1024;

/// A listening control socket; dropping it stops accepting and removes a Unix socket file.
pub struct ControlServer {
    addr: ControlAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Binds `addr` and serves `ctl` on it. A Unix socket is created owner-only; a stale one
    /// (nobody listening) is replaced, anything else at the path is refused.
    pub async fn bind(addr: &ControlAddr, ctl: impl Into<Hub>) -> std::io::Result<ControlServer> {
        let ctl: Hub = ctl.into();
        let (task, bound) = match addr {
            ControlAddr::Unix(path) => {
                match std::fs::symlink_metadata(path) {
                    Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                        if UnixStream::connect(path).is_ok() {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                format!("{} is in use by another simulator", path.display()),
                            ));
                        }
                        std::fs::remove_file(path)?;
                    }
                    Ok(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    Err(_) => {}
                }
                // Owner-only from the start: whoever can connect can steer the modem.
                let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
                let listener = tokio::net::UnixListener::bind(path);
                nix::sys::stat::umask(old);
                let listener = listener?;
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                tokio::spawn(serve_conn(stream, ctl.clone()));
                            }
                            Err(e) => {
                                tracing::warn!("sim: control accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                (task, addr.clone())
            }
            ControlAddr::Tcp(a) => {
                let listener = tokio::net::TcpListener::bind(a).await?;
                let bound = ControlAddr::Tcp(listener.local_addr()?);
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                tokio::spawn(serve_conn(stream, ctl.clone()));
                            }
                            Err(e) => {
                                tracing::warn!("sim: control accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                (task, bound)
            }
        };
        Ok(ControlServer { addr: bound, task })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn addr(&self) -> &ControlAddr {
        &self.addr
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        if let ControlAddr::Unix(path) = &self.addr {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One connection: a request line in, an answer line out, until the peer closes.
async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(stream: S, ctl: Hub) {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut read)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let answer = if line.len() > MAX_REQUEST {
            let a = json!({"ok": false, "error": format!("a request line is at most {MAX_REQUEST} bytes")});
            let _ = write.write_all(format!("{a}\n").as_bytes()).await;
            return;
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => ctl.call_line(text.trim()).await,
                Err(_) => json!({"ok": false, "error": "the request is not UTF-8"}),
            }
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
