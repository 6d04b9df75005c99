//! The pure digester: bytes in, `Urc | Response | Prompt | Incomplete` out. No I/O, no clock.
//!
//! It frames lines ended by CR, LF or CRLF (blank lines are noise), recognises the `> ` prompt of
//! TS 27.005 §3.5.1 (which has no line end), the final result codes of TS 27.007 §5.7 / §9.2 and
//! TS 27.005 §3.2.5, drops the echo of the command in flight, and decides for every other line
//! whether it answers that command or is an unsolicited result code. The order of checks per line
//! is: echo → final result → the command's own information line → known URC → anything else
//! (which belongs to a command in flight, or is an unknown URC when none is).

use super::error::{CmeError, CmsError};

/// How a command ended (its final result code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Final {
    /// `OK`.
    Ok,
    /// `CONNECT` (TS 27.007 §5.7.1): final for our purposes, we never enter data mode.
    Connect,
    /// `ERROR`, and the vendor spellings that mean it (`COMMAND NOT SUPPORT`, `TOO MANY PARAMETERS`).
    Error,
    /// `+CME ERROR: <err>`.
    Cme(CmeError),
    /// `+CMS ERROR: <err>`.
    Cms(CmsError),
    /// `NO CARRIER`.
    NoCarrier,
    /// `BUSY`.
    Busy,
    /// `NO ANSWER`.
    NoAnswer,
    /// `NO DIALTONE`.
    NoDialtone,
}

/// The complete answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The information lines that belonged to the command, in order, without line ends.
    pub lines: Vec<String>,
    /// The final result code.
    pub result: Final,
}

/// An unsolicited result code as framed: its line and, for a two-line URC, its PDU line. What
/// it means is decided once, by [`super::urc::Urc::classify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrcLine {
    /// The URC line itself (e.g. `+CDS: 25`, `^RSSI:14`, `RING`).
    pub line: String,
    /// The second line of a two-line URC (`+CDS: <len>` / `+CMT: ,<len>` in PDU mode): the PDU
    /// in hex, as the modem sent it.
    pub pdu: Option<String>,
}

/// One step of the digester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Digested {
    /// An unsolicited result code.
    Urc(UrcLine),
    /// The command in flight is finished.
    Response(Response),
    /// The `> ` prompt: the command in flight now expects its payload.
    Prompt,
    /// The command in flight is finished without an answer: its information lines outgrew
    /// [`MAX_ANSWER_LINES`] or [`MAX_ANSWER_BYTES`] and were dropped. The modem is not answering
    /// like a modem (a hostile device, or one stuck in a loop); its owner should re-sync.
    Overflow {
        /// Lines held when the limit was hit.
        lines: usize,
        /// Bytes in those lines.
        bytes: usize,
    },
    /// Nothing complete in the buffer yet: feed more bytes.
    Incomplete,
}

/// The command the digester is matching answers against.
#[derive(Debug)]
struct InFlight {
    /// The command line as written, for echo detection.
    text: String,
    /// `+CSQ` for `AT+CSQ`: information lines with this prefix are the command's.
    prefix: Option<String>,
    /// Whether a `> ` prompt is possible now (only for commands that take a payload).
    expect_prompt: bool,
    /// The payload after the prompt, so its echo is dropped rather than taken for an answer.
    payload_echo: Option<String>,
    /// Information lines collected so far.
    lines: Vec<String>,
    /// Their total length, bounded by [`MAX_ANSWER_BYTES`].
    bytes: usize,
}

/// URCs recognised by their exact text.
const URC_WORDS: &[&str] = &[
    "RING",
    "RDY",
    "SMS Ready",
    "Call Ready",
    "PB DONE",
    "NORMAL POWER DOWN",
    "POWERED DOWN",
    "UNDER-VOLTAGE POWER DOWN",
    "UNDER-VOLTAGE WARNNING",
    "OVER-VOLTAGE POWER DOWN",
    "OVER-VOLTAGE WARNNING",
];

