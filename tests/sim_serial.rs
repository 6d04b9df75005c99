//! `simgate sim` over a real pty, driven by a raw tokio-serial client that asserts on bytes:
//! echo, PDU and text-mode sends, the log, status reports, profiles and every fault option.

mod support;

use std::time::{Duration, Instant};

use simgate::pdu::{SubmitOptions, encode_submit};
use support::SimProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

/// How long a test waits for an answer that must come.
const ANSWER: Duration = Duration::from_secs(5);

/// A raw serial session: writes bytes, collects everything read.
struct Client {
    port: tokio_serial::SerialStream,
    /// Everything received and not yet consumed by `until`.
    pending: Vec<u8>,
}

impl Client {
    fn open(sim: &SimProcess) -> Client {
        let path = sim.link.to_str().expect("utf-8 link path");
        let port = tokio_serial::new(path, 115_200)
            .open_native_async()
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        Client {
            port,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).await.expect("write to pty");
    }

    /// Reads until `needle` appears; returns everything up to and including it.
    async fn until(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = find(&self.pending, needle.as_bytes()) {
                let end = pos + needle.len();
                let taken: Vec<u8> = self.pending.drain(..end).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no {needle:?} within {timeout:?}; got {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(left, self.port.read(&mut buf)).await {
                Ok(Ok(0)) => panic!("pty closed while waiting for {needle:?}"),
                Ok(Ok(n)) => self.pending.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => panic!("read failed while waiting for {needle:?}: {e}"),
                Err(_) => {}
            }
        }
    }

    /// Sends a command line and returns the answer up to its final result code.
    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r").as_bytes()).await;
        self.final_result().await
    }

    async fn final_result(&mut self) -> String {
        let deadline = Instant::now() + ANSWER;
        loop {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            for fin in ["\r\nOK\r\n", "\r\nERROR\r\n"] {
                if let Some(pos) = text.find(fin) {
                    return self.take(pos + fin.len());
                }
            }
            for prefix in ["\r\n+CME ERROR: ", "\r\n+CMS ERROR: "] {
                if let Some(pos) = text.find(prefix)
                    && let Some(end) = text[pos + 2..].find("\r\n")
                {
                    return self.take(pos + 2 + end + 2);
                }
            }
            if Instant::now() > deadline {
                panic!("no final result; got {text:?}");
            }
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), self.port.read(&mut buf)).await
            {
                assert!(n > 0, "pty closed while waiting for a final result");
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }

    fn take(&mut self, n: usize) -> String {
        let taken: Vec<u8> = self.pending.drain(..n).collect();
        String::from_utf8_lossy(&taken).into_owned()
    }

