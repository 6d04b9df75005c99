//! [`Client`]: the blocking client of a control socket, for tests and `simgate sim ctl`.
//! Separate because it runs on the other side of the socket and shares only the address.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use serde_json::Value;

use super::ControlAddr;
/// A blocking client of a control socket, for tests and `simgate sim ctl`.
pub struct Client {
    reader: BufReader<Box<dyn ReadWrite>>,
}

trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

impl Client {
    /// Connects to a control address as [`ControlAddr::parse`] reads it.
    pub fn connect(addr: &str) -> std::io::Result<Client> {
        let addr = ControlAddr::parse(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let stream: Box<dyn ReadWrite> = match addr {
            ControlAddr::Unix(p) => Box::new(UnixStream::connect(p)?),
            ControlAddr::Tcp(a) => Box::new(TcpStream::connect(a)?),
        };
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and returns its answer object as it came.
    pub fn call(&mut self, request: &Value) -> std::io::Result<Value> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{request}\n").as_bytes())?;
        stream.flush()?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the simulator closed the control connection",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Sends one request; an `{"ok": false}` answer becomes `Err` with its `error`.
    pub fn ok(&mut self, request: &Value) -> Result<Value, String> {
        let answer = self.call(request).map_err(|e| e.to_string())?;
        if answer["ok"] == Value::Bool(true) {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("no error given")
                .to_string())
        }
    }
}