/// URCs recognised by their prefix (up to and including the colon). `^...:` lines (Huawei's
/// `^RSSI:`, `^MODE:`, `^BOOT:`...) are all URCs unless the command in flight has that prefix.
const URC_PREFIXES: &[&str] = &[
    "+CDS", "+CDSI", "+CMTI", "+CMT", "+CBM", "+CBMI", "+CREG", "+CGREG", "+CEREG", "+C5GREG",
    "+CPIN", "+CFUN", "+CUSD", "+CRING", "+CLIP", "+CIEV", "+CTZV", "+CTZE", "+CGEV", "+QIND",
    "+QUSIM", "+PACSP", "+STIN",
];

/// The part of a line before its colon, if it has the `+NAME:` / `^NAME:` shape.
fn line_prefix(line: &str) -> Option<&str> {
    let first = *line.as_bytes().first()?;
    if !matches!(first, b'+' | b'^' | b'%' | b'*' | b'$' | b'#') {
        return None;
    }
    let colon = line.find(':')?;
    Some(line[..colon].trim_end())
}

/// The prefix answers to `command` carry: `AT+CSQ` → `+CSQ`, `AT^SYSINFO` → `^SYSINFO`.
fn command_prefix(command: &str) -> Option<String> {
    let body = command.get(2..)?;
    let first = *body.as_bytes().first()?;
    if !matches!(first, b'+' | b'^' | b'%' | b'*' | b'$' | b'#') {
        return None;
    }
    let end = body.find(['=', '?']).unwrap_or(body.len());
    Some(body[..end].to_ascii_uppercase())
}

fn parse_final(line: &str) -> Option<Final> {
    let code = |rest: &str| rest.trim().parse::<u16>().ok();
    Some(match line {
        "OK" => Final::Ok,
        "ERROR" | "COMMAND NOT SUPPORT" | "TOO MANY PARAMETERS" => Final::Error,
        "NO CARRIER" => Final::NoCarrier,
        "BUSY" => Final::Busy,
        "NO ANSWER" => Final::NoAnswer,
        "NO DIALTONE" | "NO DIAL TONE" => Final::NoDialtone,
        _ if line == "CONNECT" || line.starts_with("CONNECT ") => Final::Connect,
        _ => {
            if let Some(rest) = line.strip_prefix("+CME ERROR:") {
                Final::Cme(match code(rest) {
                    Some(c) => CmeError::from_code(c),
                    None => CmeError::from_text(rest),
                })
            } else if let Some(rest) = line.strip_prefix("+CMS ERROR:") {
                Final::Cms(match code(rest) {
                    Some(c) => CmsError::from_code(c),
                    None => CmsError::Unknown,
                })
            } else {
                return None;
            }
        }
    })
}

fn is_known_urc(line: &str) -> bool {
    if URC_WORDS.contains(&line) {
        return true;
    }
    match line_prefix(line) {
        Some(p) if p.starts_with('^') => true,
        Some(p) => URC_PREFIXES.contains(&p),
        None => false,
    }
}

/// Whether `line` opens a two-line URC whose second line is a PDU (PDU-mode `+CMT`/`+CDS`).
fn opens_two_line_urc(line: &str) -> bool {
    match line_prefix(line) {
        Some("+CDS") => matches!(super::cmd::parse_cds_len(line), Ok(Some(_))),
        Some("+CMT") => matches!(super::cmd::parse_cmt_len(line), Ok(Some(_))),
        _ => false,
    }
}