    /// Collects whatever arrives within `window` (to prove that nothing does).
    async fn quiet_for(&mut self, window: Duration) -> String {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return self.take(self.pending.len());
            }
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(left, self.port.read(&mut buf)).await {
                if n == 0 {
                    return self.take(self.pending.len());
                }
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// Sends one PDU part with `AT+CMGS` and returns the final answer.
    async fn send_pdu(&mut self, tpdu_len: usize, hex: &str) -> String {
        self.send(format!("AT+CMGS={tpdu_len}\r").as_bytes()).await;
        self.until("> ", ANSWER).await;
        self.send(format!("{hex}\x1a").as_bytes()).await;
        self.final_result().await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parts(to: &str, text: &str, status_report: bool) -> Vec<(usize, String)> {
    let opts = SubmitOptions {
        status_report,
        ..SubmitOptions::default()
    };
    encode_submit(to, text, &opts, 42)
        .expect("encode")
        .iter()
        .map(|p| (p.tpdu_len, p.to_hex()))
        .collect()
}

/// Echo off, numeric errors: the usual client setup.
async fn quiet_client(sim: &SimProcess) -> Client {
    let mut c = Client::open(sim);
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert_eq!(c.command("AT+CMEE=1").await, "\r\nOK\r\n");
    c
}

#[tokio::test]
async fn echo_is_on_at_start_and_ate0_turns_it_off() {
    let sim = SimProcess::start(&[]);
    let mut c = Client::open(&sim);
    assert_eq!(c.command("AT").await, "AT\r\r\nOK\r\n");
    assert_eq!(c.command("ATE0").await, "ATE0\r\r\nOK\r\n");
    assert_eq!(c.command("AT").await, "\r\nOK\r\n");
    assert_eq!(c.command("AT+CGMI").await, "\r\nsimgate\r\n\r\nOK\r\n");
    assert_eq!(c.command("ate1").await, "\r\nOK\r\n");
    assert_eq!(
        c.command("at+cmgf?").await,
        "at+cmgf?\r\r\n+CMGF: 0\r\n\r\nOK\r\n"
    );
}

#[tokio::test]
async fn identity_registration_and_several_commands_on_one_line() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CMGF=0;+CNMI=2,1,0,1,0").await, "\r\nOK\r\n");
    assert_eq!(
        c.command("AT+CNMI?").await,
        "\r\n+CNMI: 2,1,0,1,0\r\n\r\nOK\r\n"
    );
    assert_eq!(
        c.command("AT+CPIN?").await,
        "\r\n+CPIN: READY\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+CREG?").await, "\r\n+CREG: 0,1\r\n\r\nOK\r\n");
    assert_eq!(
        c.command("AT+COPS?").await,
        "\r\n+COPS: 0,0,\"Simgate Mobile\",7\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+CSQ").await, "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
    assert_eq!(
        c.command("AT+CIMI").await,
        "\r\n001010123456789\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+NOSUCH").await, "\r\nERROR\r\n");
    assert_eq!(c.command("AT+CMGF=7").await, "\r\n+CME ERROR: 50\r\n");
    assert_eq!(c.command("AT+CMEE=2").await, "\r\nOK\r\n");
    assert_eq!(
        c.command("AT+CMGF=7").await,
        "\r\n+CME ERROR: Incorrect parameters\r\n"
    );
    assert_eq!(c.command("AT+CMEE=0").await, "\r\nOK\r\n");
    assert_eq!(c.command("AT+CMGF=7").await, "\r\nERROR\r\n");
}

#[tokio::test]
async fn a_pdu_send_is_answered_with_a_reference_and_logged() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "Your code is 123456", false);
    let a = c.send_pdu(p[0].0, &p[0].1).await;
    assert!(a.starts_with("\r\n+CMGS: "), "{a:?}");
    assert!(a.ends_with("\r\n\r\nOK\r\n"), "{a:?}");
    let b = c.send_pdu(p[0].0, &p[0].1).await;
    let mr = |s: &str| -> u8 { s[9..s.find("\r\n\r\nOK").unwrap()].parse().unwrap() };
    assert_eq!(mr(&b), mr(&a).wrapping_add(1), "TP-MR rotates");
    let lines = sim.wait_for_log_lines(2, ANSWER);
    assert_eq!(lines[0]["to"], "+15551234567");
    assert_eq!(lines[0]["text"], "Your code is 123456");
    assert_eq!(lines[0]["parts"], 1);
    assert_eq!(lines[0]["pdu"], serde_json::json!([p[0].1]));
    assert!(lines[0]["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn bad_pdus_answer_cms_304_and_are_not_logged() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "hi", false);
    // Length given to AT+CMGS does not match the TPDU.
    assert_eq!(
        c.send_pdu(p[0].0 + 1, &p[0].1).await,
        "\r\n+CMS ERROR: 304\r\n"
    );
    // Not hex.
    assert_eq!(c.send_pdu(3, "00ZZ11").await, "\r\n+CMS ERROR: 304\r\n");
    // Hex of the right length but an SMS-DELIVER, not a SUBMIT.
    let deliver = "0004".to_string() + "0B915155214365F7" + "0000" + "62211221000000" + "00";
    let len = deliver.len() / 2 - 1;
    assert_eq!(c.send_pdu(len, &deliver).await, "\r\n+CMS ERROR: 304\r\n");
    // A good one afterwards still works, and only it is logged.
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
    let lines = sim.wait_for_log_lines(1, ANSWER);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["text"], "hi");
}

