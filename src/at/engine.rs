//! The engine: a task that owns the read half of a byte stream and feeds the digester, plus the
//! client half ([`AtClient`]) that writes commands and waits in the single response slot.
//!
//! One command in flight is a property of the data structure: the slot holds at most one waiting
//! command and [`AtClient::command`] takes `&mut self`. URCs go to a bounded channel; when the
//! stream ends (EOF or an I/O error, e.g. a USB modem unplugged) the engine fails the command in
//! flight and closes that channel, which is how its owner learns of the loss.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::digest::{Digested, Digester, Final, MAX_ANSWER_BYTES, MAX_ANSWER_LINES, Response};
use super::error::{CmeError, CmsError};
use super::redact::{redact, redact_all};
use super::urc::Urc;

/// A URC flood (forged reports, a babbling modem) would write one warning per dropped URC;
/// one line per 10 s, counting the others, is enough to see it (see `log_throttle`).
static URC_DROPS: crate::log_throttle::Throttle =
    crate::log_throttle::Throttle::new(std::time::Duration::from_secs(10));

/// URCs dropped so far because their reader fell behind, by every engine of the process.
pub fn urcs_dropped() -> u64 {
    URC_DROPS.seen()
}

/// ESC (0x1B): cancels a `> ` prompt without sending (TS 27.005 §3.5.1).
pub const ESC: u8 = 0x1B;
/// Ctrl-Z (0x1A): ends a PDU after the prompt and sends it (TS 27.005 §3.5.1).
pub const CTRL_Z: u8 = 0x1A;

/// How many URCs may wait for their reader before new ones are dropped (and logged). The reader
/// task must never block on a slow consumer: it also delivers command answers.
const URC_QUEUE: usize = 256;

/// Why a command did not end in `OK`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    /// `ERROR` (or a vendor spelling of it).
    #[error("ERROR")]
    Error,
    /// `+CME ERROR` (TS 27.007 §9.2).
    #[error("{0}")]
    Cme(CmeError),
    /// `+CMS ERROR` (TS 27.005 §3.2.5).
    #[error("{0}")]
    Cms(CmsError),
    /// `NO CARRIER`, `BUSY`, `NO ANSWER`, `NO DIALTONE` or `CONNECT`, none of which an SMS
    /// command should produce.
    #[error("unexpected final result {0:?}")]
    Unexpected(Final),
    /// No final result within the command's timeout.
    #[error("timed out (payload written: {payload_written})")]
    Timeout {
        /// Whether the payload after a `> ` prompt had been written when time ran out; if so the
        /// modem may have sent it.
        payload_written: bool,
    },
    /// A command that takes a payload (`AT+CMGS`) ended in `OK` without opening its `> `
    /// prompt, so the payload was never written: the `OK` belonged to something else (a late
    /// answer to an earlier command) or the modem is confused. Nothing was sent; re-sync.
    #[error("OK without the > prompt: the payload was never written")]
    NoPrompt,
    /// The answer outgrew what one command may hold ([`MAX_ANSWER_LINES`] lines or
    /// [`MAX_ANSWER_BYTES`] bytes) and was dropped: the device streams lines instead of
    /// answering. The port is still open but out of step; re-sync before the next command.
    #[error(
        "answer too long: over {MAX_ANSWER_LINES} lines or {MAX_ANSWER_BYTES} bytes \
         (payload written: {payload_written})"
    )]
    Overflow {
        /// As for `Timeout`.
        payload_written: bool,
    },
    /// The stream ended or failed.
    #[error("port closed: {reason}")]
    Closed {
        /// EOF or the I/O error, for the log.
        reason: String,
        /// As for `Timeout`.
        payload_written: bool,
    },
}

/// What the reader hands the waiting command.
#[derive(Debug)]
enum Reply {
    Prompt,
    Done(Response),
    Overflow,
}

/// State shared by the reader task and the client, behind a short-held lock (never across an
/// await).
#[derive(Debug, Default)]
struct Shared {
    /// The framer and router; the client tells it which command is in flight.
    digester: Digester,
    /// The single response slot.
    slot: Option<mpsc::UnboundedSender<Reply>>,
    /// Set once the stream has ended, with the reason.
    closed: Option<String>,
}