fn is_hex_line(line: &str) -> bool {
    !line.is_empty() && line.len() % 2 == 0 && line.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The framer and router. Feed it bytes with [`Digester::feed`], then call
/// [`Digester::digest`] until it says [`Digested::Incomplete`].
#[derive(Debug, Default)]
pub struct Digester {
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    /// The one command in flight; `None` when idle.
    command: Option<InFlight>,
    /// A two-line URC's first line, waiting for its PDU line.
    pending_urc: Option<String>,
    /// The bytes since the last line end outgrew [`MAX_LINE`] and were dropped; the rest of that
    /// line is dropped too when its end arrives, so its tail is never read as a line of its own.
    overlong: bool,
}

/// The longest line kept. The longest real AT lines are PDU lines of `+CMGL`/`+CMGR`/`+CDS`
/// (under 600 hex characters); a modem that never ends a line (stuck in a binary mode, a wrong
/// baud rate, a hostile device) must not make the buffer, and the rescan for a line end on every
/// read, grow without bound.
pub const MAX_LINE: usize = 4096;

/// The most information lines one command's answer may hold. Every line that arrives while a
/// command is in flight and is not a URC is kept until the final result, so without a bound a
/// device that streams lines during `AT+CMGS` grows the daemon by megabytes a second. The longest
/// answers simgate reads are a few lines (`AT+CMGR`: two; `AT+CLAC` on a Quectel: about 300).
pub const MAX_ANSWER_LINES: usize = 1024;

/// The most bytes (without line ends) one command's answer may hold; see [`MAX_ANSWER_LINES`].
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Digester {
    /// An idle digester with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts matching answers against `command` (the line as written, without CR).
    /// `expect_prompt` is true for commands that take a payload after `> ` (`AT+CMGS`).
    pub fn begin(&mut self, command: &str, expect_prompt: bool) {
        self.command = Some(InFlight {
            text: command.trim().to_string(),
            prefix: command_prefix(command.trim()),
            expect_prompt,
            payload_echo: None,
            lines: Vec::new(),
            bytes: 0,
        });
    }

    /// Records the payload just written after a prompt, so an echo of it is dropped.
    pub fn payload_sent(&mut self, payload: &str) {
        if let Some(c) = &mut self.command {
            c.expect_prompt = false;
            c.payload_echo = Some(payload.trim_end_matches('\x1a').to_string());
        }
    }

    /// Forgets the command in flight (it timed out); late answers are then dropped or routed as
    /// URCs.
    pub fn abandon(&mut self) {
        self.command = None;
    }

    /// Whether a command is in flight.
    pub fn in_flight(&self) -> bool {
        self.command.is_some()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete item (a partial line).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next complete line out of the buffer (trimmed, possibly empty).
    fn take_line(&mut self) -> Option<String> {
        let Some(end) = self.buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
            if self.buf.len() > MAX_LINE {
                tracing::warn!(
                    bytes = self.buf.len(),
                    "the modem sent a line longer than {MAX_LINE} bytes; dropping it"
                );
                self.buf.clear();
                self.overlong = true;
            }
            return None;
        };
        let raw: Vec<u8> = self.buf.drain(..=end).collect();
        if std::mem::take(&mut self.overlong) {
            // The end of the dropped line: an empty line, which every caller skips.
            return Some(String::new());
        }
        let text = String::from_utf8_lossy(&raw[..end]);
        // NUL, other control bytes and invalid UTF-8 are line noise (seen while a modem boots or
        // after a baud mismatch), never part of an answer.
        let cleaned: String = text
            .chars()
            .filter(|c| (!c.is_control() || *c == '\t') && *c != char::REPLACEMENT_CHARACTER)
            .collect();
        Some(cleaned.trim().to_string())
    }

    /// The next complete item, or `Incomplete`.
    pub fn digest(&mut self) -> Digested {
        loop {
            if self.pending_urc.is_some() {
                let Some(line) = self.take_line() else {
                    return Digested::Incomplete;
                };
                if line.is_empty() {
                    continue;
                }
                let header = self.pending_urc.take().unwrap_or_default();
                if is_hex_line(&line) {
                    return Digested::Urc(UrcLine {
                        line: header,
                        pdu: Some(line),
                    });
                }
                // Not a PDU after all: deliver the header alone and read this line afresh.
                let mut rest = line.into_bytes();
                rest.push(b'\n');
                rest.extend_from_slice(&self.buf);
                self.buf = rest;
                return Digested::Urc(UrcLine {
                    line: header,
                    pdu: None,
                });
            }

            if self.command.as_ref().is_some_and(|c| c.expect_prompt) {
                let skip = self
                    .buf
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if self.buf.get(skip) == Some(&b'>') {
                    let mut end = skip + 1;
                    if self.buf.get(end) == Some(&b' ') {
                        end += 1;
                    }
                    self.buf.drain(..end);
                    if let Some(c) = &mut self.command {
                        c.expect_prompt = false;
                    }
                    return Digested::Prompt;
                }
            }

            let Some(line) = self.take_line() else {
                return Digested::Incomplete;
            };
            if line.is_empty() {
                continue;
            }
            if let Some(item) = self.route(line) {
                return item;
            }
        }
    }

    /// Decides where one non-empty line goes; `None` when it is dropped or kept for later.
    fn route(&mut self, line: String) -> Option<Digested> {
        if let Some(c) = &self.command {
            if line.eq_ignore_ascii_case(&c.text) {
                return None;
            }
            if c.payload_echo
                .as_deref()
                .is_some_and(|p| line.trim_end_matches('\x1a').eq_ignore_ascii_case(p))
            {
                return None;
            }
        }
        if let Some(result) = parse_final(&line) {
            return self.command.take().map(|c| {
                Digested::Response(Response {
                    lines: c.lines,
                    result,
                })
            });
        }
        let prefix = line_prefix(&line).map(str::to_ascii_uppercase);
        if let Some(c) = &self.command
            && prefix.is_some()
            && prefix == c.prefix
        {
            return self.keep(line);
        }
        if is_known_urc(&line) {
            if opens_two_line_urc(&line) {
                self.pending_urc = Some(line);
                return None;
            }
            return Some(Digested::Urc(UrcLine { line, pdu: None }));
        }
        match &self.command {
            Some(_) => self.keep(line),
            None => Some(Digested::Urc(UrcLine { line, pdu: None })),
        }
    }

    /// Adds `line` to the answer of the command in flight, or ends that command with
    /// [`Digested::Overflow`] when the answer would outgrow its bounds.
    fn keep(&mut self, line: String) -> Option<Digested> {
        let c = self.command.as_mut()?;
        if c.lines.len() < MAX_ANSWER_LINES && c.bytes + line.len() <= MAX_ANSWER_BYTES {
            c.bytes += line.len();
            c.lines.push(line);
            return None;
        }
        let (lines, bytes) = (c.lines.len(), c.bytes);
        self.command = None;
        Some(Digested::Overflow { lines, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_of_the_payload_in_lower_case_is_dropped() {
        let mut d = Digester::new();
        d.begin("AT+CMGS=13", true);
        d.feed(b"\r\n> ");
        assert_eq!(d.digest(), Digested::Prompt);
        d.payload_sent("0011000B91AABBCCDDEEFF");
        d.feed(b"0011000b91aabbccddeeff\x1a\r\n\r\n+CMGS: 7\r\n\r\nOK\r\n");
        assert_eq!(d.digest(), ok(&["+CMGS: 7"]));
    }

    #[test]
    fn an_endless_answer_ends_the_command_with_overflow() {
        let mut d = Digester::new();
        d.begin("AT+CMGS=20", true);
        let line = format!("{}\r\n", "7".repeat(2000));
        let mut fed = 0;
        let item = loop {
            d.feed(line.as_bytes());
            fed += 1;
            match d.digest() {
                Digested::Incomplete => assert!(fed < 100, "never bounded"),
                other => break other,
            }
        };
        // 32 lines of 2,000 bytes fit in 64 KiB; the 33rd ends the command.
        assert_eq!(
            item,
            Digested::Overflow {
                lines: 32,
                bytes: 64_000
            }
        );
        assert!(!d.in_flight());
        // What follows is no longer anybody's answer.
        d.feed(b"\r\nOK\r\n");
        assert_eq!(d.digest(), Digested::Incomplete);

        let mut d = Digester::new();
        d.begin("AT+CLAC", false);
        for i in 0..MAX_ANSWER_LINES {
            d.feed(format!("AT+X{i}\r\n").as_bytes());
            assert_eq!(d.digest(), Digested::Incomplete);
        }
        d.feed(b"AT+ONE_TOO_MANY\r\n");
        assert!(matches!(
            d.digest(),
            Digested::Overflow {
                lines: MAX_ANSWER_LINES,
                ..
            }
        ));
    }

    fn urc(line: &str) -> Digested {
        Digested::Urc(UrcLine {
            line: line.to_string(),
            pdu: None,
        })
    }

    fn urc2(line: &str, pdu: &str) -> Digested {
        Digested::Urc(UrcLine {
            line: line.to_string(),
            pdu: Some(pdu.to_string()),
        })
    }

    fn resp(lines: &[&str], result: Final) -> Digested {
        Digested::Response(Response {
            lines: lines.iter().map(|s| s.to_string()).collect(),
            result,
        })
    }

    fn ok(lines: &[&str]) -> Digested {
        resp(lines, Final::Ok)
    }

    /// Feeds `input` in chunks of every size from 1 to its length (and whole), with `command` in
    /// flight (if any), and checks the digested items are always `expect`.
    fn check(command: Option<(&str, bool)>, input: &[u8], expect: &[Digested]) {
        for chunk in (1..=input.len()).rev() {
            let mut d = Digester::new();
            if let Some((c, prompt)) = command {
                d.begin(c, prompt);
            }
            let mut got = Vec::new();
            for piece in input.chunks(chunk) {
                d.feed(piece);
                loop {
                    match d.digest() {
                        Digested::Incomplete => break,
                        item => got.push(item),
                    }
                }
            }
            assert_eq!(
                got,
                expect,
                "chunk size {chunk}, input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    const CDS_PDU: &str = "0006D60B911326880736F4111011719551401110117195714000";

    #[test]
    fn digests_real_modem_output() {
        // Echo on (before ATE0), CRLF.
        check(Some(("AT", false)), b"AT\r\r\nOK\r\n", &[ok(&[])]);
        // Echo on with bare CR line ends, as some firmware does.
        check(Some(("ATE0", false)), b"ATE0\rOK\r", &[ok(&[])]);
        // Bare LF.
        check(
            Some(("AT+CSQ", false)),
            b"\n+CSQ: 21,99\n\nOK\n",
            &[ok(&["+CSQ: 21,99"])],
        );
        // Boot garbage before the answer to the sync AT.
        check(Some(("AT", false)), b"\x00\xff\x00\r\nOK\r\n", &[ok(&[])]);
        // Unprefixed answers belong to the command.
        check(
            Some(("AT+CGSN", false)),
            b"\r\n867123456789012\r\n\r\nOK\r\n",
            &[ok(&["867123456789012"])],
        );
        check(
            Some(("AT+CGMI", false)),
            b"\r\nhuawei\r\n\r\nOK\r\n",
            &[ok(&["huawei"])],
        );
        // Huawei status lines arriving in the middle of an answer.
        check(
            Some(("AT+CGMR", false)),
            b"\r\n11.608.12.02.143\r\n\r\n^RSSI:14\r\n\r\n^MODE:5,4\r\n\r\nOK\r\n",
            &[urc("^RSSI:14"), urc("^MODE:5,4"), ok(&["11.608.12.02.143"])],
        );
        check(
            Some(("AT+CSQ", false)),
            b"\r\n^BOOT:12345678,0,0,0,72\r\n\r\n+CSQ: 14,99\r\n\r\nOK\r\n",
            &[urc("^BOOT:12345678,0,0,0,72"), ok(&["+CSQ: 14,99"])],
        );
        // A Huawei command answered with a ^ line is the command's.
        check(
            Some(("AT^SYSINFO", false)),
            b"\r\n^SYSINFO:2,3,0,5,1,,4\r\n\r\nOK\r\n",
            &[ok(&["^SYSINFO:2,3,0,5,1,,4"])],
        );
        // +CREG: to the query, +CREG: while another command runs is a URC.
        check(
            Some(("AT+CREG?", false)),
            b"\r\n+CREG: 0,1\r\n\r\nOK\r\n",
            &[ok(&["+CREG: 0,1"])],
        );
        check(
            Some(("AT+COPS?", false)),
            b"\r\n+CREG: 5\r\n\r\n+COPS: 0,0,\"Vodafone\",7\r\n\r\nOK\r\n",
            &[urc("+CREG: 5"), ok(&["+COPS: 0,0,\"Vodafone\",7"])],
        );
        // SIMCom boot noise with nothing in flight.
        check(
            None,
            b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nSMS Ready\r\n",
            &[
                urc("RDY"),
                urc("+CFUN: 1"),
                urc("+CPIN: READY"),
                urc("SMS Ready"),
            ],
        );
        // ...but +CPIN: is the answer when querying.
        check(
            Some(("AT+CPIN?", false)),
            b"\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n",
            &[ok(&["+CPIN: SIM PIN"])],
        );
        // Errors.
        check(
            Some(("AT+CPIN=\"0000\"", false)),
            b"\r\n+CME ERROR: 16\r\n",
            &[resp(&[], Final::Cme(CmeError::IncorrectPassword))],
        );
        check(
            Some(("AT+CPIN?", false)),
            b"\r\n+CME ERROR: SIM not inserted\r\n",
            &[resp(&[], Final::Cme(CmeError::SimNotInserted))],
        );
        check(
            Some(("AT+CNMI=2,1,0,1,0", false)),
            b"\r\nERROR\r\n",
            &[resp(&[], Final::Error)],
        );
        check(
            Some(("AT^CURC=0", false)),
            b"\r\nCOMMAND NOT SUPPORT\r\n",
            &[resp(&[], Final::Error)],
        );
        check(
            Some(("ATD123;", false)),
            b"\r\nNO CARRIER\r\n",
            &[resp(&[], Final::NoCarrier)],
        );
        check(
            Some(("ATD123;", false)),
            b"\r\nBUSY\r\n",
            &[resp(&[], Final::Busy)],
        );
        check(
            Some(("ATD123;", false)),
            b"\r\nNO ANSWER\r\n",
            &[resp(&[], Final::NoAnswer)],
        );
        check(
            Some(("ATD123;", false)),
            b"\r\nNO DIALTONE\r\n",
            &[resp(&[], Final::NoDialtone)],
        );
        check(
            Some(("ATD*99#", false)),
            b"\r\nCONNECT 150000000\r\n",
            &[resp(&[], Final::Connect)],
        );
    }

    #[test]
    fn digests_prompt_and_send() {
        check(Some(("AT+CMGS=23", true)), b"\r\n> ", &[Digested::Prompt]);
        // The echo of the command, then the prompt, in any chunking.
        check(
            Some(("AT+CMGS=23", true)),
            b"AT+CMGS=23\r\r\n> ",
            &[Digested::Prompt],
        );
        check(
            Some(("AT+CMGS=23", true)),
            b"\r\n+CMS ERROR: 304\r\n",
            &[resp(&[], Final::Cms(CmsError::InvalidPduModeParameter))],
        );
        // After the payload: the answer, with a status report arriving in between.
        let mut d = Digester::new();
        d.begin("AT+CMGS=23", true);
        d.feed(b"\r\n> ");
        assert_eq!(d.digest(), Digested::Prompt);
        d.payload_sent("0011000B911326880736F40000A70AE8329BFD4697D9EC37\x1a");
        let tail = format!(
            "0011000B911326880736F40000A70AE8329BFD4697D9EC37\x1a\r\n\r\n+CDS: 25\r\n{CDS_PDU}\r\n\r\n+CMGS: 12\r\n\r\nOK\r\n"
        );
        d.feed(tail.as_bytes());
        assert_eq!(d.digest(), urc2("+CDS: 25", CDS_PDU));
        assert_eq!(d.digest(), ok(&["+CMGS: 12"]));
        assert_eq!(d.digest(), Digested::Incomplete);
        assert!(!d.in_flight());
        // A `>` is only a prompt when one is expected.
        check(None, b"> hi\r\n", &[urc("> hi")]);
    }

    #[test]
    fn digests_two_line_urcs() {
        let input = format!("\r\n+CDS: 25\r\n{CDS_PDU}\r\n");
        check(None, input.as_bytes(), &[urc2("+CDS: 25", CDS_PDU)]);
        let input = format!("\r\n+CDS: 25\r\n{CDS_PDU}\r\n\r\n+CSQ: 20,99\r\n\r\nOK\r\n");
        check(
            Some(("AT+CSQ", false)),
            input.as_bytes(),
            &[urc2("+CDS: 25", CDS_PDU), ok(&["+CSQ: 20,99"])],
        );
        check(
            None,
            b"+CMT: ,24\r\n07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07\r\n",
            &[urc2(
                "+CMT: ,24",
                "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07",
            )],
        );
        check(
            None,
            b"+CMTI: \"SM\",3\r\n+CDSI: \"SR\",1\r\n",
            &[urc("+CMTI: \"SM\",3"), urc("+CDSI: \"SR\",1")],
        );
        // Text-mode +CDS has no PDU line.
        check(
            None,
            b"+CDS: 6,12,\"+15551234\",145,\"x\",\"y\",0\r\nRING\r\n",
            &[
                urc("+CDS: 6,12,\"+15551234\",145,\"x\",\"y\",0"),
                urc("RING"),
            ],
        );
        // A header whose PDU never comes is delivered alone, and the next line is kept.
        check(
            Some(("AT", false)),
            b"+CDS: 25\r\nOK\r\n",
            &[urc("+CDS: 25"), ok(&[])],
        );
    }

    #[test]
    fn idle_noise_and_late_answers() {
        // A final result with nothing in flight (a late answer after a timeout) is dropped.
        check(None, b"\r\nOK\r\n\r\nERROR\r\n", &[]);
        // An unknown line with nothing in flight surfaces as a URC, never as an answer.
        check(None, b"\r\n+CMGS: 7\r\n", &[urc("+CMGS: 7")]);
        let mut d = Digester::new();
        d.begin("AT+CSQ", false);
        d.feed(b"\r\n+CSQ: 1,2\r\n");
        assert_eq!(d.digest(), Digested::Incomplete);
        d.abandon();
        d.feed(b"OK\r\n");
        assert_eq!(d.digest(), Digested::Incomplete);
        assert_eq!(d.pending_bytes(), 0);
    }

    /// Drives a whole session (several commands, URCs between and inside answers) with the
    /// input cut at arbitrary points; the items must not depend on where the cuts fall.
    fn session(cuts: &[usize]) -> Vec<Digested> {
        let script: &[(Option<(&str, bool)>, &str)] = &[
            (Some(("AT", false)), "AT\r\r\nOK\r\n"),
            (
                Some(("AT+CGMR", false)),
                "\r\n^RSSI:14\r\n\r\n11.608\r\n\r\n^MODE:5,4\r\n\r\nOK\r\n",
            ),
            (Some(("AT+CMGS=23", true)), "\r\n> "),
            (
                None,
                "\r\n+CDS: 25\r\n0006D60B911326880736F4111011719551401110117195714000\r\n\r\n+CMGS: 9\r\n\r\nOK\r\n",
            ),
            (Some(("AT+CREG?", false)), "\n+CREG: 0,1\n\nOK\n"),
            (None, "\rRING\r+CMTI: \"SM\",2\r"),
        ];
        let mut d = Digester::new();
        let mut got = Vec::new();
        for (command, input) in script {
            if let Some((c, prompt)) = command {
                d.begin(c, *prompt);
            }
            let bytes = input.as_bytes();
            let mut start = 0;
            for &cut in cuts.iter().filter(|&&c| c < bytes.len()) {
                if cut > start {
                    d.feed(&bytes[start..cut]);
                    start = cut;
                    while let item @ (Digested::Urc(_) | Digested::Response(_) | Digested::Prompt) =
                        d.digest()
                    {
                        got.push(item);
                    }
                }
            }
            d.feed(&bytes[start..]);
            loop {
                match d.digest() {
                    Digested::Incomplete => break,
                    item => got.push(item),
                }
            }
        }
        got
    }

    proptest::proptest! {
        #[test]
        fn cuts_do_not_matter(mut cuts in proptest::collection::vec(0usize..120, 0..12)) {
            cuts.sort_unstable();
            cuts.dedup();
            let whole = session(&[]);
            proptest::prop_assert_eq!(whole.len(), 10);
            proptest::prop_assert_eq!(session(&cuts), whole);
        }
    }
}