#[tokio::test]
async fn escape_at_the_prompt_cancels_the_send() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    c.send(b"AT+CMGS=20\r").await;
    assert_eq!(c.until("> ", ANSWER).await, "\r\n> ");
    c.send(b"0011\x1b").await;
    assert_eq!(c.final_result().await, "\r\nOK\r\n");
    assert_eq!(c.command("AT").await, "\r\nOK\r\n");
    assert!(sim.log_lines().is_empty());
}

#[tokio::test]
async fn a_three_part_message_is_logged_once_reassembled() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    let text: String = (0..400)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let p = parts("+4915112345678", &text, false);
    assert_eq!(p.len(), 3);
    for (i, (len, hex)) in p.iter().enumerate() {
        assert!(c.send_pdu(*len, hex).await.starts_with("\r\n+CMGS: "));
        if i < 2 {
            assert!(sim.log_lines().is_empty(), "logged before the last part");
        }
    }
    let lines = sim.wait_for_log_lines(1, ANSWER);
    assert_eq!(lines[0]["text"], text.as_str());
    assert_eq!(lines[0]["parts"], 3);
    assert_eq!(lines[0]["to"], "+4915112345678");
    let pdus: Vec<&str> = lines[0]["pdu"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(pdus, p.iter().map(|x| x.1.as_str()).collect::<Vec<_>>());
}