/// The write side of the engine: one command at a time.
pub struct AtClient {
    /// Shared with the reader task.
    shared: Arc<Mutex<Shared>>,
    /// The write half of the stream.
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// When the last final result arrived, for the cool-down before the next command.
    last_final: Option<Instant>,
    /// Pause between a final result and the next command: some modems drop a command that
    /// follows an answer too closely (atat's best practices). It is kept short because it is
    /// paid once per command, so under a backlog it is most of a modem's idle time between
    /// texts: 20 ms (atat's figure) capped one modem near 45 texts/s, and 2 ms (tokio's 1 ms
    /// timer makes it 2–3 ms) kept a modem busy only 98 % at 0.25 s per text. 1 ms, at least
    /// one USB full-speed frame, still shows a USB modem two commands apart; modems that need
    /// more get it from `[[modem]] command_gap_ms`.
    cooldown: Duration,
    /// The reader task, aborted when the client is closed or dropped.
    reader: Option<JoinHandle<()>>,
}

impl Drop for AtClient {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

/// The command line as the trace log shows it: a PIN or PUK (`AT+CPIN=`, `AT+CPWD=`,
/// `AT+CLCK=`) is replaced by a marker.
fn loggable(line: &str) -> &str {
    let upper = line.get(..8).unwrap_or(line).to_ascii_uppercase();
    if upper.starts_with("AT+CPIN=")
        || upper.starts_with("AT+CPWD=")
        || upper.starts_with("AT+CLCK=")
    {
        "<command with a PIN redacted>"
    } else {
        line
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves plain data behind; keep going.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the engine over a split byte stream. Returns the client and the URC stream; the stream
/// ends when the byte stream does.
pub fn spawn<R, W>(reader: R, writer: W) -> (AtClient, mpsc::Receiver<Urc>)
where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let shared = Arc::new(Mutex::new(Shared::default()));
    let (urc_tx, urc_rx) = mpsc::channel(URC_QUEUE);
    let task = tokio::spawn(read_loop(reader, shared.clone(), urc_tx));
    let client = AtClient {
        shared,
        writer: Box::new(writer),
        last_final: None,
        cooldown: Duration::from_millis(1),
        reader: Some(task),
    };
    (client, urc_rx)
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    shared: Arc<Mutex<Shared>>,
    urcs: mpsc::Sender<Urc>,
) {
    let mut buf = vec![0u8; 4096];
    let reason = loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break "end of stream".to_string(),
            Ok(n) => n,
            Err(e) => break e.to_string(),
        };
        let mut guard = lock(&shared);
        guard.digester.feed(&buf[..n]);
        loop {
            match guard.digester.digest() {
                Digested::Incomplete => break,
                Digested::Urc(urc) => {
                    tracing::trace!(line = %redact(&urc.line), pdu = urc.pdu.is_some(), "at rx urc");
                    if urcs.try_send(Urc::classify(urc)).is_err()
                        && let Some(suppressed) = URC_DROPS.admit()
                    {
                        tracing::warn!(
                            suppressed,
                            "URC dropped: nobody is reading them fast enough"
                        );
                    }
                }
                Digested::Prompt => {
                    tracing::trace!("at rx prompt");
                    if let Some(slot) = &guard.slot {
                        let _ = slot.send(Reply::Prompt);
                    }
                }
                Digested::Response(resp) => {
                    tracing::trace!(lines = ?redact_all(&resp.lines), result = ?resp.result, "at rx response");
                    if let Some(slot) = guard.slot.take() {
                        let _ = slot.send(Reply::Done(resp));
                    }
                }
                Digested::Overflow { lines, bytes } => {
                    tracing::warn!(
                        lines,
                        bytes,
                        "the modem's answer outgrew the limit; failing the command"
                    );
                    if let Some(slot) = guard.slot.take() {
                        let _ = slot.send(Reply::Overflow);
                    }
                }
            }
        }
    };
    tracing::debug!(%reason, "at engine: stream closed");
    let mut guard = lock(&shared);
    guard.closed = Some(reason);
    // Dropping the slot wakes the waiting command with "closed".
    guard.slot = None;
}