#[tokio::test]
async fn text_mode_sends_in_gsm_and_ucs2_are_logged_without_pdus() {
    let sim = SimProcess::start(&[]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CMGF=1").await, "\r\nOK\r\n");
    c.send(b"AT+CMGS=\"+15557654321\"\r").await;
    c.until("> ", ANSWER).await;
    c.send(b"plain text\x1a").await;
    assert!(c.final_result().await.starts_with("\r\n+CMGS: "));
    assert_eq!(c.command("AT+CSCS=\"UCS2\"").await, "\r\nOK\r\n");
    let hex16 = |s: &str| {
        s.encode_utf16()
            .map(|u| format!("{u:04X}"))
            .collect::<String>()
    };
    c.send(format!("AT+CMGS=\"{}\"\r", hex16("+15557654321")).as_bytes())
        .await;
    c.until("> ", ANSWER).await;
    c.send(format!("{}\x1a", hex16("Grüße ✓")).as_bytes()).await;
    assert!(c.final_result().await.starts_with("\r\n+CMGS: "));
    let lines = sim.wait_for_log_lines(2, ANSWER);
    assert_eq!(lines[0]["text"], "plain text");
    assert_eq!(lines[0]["pdu"], serde_json::json!([]));
    assert_eq!(lines[1]["to"], "+15557654321");
    assert_eq!(lines[1]["text"], "Grüße ✓");
}

#[tokio::test]
async fn a_status_report_arrives_when_requested_and_enabled() {
    let sim = SimProcess::start(&["--report-delay", "0.2"]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CNMI=2,1,0,1,0").await, "\r\nOK\r\n");
    let p = parts("+15551234567", "report me", true);
    let a = c.send_pdu(p[0].0, &p[0].1).await;
    let mr: u8 = a[9..a.find("\r\n\r\nOK").unwrap()].parse().unwrap();
    let urc = c.until("\r\n", ANSWER).await + &c.until("\r\n", ANSWER).await;
    let urc = urc + &c.until("\r\n", ANSWER).await;
    let lines: Vec<&str> = urc.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("+CDS: "), "{urc:?}");
    let len: usize = lines[0][6..].parse().unwrap();
    let pdu = hex::decode(lines[1]).unwrap();
    assert_eq!(
        pdu.len(),
        len + 1,
        "SMSC octet plus the announced TPDU length"
    );
    match simgate::pdu::decode(&pdu).unwrap() {
        simgate::pdu::Pdu::StatusReport(sr) => {
            assert_eq!(sr.message_reference, mr);
            assert_eq!(sr.recipient.value, "15551234567");
            assert_eq!(sr.status, 0);
        }
        other => panic!("not a status report: {other:?}"),
    }
    // Without <ds>=1 no report comes.
    assert_eq!(c.command("AT+CNMI=2,1,0,0,0").await, "\r\nOK\r\n");
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
    assert_eq!(c.quiet_for(Duration::from_millis(800)).await, "");
}

#[tokio::test]
async fn report_status_chooses_tp_st() {
    let sim = SimProcess::start(&["--report-delay", "0", "--report-status", "70"]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CNMI=2,1,0,1,0").await, "\r\nOK\r\n");
    let p = parts("+15551234567", "x", true);
    c.send_pdu(p[0].0, &p[0].1).await;
    c.until("+CDS: ", ANSWER).await;
    c.until("\r\n", ANSWER).await;
    let hex_line = c.until("\r\n", ANSWER).await;
    let pdu = hex::decode(hex_line.trim()).unwrap();
    assert_eq!(*pdu.last().unwrap(), 70);
}

#[tokio::test]
async fn send_delay_holds_the_answer_back() {
    let sim = SimProcess::start(&["--send-delay", "0.6"]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "slow", false);
    let start = Instant::now();
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
    assert!(start.elapsed() >= Duration::from_millis(600));
}

#[tokio::test]
async fn error_rate_one_fails_every_send_temporarily() {
    let sim = SimProcess::start(&["--error-rate", "1", "--seed", "7"]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "x", false);
    for _ in 0..4 {
        let a = c.send_pdu(p[0].0, &p[0].1).await;
        assert!(
            a == "\r\n+CMS ERROR: 38\r\n" || a == "\r\n+CMS ERROR: 42\r\n",
            "{a:?}"
        );
    }
    assert!(sim.log_lines().is_empty());
}

#[tokio::test]
async fn error_rate_is_repeatable_with_a_seed() {
    async fn outcomes(seed: &str) -> Vec<bool> {
        let sim = SimProcess::start(&["--error-rate", "0.5", "--seed", seed]);
        let mut c = quiet_client(&sim).await;
        let p = parts("+15551234567", "x", false);
        let mut v = Vec::new();
        for _ in 0..12 {
            v.push(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
        }
        v
    }
    let a = outcomes("99").await;
    assert_eq!(a, outcomes("99").await);
    assert!(a.contains(&true) && a.contains(&false), "{a:?}");
}

#[tokio::test]
async fn rejected_prefixes_fail_permanently() {
    let sim = SimProcess::start(&["--reject", "+1555", "--reject", "4477"]);
    let mut c = quiet_client(&sim).await;
    for to in ["+15551234567", "+447700900123"] {
        let p = parts(to, "x", false);
        assert_eq!(c.send_pdu(p[0].0, &p[0].1).await, "\r\n+CMS ERROR: 1\r\n");
    }
    let p = parts("+4915112345678", "x", false);
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
}

#[tokio::test]
async fn no_network_means_searching_and_cms_331() {
    let sim = SimProcess::start(&["--no-network"]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CREG?").await, "\r\n+CREG: 0,2\r\n\r\nOK\r\n");
    assert_eq!(c.command("AT+COPS?").await, "\r\n+COPS: 0\r\n\r\nOK\r\n");
    let p = parts("+15551234567", "x", false);
    assert_eq!(c.send_pdu(p[0].0, &p[0].1).await, "\r\n+CMS ERROR: 331\r\n");
}

#[tokio::test]
async fn network_after_registers_later_with_a_creg_urc() {
    let sim = SimProcess::start(&["--network-after", "2"]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(c.command("AT+CREG=1").await, "\r\nOK\r\n");
    assert_eq!(c.command("AT+CREG?").await, "\r\n+CREG: 1,2\r\n\r\nOK\r\n");
    assert_eq!(
        c.until("\r\n+CREG: 1\r\n", ANSWER).await,
        "\r\n+CREG: 1\r\n"
    );
    assert_eq!(c.command("AT+CREG?").await, "\r\n+CREG: 1,1\r\n\r\nOK\r\n");
}

#[tokio::test]
async fn pin_locks_the_sim_and_counts_wrong_attempts() {
    let sim = SimProcess::start(&["--pin", "4321"]);
    let mut c = quiet_client(&sim).await;
    assert_eq!(
        c.command("AT+CPIN?").await,
        "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+CIMI").await, "\r\n+CME ERROR: 11\r\n");
    assert_eq!(
        c.command("AT+CPIN=\"0000\"").await,
        "\r\n+CME ERROR: 16\r\n"
    );
    assert_eq!(c.command("AT+CPIN=\"4321\"").await, "\r\nOK\r\n");
    assert_eq!(
        c.command("AT+CPIN?").await,
        "\r\n+CPIN: READY\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+CREG?").await, "\r\n+CREG: 0,1\r\n\r\nOK\r\n");
    let deadline = Instant::now() + ANSWER;
    while !sim.stderr_text().contains("sim: pin attempt 1 rejected") {
        assert!(Instant::now() < deadline, "stderr: {}", sim.stderr_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sim.stderr_text().contains("pin attempt 2"));
}

#[tokio::test]
async fn three_wrong_pins_block_the_sim_until_the_puk() {
    let sim = SimProcess::start(&["--pin", "4321"]);
    let mut c = quiet_client(&sim).await;
    for _ in 0..3 {
        assert_eq!(
            c.command("AT+CPIN=\"1111\"").await,
            "\r\n+CME ERROR: 16\r\n"
        );
    }
    assert_eq!(
        c.command("AT+CPIN?").await,
        "\r\n+CPIN: SIM PUK\r\n\r\nOK\r\n"
    );
    assert_eq!(
        c.command("AT+CPIN=\"4321\"").await,
        "\r\n+CME ERROR: 12\r\n"
    );
    assert_eq!(
        c.command("AT+CPIN=\"12345678\",\"9999\"").await,
        "\r\nOK\r\n"
    );
    assert_eq!(
        c.command("AT+CPIN?").await,
        "\r\n+CPIN: READY\r\n\r\nOK\r\n"
    );
}

#[tokio::test]
async fn hang_after_stops_answering_and_hang_for_ends_it() {
    let sim = SimProcess::start(&["--hang-after", "3", "--hang-for", "1"]);
    let mut c = Client::open(&sim);
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert_eq!(c.command("AT").await, "\r\nOK\r\n");
    assert_eq!(c.command("AT").await, "\r\nOK\r\n");
    let hung_at = Instant::now();
    c.send(b"AT\r").await;
    assert_eq!(c.quiet_for(Duration::from_millis(500)).await, "");
    // Poll until the hang ends; it must not end before --hang-for has passed.
    let deadline = Instant::now() + ANSWER;
    loop {
        c.send(b"AT\r").await;
        let got = c.quiet_for(Duration::from_millis(250)).await;
        if got.contains("OK") {
            assert_eq!(got, "\r\nOK\r\n");
            break;
        }
        assert_eq!(got, "", "only silence or OK while hung");
        assert!(Instant::now() < deadline, "the hang never ended");
    }
    assert!(hung_at.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn hang_without_hang_for_lasts() {
    let sim = SimProcess::start(&["--hang-after", "1"]);
    let mut c = Client::open(&sim);
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    for _ in 0..3 {
        c.send(b"AT\r").await;
        assert_eq!(c.quiet_for(Duration::from_millis(400)).await, "");
    }
}

#[tokio::test]
async fn unplug_after_vanishes_mid_send_and_replug_brings_a_fresh_modem() {
    let sim = SimProcess::start(&["--unplug-after", "1", "--replug-after", "1"]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "first", false);
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
    let q = parts("+15551234567", "second", false);
    c.send(format!("AT+CMGS={}\r", q[0].0).as_bytes()).await;
    c.until("> ", ANSWER).await;
    c.send(format!("{}\x1a", q[0].1).as_bytes()).await;
    // The modem is gone: the link disappears and no answer comes.
    let deadline = Instant::now() + ANSWER;
    while sim.link.exists() {
        assert!(Instant::now() < deadline, "link still there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(c);
    // ... and comes back at the same path, rebooted (echo on again), without unplugging again.
    let deadline = Instant::now() + ANSWER;
    while !sim.link.exists() {
        assert!(Instant::now() < deadline, "link not re-created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = Client::open(&sim);
    assert_eq!(c.command("AT").await, "AT\r\r\nOK\r\n");
    let mut c2 = quiet_client_from(c).await;
    for _ in 0..2 {
        assert!(
            c2.send_pdu(q[0].0, &q[0].1)
                .await
                .starts_with("\r\n+CMGS: ")
        );
    }
    let lines = sim.wait_for_log_lines(3, ANSWER);
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["first", "second", "second"]);
    assert!(sim.stderr_text().contains("sim: unplugged"));
}

async fn quiet_client_from(mut c: Client) -> Client {
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert_eq!(c.command("AT+CMEE=1").await, "\r\nOK\r\n");
    c
}

#[tokio::test]
async fn unplug_without_replug_stays_gone() {
    let sim = SimProcess::start(&["--unplug-after", "0"]);
    let mut c = quiet_client(&sim).await;
    let p = parts("+15551234567", "x", false);
    c.send(format!("AT+CMGS={}\r", p[0].0).as_bytes()).await;
    c.until("> ", ANSWER).await;
    c.send(format!("{}\x1a", p[0].1).as_bytes()).await;
    let deadline = Instant::now() + ANSWER;
    while sim.link.exists() {
        assert!(Instant::now() < deadline, "link still there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The client's port is dead: a read ends (EOF or error) instead of waiting for an answer.
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(ANSWER, c.port.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!sim.link.exists());
    assert!(sim.log_lines().is_empty());
}

#[tokio::test]
async fn huawei_noise_appears_and_curc_0_mutes_it() {
    let sim = SimProcess::start(&["--profile", "huawei", "--seed", "3"]);
    let mut c = Client::open(&sim);
    // Noise may land anywhere, so only the endings of these answers are fixed.
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert!(c.command("AT+CGMI").await.contains("\r\nhuawei\r\n"));
    let mut noisy = c.quiet_for(Duration::from_millis(2500)).await;
    let mut between = false;
    for _ in 0..20 {
        let a = c.command("AT+CSQ").await;
        // Between the information line and the OK, as real E3372 sticks do.
        between |= a.contains("+CSQ: 21,99\r\n\r\n^");
        noisy += &a;
    }
    assert!(
        noisy.contains("\r\n^RSSI:")
            || noisy.contains("\r\n^MODE:")
            || noisy.contains("\r\n^BOOT:"),
        "{noisy:?}"
    );
    assert!(
        between,
        "no URC between an information line and OK: {noisy:?}"
    );
    assert!(c.command("AT^CURC=0").await.ends_with("\r\nOK\r\n"));
    let _ = c.quiet_for(Duration::from_millis(100)).await;
    for _ in 0..10 {
        assert_eq!(c.command("AT+CSQ").await, "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
    }
    assert_eq!(c.quiet_for(Duration::from_millis(2500)).await, "");
}

#[tokio::test]
async fn simcom_boots_with_its_lines_and_again_after_a_reset() {
    let sim = SimProcess::start(&["--profile", "simcom"]);
    let mut c = Client::open(&sim);
    c.until("SMS Ready\r\n", ANSWER).await;
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert_eq!(
        c.command("AT+CGMM").await,
        "\r\nSIMCOM_SIM800L\r\n\r\nOK\r\n"
    );
    assert_eq!(c.command("AT+CFUN=1,1").await, "\r\nOK\r\n");
    let boot = c.until("SMS Ready\r\n", ANSWER).await;
    assert_eq!(
        boot,
        "\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"
    );
    // The reset restored echo.
    assert_eq!(c.command("AT").await, "AT\r\r\nOK\r\n");
}

#[tokio::test]
async fn quectel_identifies_as_an_ec25() {
    let sim = SimProcess::start(&["--profile", "quectel"]);
    let mut c = Client::open(&sim);
    c.until("RDY", ANSWER).await;
    assert!(c.command("ATE0").await.ends_with("\r\nOK\r\n"));
    assert_eq!(
        c.command("ATI").await,
        "\r\nQuectel\r\n\r\nEC25\r\n\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n"
    );
}

#[tokio::test]
async fn sigterm_removes_the_link() {
    let mut sim = SimProcess::start(&[]);
    assert!(sim.terminate(ANSWER), "did not exit on SIGTERM");
    assert!(!sim.link.exists());
}

#[test]
fn json_startup_line_names_link_device_and_log() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("m");
    let log = dir.path().join("l.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--json", "--link"])
        .arg(&link)
        .arg("--log")
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON line");
    assert_eq!(v["link"], link.to_str().unwrap());
    assert_eq!(v["log"], log.to_str().unwrap());
    assert!(
        v["device"].as_str().unwrap().starts_with("/dev/pts/"),
        "{v}"
    );
    assert_eq!(v["profile"], "generic");
}

#[test]
fn help_documents_the_fault_semantics() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "+CMS ERROR: 331",
        "sim: pin attempt N rejected",
        "--replug-after",
        "+CDSI",
        "ESC at the `> ` prompt",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn the_port_can_be_reopened_after_a_client_closes_it() {
    // tokio-serial opens exclusively (TIOCEXCL) and clears that on close; the simulator's own
    // slave fd must not get in the way of the next open.
    let sim = SimProcess::start(&[]);
    for _ in 0..3 {
        let mut c = Client::open(&sim);
        assert!(c.command("AT").await.ends_with("\r\nOK\r\n"));
        drop(c);
    }
}

#[tokio::test]
async fn the_library_simulator_starts_and_stop_removes_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("modem");
    let log = dir.path().join("sent.jsonl");
    let sim = simgate::sim::Simulator::start(simgate::sim::SimOptions {
        link: link.clone(),
        log: Some(log.clone()),
        ..simgate::sim::SimOptions::default()
    })
    .await
    .expect("start");
    assert_eq!(sim.link(), link.as_path());
    assert!(std::fs::read_link(&link).unwrap().starts_with("/dev/pts/"));
    let port = tokio_serial::new(link.to_str().unwrap(), 115_200)
        .open_native_async()
        .unwrap();
    let mut c = Client {
        port,
        pending: Vec::new(),
    };
    assert_eq!(c.command("ATE0").await, "ATE0\r\r\nOK\r\n");
    let p = parts("+15551234567", "in-process", false);
    assert!(c.send_pdu(p[0].0, &p[0].1).await.starts_with("\r\n+CMGS: "));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("\"text\":\"in-process\""), "{text}");
    sim.stop().await;
    assert!(!link.exists() && std::fs::symlink_metadata(&link).is_err());

    // Dropping without stop() also removes the link.
    let sim = simgate::sim::Simulator::start(simgate::sim::SimOptions {
        link: link.clone(),
        ..simgate::sim::SimOptions::default()
    })
    .await
    .expect("start again");
    assert!(link.exists());
    drop(sim);
    assert!(std::fs::symlink_metadata(&link).is_err());
}

#[test]
fn refuses_to_replace_a_regular_file_at_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("not-a-link");
    std::fs::write(&link, "keep me").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--link"])
        .arg(&link)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a symlink"), "{err}");
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "keep me");
}