impl AtClient {
    /// Stops the reader and waits until it has let go of the read half, so that when this
    /// returns the stream is closed (a serial port's exclusive lock released) — unlike a plain
    /// drop, after which the reader task ends a moment later.
    pub async fn close(mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
            let _ = reader.await;
        }
    }

    /// Changes the pause kept between a final result and the next command.
    pub fn set_cooldown(&mut self, cooldown: Duration) {
        self.cooldown = cooldown;
    }

    /// Whether the stream has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared).closed.is_some()
    }

    fn closed(&self, payload_written: bool) -> AtError {
        AtError::Closed {
            reason: lock(&self.shared)
                .closed
                .clone()
                .unwrap_or_else(|| "engine stopped".to_string()),
            payload_written,
        }
    }

    /// Occupies the slot for `line`; fails if the stream is already closed.
    fn begin(
        &mut self,
        line: &str,
        expect_prompt: bool,
    ) -> Result<mpsc::UnboundedReceiver<Reply>, AtError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut guard = lock(&self.shared);
        if let Some(reason) = &guard.closed {
            return Err(AtError::Closed {
                reason: reason.clone(),
                payload_written: false,
            });
        }
        guard.digester.begin(line, expect_prompt);
        guard.slot = Some(tx);
        Ok(rx)
    }

    fn abandon(&mut self) {
        let mut guard = lock(&self.shared);
        guard.digester.abandon();
        guard.slot = None;
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    async fn cool_down(&mut self) {
        if let Some(at) = self.last_final {
            // The pause is a millisecond or two, so tokio's 1 ms timer would double it.
            crate::fine_sleep::sleep_until(at + self.cooldown).await;
        }
    }

    fn finish(&mut self, resp: Response) -> Result<Vec<String>, AtError> {
        self.last_final = Some(Instant::now());
        match resp.result {
            Final::Ok => Ok(resp.lines),
            Final::Error => Err(AtError::Error),
            Final::Cme(e) => Err(AtError::Cme(e)),
            Final::Cms(e) => Err(AtError::Cms(e)),
            other => Err(AtError::Unexpected(other)),
        }
    }

    /// Keeps the cool-down, takes the response slot and writes `line` + CR; the receiver gets
    /// the command's replies. A write error frees the slot again.
    async fn send_line(
        &mut self,
        line: &str,
        expect_prompt: bool,
    ) -> Result<mpsc::UnboundedReceiver<Reply>, AtError> {
        self.cool_down().await;
        let rx = self.begin(line, expect_prompt)?;
        tracing::trace!(line = %redact(loggable(line)), "at tx");
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\r');
        if let Err(e) = self.write(&bytes).await {
            self.abandon();
            return Err(AtError::Closed {
                reason: e.to_string(),
                payload_written: false,
            });
        }
        Ok(rx)
    }

    /// Sends `line` (without its CR) and waits up to `timeout` for its final result. On `OK`
    /// returns the command's information lines.
    pub async fn command(&mut self, line: &str, timeout: Duration) -> Result<Vec<String>, AtError> {
        let mut rx = self.send_line(line, false).await?;
        let deadline = Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    self.abandon();
                    return Err(AtError::Timeout {
                        payload_written: false,
                    });
                }
                Ok(None) => return Err(self.closed(false)),
                // A stray `>` cannot reach here (no prompt expected); ignore defensively.
                Ok(Some(Reply::Prompt)) => continue,
                Ok(Some(Reply::Done(resp))) => return self.finish(resp),
                Ok(Some(Reply::Overflow)) => return Err(self.overflowed(false)),
            }
        }
    }

    /// The command's answer was dropped for its size; the digester has already let it go.
    fn overflowed(&mut self, payload_written: bool) -> AtError {
        self.last_final = Some(Instant::now());
        AtError::Overflow { payload_written }
    }

    /// Sends `line`, waits for the `> ` prompt, writes `payload` followed by Ctrl-Z, and waits
    /// for the final result — all within `timeout`. The payload is never logged (a PDU may carry
    /// a one-time password). If no prompt comes in time, ESC is written so the modem is not left
    /// waiting for a payload.
    pub async fn command_with_payload(
        &mut self,
        line: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, AtError> {
        let mut rx = self.send_line(line, true).await?;
        let deadline = Instant::now() + timeout;
        let mut payload_written = false;
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => {
                    self.abandon();
                    if !payload_written {
                        // The prompt may be about to open (or open unseen): close it unsent.
                        let _ = self.write(&[ESC]).await;
                    }
                    return Err(AtError::Timeout { payload_written });
                }
                Ok(None) => return Err(self.closed(payload_written)),
                Ok(Some(Reply::Prompt)) if !payload_written => {
                    tracing::trace!(bytes = payload.len(), "at tx <payload redacted>");
                    lock(&self.shared).digester.payload_sent(payload);
                    let mut bytes = payload.as_bytes().to_vec();
                    bytes.push(CTRL_Z);
                    // From the first byte on, the modem may send: count it as written.
                    payload_written = true;
                    if let Err(e) = self.write(&bytes).await {
                        self.abandon();
                        return Err(AtError::Closed {
                            reason: e.to_string(),
                            payload_written,
                        });
                    }
                }
                Ok(Some(Reply::Prompt)) => continue,
                Ok(Some(Reply::Done(resp))) if !payload_written && resp.result == Final::Ok => {
                    self.last_final = Some(Instant::now());
                    return Err(AtError::NoPrompt);
                }
                Ok(Some(Reply::Done(resp))) => return self.finish(resp),
                Ok(Some(Reply::Overflow)) => {
                    if !payload_written {
                        // Still at the prompt, perhaps: close it unsent.
                        let _ = self.write(&[ESC]).await;
                    }
                    return Err(self.overflowed(payload_written));
                }
            }
        }
    }

    /// Writes raw bytes (ESC to cancel, or a bare CR to flush a half-typed line). Nothing waits
    /// for an answer.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AtError> {
        tracing::trace!(?bytes, "at tx raw");
        self.write(bytes).await.map_err(|e| AtError::Closed {
            reason: e.to_string(),
            payload_written: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    /// A scripted modem on the far end of a duplex pipe.
    fn pair() -> (AtClient, mpsc::Receiver<Urc>, DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (r, w) = tokio::io::split(ours);
        let (client, urcs) = spawn(r, w);
        (client, urcs, theirs)
    }

    /// Reads one CR-terminated command from the far end.
    async fn read_cmd(far: &mut BufReader<DuplexStream>) -> String {
        let mut buf = Vec::new();
        far.read_until(b'\r', &mut buf).await.unwrap();
        String::from_utf8(buf).unwrap().trim().to_string()
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn pins_are_not_logged() {
        assert_eq!(
            loggable("AT+CPIN=\"1234\""),
            "<command with a PIN redacted>"
        );
        assert_eq!(
            loggable("at+cpin=\"1234\""),
            "<command with a PIN redacted>"
        );
        assert_eq!(loggable("AT+CPIN?"), "AT+CPIN?");
        assert_eq!(loggable("AT"), "AT");
    }

    #[tokio::test]
    async fn answers_and_urcs_interleave() {
        let (mut client, mut urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            assert_eq!(read_cmd(&mut far).await, "AT+CSQ");
            far.get_mut()
                .write_all(b"\r\n^RSSI:14\r\n\r\n+CSQ: 14,99\r\n+CMTI: \"SM\",1\r\n\r\nOK\r\n")
                .await
                .unwrap();
            far
        });
        let lines = client.command("AT+CSQ", T).await.unwrap();
        assert_eq!(lines, vec!["+CSQ: 14,99"]);
        assert_eq!(urcs.recv().await.unwrap(), Urc::Other("^RSSI:14".into()));
        assert_eq!(
            urcs.recv().await.unwrap(),
            Urc::Stored {
                mem: "SM".into(),
                index: 1
            }
        );
        drop(modem.await.unwrap());
    }

    #[tokio::test]
    async fn typed_errors() {
        let (mut client, _urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            read_cmd(&mut far).await;
            far.get_mut()
                .write_all(b"\r\n+CME ERROR: 10\r\n")
                .await
                .unwrap();
            read_cmd(&mut far).await;
            far.get_mut().write_all(b"\r\nERROR\r\n").await.unwrap();
            far
        });
        assert_eq!(
            client.command("AT+CPIN?", T).await,
            Err(AtError::Cme(CmeError::SimNotInserted))
        );
        assert_eq!(client.command("AT+FOO", T).await, Err(AtError::Error));
        drop(modem.await.unwrap());
    }

    #[tokio::test]
    async fn timeout_frees_the_slot_and_late_answer_is_dropped() {
        let (mut client, mut urcs, far) = pair();
        let mut far = BufReader::new(far);
        client.set_cooldown(Duration::ZERO);
        let err = client
            .command("AT+CSQ", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AtError::Timeout {
                payload_written: false
            }
        );
        assert_eq!(read_cmd(&mut far).await, "AT+CSQ");
        // The late answer arrives, then the next command's answer: only the latter counts.
        far.get_mut().write_all(b"\r\nOK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let modem = tokio::spawn(async move {
            assert_eq!(read_cmd(&mut far).await, "AT+CGMI");
            far.get_mut()
                .write_all(b"\r\nhuawei\r\nOK\r\n")
                .await
                .unwrap();
            far
        });
        assert_eq!(client.command("AT+CGMI", T).await.unwrap(), vec!["huawei"]);
        assert!(urcs.try_recv().is_err());
        drop(modem.await.unwrap());
    }

    #[tokio::test]
    async fn prompt_payload_and_cms_error() {
        let (mut client, mut urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            assert_eq!(read_cmd(&mut far).await, "AT+CMGS=13");
            far.get_mut().write_all(b"\r\n> ").await.unwrap();
            let mut payload = Vec::new();
            far.read_until(CTRL_Z, &mut payload).await.unwrap();
            assert_eq!(payload, b"0011000B91\x1a");
            far.get_mut()
                .write_all(b"\r\n+CDS: 2\r\n0006\r\n\r\n+CMGS: 42\r\n\r\nOK\r\n")
                .await
                .unwrap();
            assert_eq!(read_cmd(&mut far).await, "AT+CMGS=13");
            far.get_mut().write_all(b"\r\n> ").await.unwrap();
            let mut payload = Vec::new();
            far.read_until(CTRL_Z, &mut payload).await.unwrap();
            far.get_mut()
                .write_all(b"\r\n+CMS ERROR: 38\r\n")
                .await
                .unwrap();
            far
        });
        let lines = client
            .command_with_payload("AT+CMGS=13", "0011000B91", T)
            .await
            .unwrap();
        assert_eq!(lines, vec!["+CMGS: 42"]);
        let urc = urcs.recv().await.unwrap();
        assert_eq!(
            urc,
            Urc::StatusReport {
                len: 2,
                pdu: "0006".into()
            }
        );
        let err = client
            .command_with_payload("AT+CMGS=13", "0011000B91", T)
            .await
            .unwrap_err();
        assert_eq!(err, AtError::Cms(CmsError::NetworkOutOfOrder));
        assert!(matches!(err, AtError::Cms(e) if e.is_temporary()));
        drop(modem.await.unwrap());
    }

    #[tokio::test]
    async fn no_prompt_sends_esc_and_reports_not_written() {
        let (mut client, _urcs, far) = pair();
        let mut far = BufReader::new(far);
        let err = client
            .command_with_payload("AT+CMGS=13", "00", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AtError::Timeout {
                payload_written: false
            }
        );
        assert_eq!(read_cmd(&mut far).await, "AT+CMGS=13");
        let mut esc = [0u8; 1];
        far.read_exact(&mut esc).await.unwrap();
        assert_eq!(esc[0], ESC);
    }

    #[tokio::test]
    async fn silence_after_payload_is_outcome_unknown() {
        let (mut client, _urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            read_cmd(&mut far).await;
            far.get_mut().write_all(b"> ").await.unwrap();
            far
        });
        let err = client
            .command_with_payload("AT+CMGS=13", "00", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AtError::Timeout {
                payload_written: true
            }
        );
        drop(modem.await.unwrap());
    }

    /// `OK` to `AT+CMGS` before any prompt: the PDU never left, which is a failure that is safe
    /// to retry, not a success (and not an unknown outcome).
    #[tokio::test]
    async fn ok_without_prompt_is_not_a_send() {
        let (mut client, _urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            assert_eq!(read_cmd(&mut far).await, "AT+CMGS=13");
            far.get_mut().write_all(b"\r\nOK\r\n").await.unwrap();
            // Nothing may follow: no payload was written.
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(100), far.read_to_end(&mut rest)).await;
            assert!(rest.is_empty(), "{rest:?}");
        });
        let err = client
            .command_with_payload("AT+CMGS=13", "0011000B91", T)
            .await
            .unwrap_err();
        assert_eq!(err, AtError::NoPrompt);
        modem.await.unwrap();
    }

    /// A device that streams 2,000-byte lines during `AT+CMGS` (before and after the prompt):
    /// the command fails with `Overflow` once the answer reaches its bound, instead of holding
    /// every line until the timeout, and the next command is answered normally.
    #[tokio::test]
    async fn a_flooding_modem_fails_the_command_with_overflow() {
        for prompt_first in [false, true] {
            let (mut client, _urcs, far) = pair();
            client.set_cooldown(Duration::ZERO);
            let mut far = BufReader::new(far);
            let modem = tokio::spawn(async move {
                assert_eq!(read_cmd(&mut far).await, "AT+CMGS=13");
                if prompt_first {
                    far.get_mut().write_all(b"\r\n> ").await.unwrap();
                    let mut payload = Vec::new();
                    far.read_until(CTRL_Z, &mut payload).await.unwrap();
                }
                let line = format!("{}\r\n", "A".repeat(2000));
                // 40 lines of 2,000 bytes: more than MAX_ANSWER_BYTES.
                for _ in 0..40 {
                    far.get_mut().write_all(line.as_bytes()).await.unwrap();
                }
                far.get_mut().write_all(b"\r\nOK\r\n").await.unwrap();
                if !prompt_first {
                    // The command is given up before its prompt: ESC closes it.
                    let mut esc = [0u8; 1];
                    far.read_exact(&mut esc).await.unwrap();
                    assert_eq!(esc[0], ESC);
                }
                assert_eq!(read_cmd(&mut far).await, "AT");
                far.get_mut().write_all(b"\r\nOK\r\n").await.unwrap();
                far
            });
            let err = client
                .command_with_payload("AT+CMGS=13", "0011000B91", Duration::from_secs(30))
                .await
                .unwrap_err();
            assert_eq!(
                err,
                AtError::Overflow {
                    payload_written: prompt_first
                }
            );
            // Let the flood's tail (and its OK) go by as noise, then the port answers again.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(client.command("AT", T).await, Ok(vec![]));
            drop(modem.await.unwrap());
        }
    }

    #[tokio::test]
    async fn close_lets_go_of_the_stream() {
        let (client, _urcs, mut far) = pair();
        client.close().await;
        // Both halves are gone: the far end reads EOF.
        let mut buf = [0u8; 1];
        assert_eq!(far.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn eof_fails_the_command_and_ends_urcs() {
        let (mut client, mut urcs, far) = pair();
        let mut far = BufReader::new(far);
        let modem = tokio::spawn(async move {
            read_cmd(&mut far).await;
            far.get_mut().write_all(b"\r\n+CSQ: 1,1\r\n").await.unwrap();
            // The modem vanishes mid-answer.
            drop(far);
        });
        let err = client.command("AT+CSQ", T).await.unwrap_err();
        assert!(
            matches!(
                err,
                AtError::Closed {
                    payload_written: false,
                    ..
                }
            ),
            "{err:?}"
        );
        modem.await.unwrap();
        assert!(urcs.recv().await.is_none());
        assert!(client.is_closed());
        assert!(matches!(
            client.command("AT", T).await,
            Err(AtError::Closed { .. })
        ));
    }
}
