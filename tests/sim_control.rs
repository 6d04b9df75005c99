//! `simgate sim --control`: every control operation driven over the socket of a real
//! `simgate sim` process, its effect checked on the serial side with a raw tokio-serial
//! client (AT commands, URCs, PDUs), plus `simgate sim ctl` and `--ready-file`.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use simgate::pdu::{Pdu, SubmitOptions, decode_hex, encode_submit};
use simgate::sim::control::Client as Control;
use support::SimProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

const ANSWER: Duration = Duration::from_secs(5);

/// A simulator with a control socket, ready (its ready file written).
struct Sim {
    proc: SimProcess,
    ctl: PathBuf,
}

impl Sim {
    fn start(extra: &[&str]) -> Sim {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl.sock");
        let ready = dir.path().join("ready.json");
        let mut args = vec![
            "--control",
            ctl.to_str().unwrap(),
            "--ready-file",
            ready.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let proc = SimProcess::start(&args);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "no ready file: {}",
                proc.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let r: Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
        assert_eq!(r["control"], json!(ctl.to_str().unwrap()));
        assert!(r["device"].as_str().unwrap().starts_with("/dev/pts/"));
        // The temporary directory of the socket lives as long as the test.
        std::mem::forget(dir);
        Sim { proc, ctl }
    }

    fn ok(&self, req: Value) -> Value {
        Control::connect(self.ctl.to_str().unwrap())
            .unwrap()
            .ok(&req)
            .unwrap_or_else(|e| panic!("{req}: {e}"))
    }

    fn err(&self, req: Value) -> String {
        Control::connect(self.ctl.to_str().unwrap())
            .unwrap()
            .ok(&req)
            .expect_err("an error answer")
    }
}

struct Serial {
    port: tokio_serial::SerialStream,
    pending: Vec<u8>,
}

impl Serial {
    fn open(link: &std::path::Path) -> Serial {
        let port = tokio_serial::new(link.to_str().unwrap(), 115_200)
            .open_native_async()
            .unwrap();
        Serial {
            port,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, s: &str) {
        self.port.write_all(s.as_bytes()).await.unwrap();
    }

    async fn until(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + ANSWER;
        loop {
            if let Some(pos) = self
                .pending
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
            {
                let taken: Vec<u8> = self.pending.drain(..pos + needle.len()).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {needle:?}; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            let mut buf = [0u8; 1024];
            if let Ok(Ok(n)) = tokio::time::timeout(left, self.port.read(&mut buf)).await {
                assert!(n > 0, "pty closed");
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
    }

    /// A command and everything up to its final result.
    async fn command(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r")).await;
        let mut out = String::new();
        loop {
            out += &self.until("\r\n").await;
            if out.ends_with("OK\r\n") || out.contains("ERROR") {
                return out;
            }
        }
    }

    async fn quiet(link: &std::path::Path) -> Serial {
        let mut s = Serial::open(link);
        assert!(s.command("ATE0;+CMEE=1").await.ends_with("OK\r\n"));
        s.pending.clear();
        s
    }

    /// Sends one PDU part; returns the answer.
    async fn send_pdu(&mut self, to: &str, text: &str, srr: bool) -> String {
        let opts = SubmitOptions {
            status_report: srr,
            ..SubmitOptions::default()
        };
        let p = &encode_submit(to, text, &opts, 1).unwrap()[0];
        self.send(&format!("AT+CMGS={}\r", p.tpdu_len)).await;
        self.until("> ").await;
        self.send(&format!("{}\x1a", p.to_hex())).await;
        self.command("").await
    }
}

fn mr_of(answer: &str) -> u8 {
    let at = answer.find("+CMGS: ").expect("a +CMGS answer") + 7;
    answer[at..]
        .split("\r\n")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_routes_stores_and_reassembles_per_cnmi() {
    let sim = Sim::start(&[]);
    let mut s = Serial::quiet(&sim.proc.link).await;
    assert!(s.command("AT+CNMI=2,1,0,0,0").await.ends_with("OK\r\n"));
    let a = sim.ok(json!({"op": "deliver", "from": "+15550001111", "text": "hello"}));
    assert_eq!(a["parts"][0]["routed"], "cmti");
    s.until("+CMTI: \"SM\",1\r\n").await;
    let read = s.command("AT+CMGR=1").await;
    let hex = read.split("\r\n").find(|l| l.len() > 20).unwrap();
    match decode_hex(hex).unwrap() {
        Pdu::Deliver(d) => assert_eq!(
            (d.originator.to_string().as_str(), d.text.as_str()),
            ("+15550001111", "hello")
        ),
        other => panic!("{other:?}"),
    }
    // Multi-part, out of order, one part left out, a 16-bit reference, UCS-2, class 1.
    let text = "Ünïcödé 😀 ".repeat(15);
    let a = sim.ok(
        json!({"op": "deliver", "from": "Bank", "text": text, "class": 1,
        "ref": 4660, "ref_bits": 16, "order": [3, 1, 2], "omit": [2]}),
    );
    let parts = a["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (parts[0]["seq"].clone(), parts[0]["ref"].clone()),
        (json!(3), json!(4660))
    );
    s.until("+CMTI: \"SM\",3\r\n").await;
    let stored = sim.ok(json!({"op": "stored"}));
    assert_eq!(stored["messages"].as_array().unwrap().len(), 3);
    let hex = stored["messages"][1]["pdu"].as_str().unwrap();
    match decode_hex(hex).unwrap() {
        Pdu::Deliver(d) => {
            let c = d.concat.unwrap();
            assert_eq!((c.reference, c.seq, d.dcs), (4660, 3, 0x19));
        }
        other => panic!("{other:?}"),
    }
    // <mt>=2: routed as +CMT, not stored; in text mode with the text.
    assert!(
        s.command("AT+CMGF=1;+CNMI=2,2,0,0,0")
            .await
            .ends_with("OK\r\n")
    );
    sim.ok(json!({"op": "deliver", "from": "+15550002222", "text": "direct"}));
    let cmt = s.until("direct\r\n").await;
    assert!(cmt.contains("+CMT: \"+15550002222\",,\""), "{cmt:?}");
    // A raw PDU.
    assert!(s.command("AT+CMGF=0").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "deliver", "pdu": hex}));
    let raw = s.until(&format!("{hex}\r\n")).await;
    assert!(raw.contains("+CMT: ,"), "{raw:?}");
    let w =
        sim.ok(json!({"op": "wait", "until": {"delivered": 5, "stored": 3}, "timeout_ms": 2000}));
    assert_eq!(w["delivered"], 5);
    assert!(
        sim.err(json!({"op": "deliver", "pdu": "0011"}))
            .contains("decode")
    );
    assert!(
        sim.err(json!({"op": "deliver", "from": "+1555", "text": "x", "class": 9}))
            .contains("class")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_follow_rules_held_reports_and_the_default() {
    let sim = Sim::start(&["--report-delay", "0"]);
    let mut s = Serial::quiet(&sim.proc.link).await;
    assert!(s.command("AT+CNMI=2,1,0,1,0").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "report_default", "outcome": "hold"}));
    let mr = mr_of(&s.send_pdu("+15551230001", "first", true).await);
    sim.ok(json!({"op": "wait", "until": {"held": 1, "sent": 1}}));
    let a = sim.ok(json!({"op": "report", "mr": mr, "outcome": "failed", "status": 69}));
    assert_eq!(a["answered"], 1);
    s.until("+CDS: ").await;
    let cds = s.until("\r\n").await;
    let _ = cds;
    let pdu_line = s.until("\r\n").await;
    match decode_hex(pdu_line.trim()).unwrap() {
        Pdu::StatusReport(r) => assert_eq!((r.message_reference, r.status), (mr, 69)),
        other => panic!("{other:?}"),
    }
    // A rule for a recipient, set before the send: delayed, then delivered.
    sim.ok(
        json!({"op": "report", "to": "+15551230002", "outcome": "delayed", "then_delay_ms": 50}),
    );
    let mr2 = mr_of(&s.send_pdu("+15551230002", "second", true).await);
    for want in [0x20u8, 0] {
        s.until("+CDS: ").await;
        s.until("\r\n").await;
        let line = s.until("\r\n").await;
        match decode_hex(line.trim()).unwrap() {
            Pdu::StatusReport(r) => assert_eq!((r.message_reference, r.status), (mr2, want)),
            other => panic!("{other:?}"),
        }
    }
    sim.ok(json!({"op": "report_clear"}));
    sim.ok(json!({"op": "report_default", "outcome": "delivered"}));
    // The recipient rule is gone: the same recipient now gets the default, one final report.
    let mr3 = mr_of(&s.send_pdu("+15551230002", "third", true).await);
    s.until("+CDS: ").await;
    s.until("\r\n").await;
    let line = s.until("\r\n").await;
    match decode_hex(line.trim()).unwrap() {
        Pdu::StatusReport(r) => assert_eq!((r.message_reference, r.status), (mr3, 0)),
        other => panic!("{other:?}"),
    }
    let w = sim.ok(json!({"op": "wait", "until": {"reports": 4, "sent": 3}}));
    assert_eq!(w["held"], json!([]));
    let sent = sim.ok(json!({"op": "sent", "since": 1}));
    assert_eq!(sent["count"], 3);
    assert_eq!(sent["lines"][0]["text"], "second");
    assert!(
        sim.err(json!({"op": "report", "outcome": "failed"}))
            .contains("mr")
    );
    assert!(
        sim.err(json!({"op": "report", "mr": 1, "outcome": "failed", "status": 0}))
            .contains("TP-ST")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_faults_hang_urc_commands_and_unplug() {
    let sim = Sim::start(&[]);
    let mut s = Serial::quiet(&sim.proc.link).await;
    assert!(s.command("AT+CREG=1;+CGREG=1").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "network", "registration": "searching"}));
    s.until("+CREG: 2\r\n").await;
    s.until("+CGREG: 2\r\n").await;
    let a = s.send_pdu("+15551234567", "x", false).await;
    assert!(a.contains("+CMS ERROR: 331"), "{a:?}");
    sim.ok(json!({"op": "network", "registration": "roaming"}));
    s.until("+CREG: 5\r\n").await;
    sim.ok(json!({"op": "signal", "rssi": 9, "ber": 2}));
    assert!(s.command("AT+CSQ").await.contains("+CSQ: 9,2"));
    sim.ok(json!({"op": "operator", "long": "Test Net", "short": "TN", "numeric": "99901"}));
    assert!(s.command("AT+COPS?").await.contains("\"Test Net\""));
    sim.ok(json!({"op": "errors", "rate": 1.0, "codes": [500]}));
    assert!(
        s.send_pdu("+15551234567", "x", false)
            .await
            .contains("+CMS ERROR: 500")
    );
    sim.ok(json!({"op": "errors", "rate": 0.0}));
    sim.ok(json!({"op": "send_delay", "ms": 300}));
    let t = Instant::now();
    assert!(
        s.send_pdu("+15551234567", "slow", false)
            .await
            .contains("+CMGS: ")
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    sim.ok(json!({"op": "send_delay", "ms": 0}));
    sim.ok(json!({"op": "hang"}));
    s.send("AT\r").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.port.read(&mut buf))
            .await
            .is_err(),
        "a hung modem answered"
    );
    sim.ok(json!({"op": "resume"}));
    assert!(s.command("AT").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "urc", "line": "RING"}));
    s.until("\r\nRING\r\n").await;
    let c = sim.ok(json!({"op": "commands", "last": 2}));
    // The `AT` sent while hung was never received as a command.
    assert_eq!(c["commands"][1], "AT");
    assert!(
        c["commands"][0].as_str().unwrap().starts_with("AT+CMGS="),
        "{c}"
    );
    let w = sim.ok(json!({"op": "wait", "until": {"command": "at+csq", "refused": 2}}));
    assert_eq!(w["parts"], 1);
    assert!(
        sim.err(json!({"op": "wait", "until": {"sent": 99}, "timeout_ms": 100}))
            .contains("timeout")
    );

    // Unplug: the link goes, the port closes; replug under another name.
    sim.ok(json!({"op": "unplug"}));
    sim.ok(json!({"op": "wait", "until": {"plugged": false}}));
    assert!(std::fs::symlink_metadata(&sim.proc.link).is_err());
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(ANSWER, s.port.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // Settings still change while unplugged, texts do not.
    sim.ok(json!({"op": "signal", "rssi": 4}));
    assert!(
        sim.err(json!({"op": "urc", "line": "RING"}))
            .contains("unplugged")
    );
    let other = sim.proc.dir.path().join("modem-b");
    sim.ok(json!({"op": "replug", "link": other}));
    sim.ok(json!({"op": "wait", "until": {"plugged": true, "replugs": 1}}));
    let mut s = Serial::quiet(&other).await;
    assert!(s.command("AT+CSQ").await.contains("+CSQ: 4,99"));
    sim.ok(json!({"op": "unplug", "replug_after_ms": 100}));
    sim.ok(json!({"op": "wait", "until": {"replugs": 2}}));
    assert!(other.exists());
}

#[test]
fn sim_ctl_prints_answers_and_exits_by_outcome() {
    let sim = Sim::start(&[]);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(["sim", "ctl"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let ctl = sim.ctl.to_str().unwrap();
    let (code, out) = run(&[ctl, "deliver", "from=+15550001111", "text=from the shell"]);
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["parts"][0]["index"], 1);
    let (code, out) = run(&[ctl, "{\"op\":\"counters\"}"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"delivered\":1"), "{out}");
    let (code, out) = run(&[ctl, "network", "registration=upside-down"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("\"ok\":false"));
    let (code, _) = run(&[ctl, "ping", "novalue"]);
    assert_eq!(code, Some(2));
    let gone = sim.proc.dir.path().join("nobody.sock");
    let (code, _) = run(&[gone.to_str().unwrap(), "ping"]);
    assert_eq!(code, Some(3));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--link", "/tmp/x", "--control", "0.0.0.0:7000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// gammu, a client nobody here wrote, reads injected texts from the SIM storage: short and
/// multi-part UCS-2. Skips when gammu is not installed (`.ci/run` installs it).
#[test]
fn gammu_getallsms_sees_injected_texts() {
    if !std::process::Command::new("gammu")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    let sim = Sim::start(&[]);
    sim.ok(json!({"op": "deliver", "from": "+15550001111", "text": "short one"}));
    let long = "Ünïcödé 😀 ".repeat(15);
    sim.ok(json!({"op": "deliver", "from": "Bank", "text": long, "ref": 77}));
    let rc = sim.proc.dir.path().join("gammurc");
    std::fs::write(
        &rc,
        format!(
            "[gammu]\ndevice = {}\nconnection = at\n",
            sim.proc.link.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("gammu")
        .arg("-c")
        .arg(&rc)
        .arg("getallsms")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Remote number        : \"+15550001111\""),
        "{text}"
    );
    assert!(text.contains("short one"), "{text}");
    assert!(text.contains("ID (8 bit) 77, part 3 of 3"), "{text}");
    assert!(text.contains("Coding               : Unicode"), "{text}");
    assert!(text.contains("Ünïcödé 😀 Ünïcödé"), "{text}");
}

/// python-gsmmodem-new's incoming-SMS callback receives texts injected through the control
/// socket (stored and announced with `+CMTI`): short, UCS-2, and the three parts of a
/// concatenated text, each with its TS 23.040 concatenation element (the library hands parts
/// over one by one; it does not reassemble). Skips when no Python can
/// `import gsmmodem` ($SIMGATE_PYTHON, /opt/simgate-venv/bin/python, python3).
#[test]
fn python_gsmmodem_callback_receives_injected_texts() {
    const SCRIPT: &str = r#"
import sys, json, socket, time
from gsmmodem.modem import GsmModem
port, ctl = sys.argv[1], sys.argv[2]
got = []
def call(**req):
    s = socket.socket(socket.AF_UNIX); s.connect(ctl)
    s.sendall((json.dumps(req) + "\n").encode()); a = json.loads(s.makefile().readline()); s.close()
    assert a["ok"], a
modem = GsmModem(port, 115200, smsReceivedCallbackFunc=got.append)
modem.connect()
# One at a time: this client loses a +CMTI that arrives while it reads the previous text.
for n, (sender, text) in enumerate([("+15550001111", "short one"), ("+15550002222", sys.argv[3])]):
    call(op="deliver", **{"from": sender}, text=text)
    deadline = time.time() + 10
    while len(got) <= n and time.time() < deadline:
        time.sleep(0.05)
# A 3-part text (8-bit reference 77), one part at a time for the same reason.
long_parts = sys.argv[4].split("|")
for k in range(1, 4):
    call(op="deliver", **{"from": "+15550003333"}, parts=long_parts, ref=77,
         omit=[n for n in (1, 2, 3) if n != k])
    deadline = time.time() + 10
    while len(got) < 2 + k and time.time() < deadline:
        time.sleep(0.05)
for s in got:
    concat = [{"ref": ie.reference, "parts": ie.parts, "number": ie.number}
              for ie in (s.udh or []) if hasattr(ie, "reference")]
    print(json.dumps({"from": s.number, "text": s.text, "concat": concat}))
modem.close()
"#;
    let candidates: Vec<String> = match std::env::var("SIMGATE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/opt/simgate-venv/bin/python".into(), "python3".into()],
    };
    let Some(python) = candidates.iter().find(|p| {
        std::process::Command::new(p)
            .args(["-c", "import gsmmodem"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!("skipping: none of {candidates:?} can `import gsmmodem`");
        return;
    };
    let sim = Sim::start(&[]);
    let unicode = "Ваш код ✓ 日本";
    let parts = ["First part, ", "second part, ", "third part."];
    let out = std::process::Command::new(python)
        .args(["-c", SCRIPT])
        .arg(&sim.proc.link)
        .arg(&sim.ctl)
        .arg(unicode)
        .arg(parts.join("|"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut want = vec![
        json!({"from": "+15550001111", "text": "short one", "concat": []}),
        json!({"from": "+15550002222", "text": unicode, "concat": []}),
    ];
    for (i, part) in parts.iter().enumerate() {
        want.push(json!({"from": "+15550003333", "text": part,
            "concat": [{"ref": 77, "parts": 3, "number": i + 1}]}));
    }
    assert_eq!(got, want);
}

/// `--link A --link B`: two modems in one process, each with its own IMEI and ICCID, steered
/// through one socket by `"modem"` (index or link); a text delivered to one reaches only its
/// serial port, and each keeps its own sent log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_modems_in_one_process_are_told_apart() {
    let second = tempfile::tempdir().unwrap();
    let b = second.path().join("modem-b");
    let sim = Sim::start(&["--link", b.to_str().unwrap()]);
    let m = sim.ok(json!({"op": "modems"}));
    let list = m["modems"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{m}");
    assert_eq!(list[1]["link"], json!(b));
    assert_ne!(list[0]["imei"], list[1]["imei"]);
    assert_ne!(list[0]["iccid"], list[1]["iccid"]);
    let mut a_port = Serial::quiet(&sim.proc.link).await;
    let mut b_port = Serial::quiet(&b).await;
    for (port, entry) in [(&mut a_port, &list[0]), (&mut b_port, &list[1])] {
        let imei = port.command("AT+CGSN").await;
        assert!(imei.contains(entry["imei"].as_str().unwrap()), "{imei}");
        let iccid = port.command("AT+CCID").await;
        assert!(iccid.contains(entry["iccid"].as_str().unwrap()), "{iccid}");
        assert!(port.command("AT+CNMI=2,1,0,0,0").await.ends_with("OK\r\n"));
    }
    // The IMEIs differ in the serial number and keep a valid check digit (TS 23.003).
    let luhn_ok = |s: &str| {
        let sum: u32 = s
            .bytes()
            .rev()
            .enumerate()
            .map(|(i, c)| {
                let d = u32::from(c - b'0');
                if i % 2 == 1 {
                    if d * 2 > 9 { d * 2 - 9 } else { d * 2 }
                } else {
                    d
                }
            })
            .sum();
        sum % 10 == 0
    };
    assert!(luhn_ok(list[1]["imei"].as_str().unwrap()), "{m}");
    sim.ok(json!({"op": "deliver", "modem": b, "from": "+15550001111", "text": "for B"}));
    b_port.until("+CMTI: \"SM\",1\r\n").await;
    assert_eq!(
        sim.ok(json!({"op": "stored", "modem": 0}))["messages"],
        json!([])
    );
    assert_eq!(
        sim.ok(json!({"op": "stored", "modem": 1}))["messages"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(a_port.command("AT+CMGL=4").await == "\r\nOK\r\n");
    b_port.send_pdu("+15551239999", "from B", false).await;
    sim.ok(json!({"op": "wait", "modem": 1, "until": {"sent": 1}}));
    assert_eq!(sim.ok(json!({"op": "sent", "modem": 0}))["count"], 0);
    assert_eq!(
        sim.ok(json!({"op": "sent", "modem": 1}))["lines"][0]["text"],
        "from B"
    );
    // Changes go to the modem named only.
    sim.ok(json!({"op": "signal", "modem": 1, "rssi": 3}));
    assert!(b_port.command("AT+CSQ").await.contains("+CSQ: 3,99"));
    assert!(a_port.command("AT+CSQ").await.contains("+CSQ: 21,99"));
    assert!(
        sim.err(json!({"op": "ping", "modem": 2}))
            .contains("there are 2")
    );
    assert!(
        sim.err(json!({"op": "ping", "modem": "/nowhere"}))
            .contains("none of the links")
    );
    // The log is shared and the ready file lists both.
    let lines = sim.proc.wait_for_log_lines(1, ANSWER);
    assert_eq!(lines[0]["text"], "from B");
}

#[test]
fn count_makes_numbered_links() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("ttyUSB");
    let ready = dir.path().join("ready.json");
    let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--link"])
        .arg(&base)
        .args(["--count", "3", "--imei", "490154203237518", "--ready-file"])
        .arg(&ready)
        .args(["--control", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&ready).unwrap()).unwrap();
    let modems = r["modems"].as_array().unwrap().clone();
    // The loopback TCP socket the system chose reaches every modem.
    let tcp = r["control"].as_str().unwrap().to_string();
    assert!(
        tcp.starts_with("127.0.0.1:") && !tcp.ends_with(":0"),
        "{tcp}"
    );
    let ping = Control::connect(&tcp)
        .unwrap()
        .ok(&json!({"op": "ping", "modem": 2}))
        .unwrap();
    assert_eq!(ping["imei"], "490154203237534");
    let _ = child.kill();
    let _ = child.wait();
    let links: Vec<&str> = modems.iter().map(|m| m["link"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..3).map(|i| format!("{}{i}", base.display())).collect();
    assert_eq!(links, want);
    let imeis: Vec<&str> = modems.iter().map(|m| m["imei"].as_str().unwrap()).collect();
    assert_eq!(
        imeis,
        ["490154203237518", "490154203237526", "490154203237534"]
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args([
            "sim", "--link", "/tmp/a", "--link", "/tmp/b", "--count", "2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count"));
}

/// `sim`: the SIM pulled, put back, PIN-locked, PUK-blocked and unlocked at run time, with the
/// answers of TS 27.007 §8.3 / §9.2.1 and TS 27.005 §3.2.5 and a SIM800's URCs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_comes_and_goes_and_locks_at_run_time() {
    let sim = Sim::start(&["--profile", "simcom"]);
    let mut s = Serial::open(&sim.proc.link);
    s.until("SMS Ready\r\n").await;
    assert!(s.command("ATE0;+CMEE=1;+CREG=1").await.ends_with("OK\r\n"));
    assert!(s.command("AT+CNMI=2,1,0,0,0").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "deliver", "from": "+15550001111", "text": "kept on the SIM"}));
    s.until("+CMTI: \"SM\",1\r\n").await;
    sim.ok(json!({"op": "sim", "state": "removed"}));
    s.until("+CPIN: NOT INSERTED\r\n").await;
    s.until("+CREG: 0\r\n").await;
    assert_eq!(s.command("AT+CPIN?").await, "\r\n+CME ERROR: 10\r\n");
    assert_eq!(s.command("AT+CMGR=1").await, "\r\n+CMS ERROR: 310\r\n");
    assert_eq!(s.command("AT+CMGS=20").await, "\r\n+CMS ERROR: 310\r\n");
    assert!(
        sim.err(json!({"op": "deliver", "from": "+1555", "text": "x"}))
            .contains("removed")
    );
    assert_eq!(sim.ok(json!({"op": "ping"}))["sim"], "removed");
    // A SIM stays out across a USB replug: the fresh modem boots without it.
    sim.ok(json!({"op": "unplug"}));
    sim.ok(json!({"op": "replug"}));
    sim.ok(json!({"op": "wait", "until": {"replugs": 1}}));
    let mut s = Serial::open(&sim.proc.link);
    s.until("+CPIN: NOT INSERTED\r\n").await;
    assert!(s.command("ATE0;+CMEE=2;+CREG=1").await.ends_with("OK\r\n"));
    assert_eq!(
        s.command("AT+CIMI").await,
        "\r\n+CME ERROR: SIM not inserted\r\n"
    );
    sim.ok(json!({"op": "sim", "state": "inserted"}));
    s.until("+CPIN: READY\r\n").await;
    s.until("SMS Ready\r\n").await;
    s.until("+CREG: 1\r\n").await;
    assert!(s.command("AT+CMEE=1").await.ends_with("OK\r\n"));
    // Locked with a PIN the client must enter.
    sim.ok(json!({"op": "sim", "state": "pin", "pin": "4321"}));
    s.until("+CPIN: SIM PIN\r\n").await;
    s.until("+CREG: 0\r\n").await;
    assert!(s.command("AT+CPIN?").await.contains("+CPIN: SIM PIN"));
    assert_eq!(s.command("AT+CMGS=20").await, "\r\n+CMS ERROR: 311\r\n");
    assert_eq!(s.command("AT+CPIN=\"4321\"").await, "\r\nOK\r\n");
    sim.ok(json!({"op": "wait", "until": {"sim": "ready"}}));
    s.until("SMS Ready\r\n").await;
    // Blocked: the PUK unblocks it and sets a new PIN.
    sim.ok(json!({"op": "sim", "state": "puk"}));
    s.until("+CPIN: SIM PUK\r\n").await;
    s.until("+CREG: 0\r\n").await;
    assert_eq!(
        s.command("AT+CPIN=\"4321\"").await,
        "\r\n+CME ERROR: 12\r\n"
    );
    assert_eq!(
        s.command("AT+CPIN=\"12345678\",\"1111\"").await,
        "\r\nOK\r\n"
    );
    sim.ok(json!({"op": "wait", "until": {"sim": "ready"}}));
    // And unlocked from the socket, as if someone had typed the PIN.
    sim.ok(json!({"op": "sim", "state": "pin"}));
    s.until("+CPIN: SIM PIN\r\n").await;
    sim.ok(json!({"op": "sim", "state": "ready"}));
    s.until("+CPIN: READY\r\n").await;
    assert!(
        s.send_pdu("+15551234567", "sent again", false)
            .await
            .contains("+CMGS: ")
    );
    assert!(
        sim.err(json!({"op": "sim", "state": "sideways"}))
            .contains("removed, inserted")
    );
    assert!(
        sim.err(json!({"op": "sim", "state": "pin", "pin": "12"}))
            .contains("4 to 8")
    );
}

/// `call` and `hangup`: RING / +CRING with +CLIP on the serial side, ATA, ATH, NO CARRIER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ring_and_end() {
    let sim = Sim::start(&[]);
    let mut s = Serial::quiet(&sim.proc.link).await;
    assert!(s.command("AT+CLIP=1").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "call", "from": "+15550001111", "rings": 2, "interval_ms": 200}));
    s.until("\r\nRING\r\n").await;
    s.until("+CLIP: \"+15550001111\",145\r\n").await;
    s.until("\r\nRING\r\n").await;
    // Unanswered: the caller gives up after the last ring.
    s.until("\r\nNO CARRIER\r\n").await;
    assert_eq!(sim.ok(json!({"op": "counters"}))["call"], "none");
    assert!(s.command("AT+CRC=1").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "call", "rings": 50}));
    s.until("+CRING: VOICE\r\n").await;
    s.until("+CLIP: \"\",128,,,,1\r\n").await;
    assert_eq!(s.command("ATA").await, "\r\nOK\r\n");
    let w = sim.ok(json!({"op": "wait", "until": {"answered": 1}}));
    assert_eq!(w["call"], "answered");
    sim.ok(json!({"op": "hangup"}));
    s.until("\r\nNO CARRIER\r\n").await;
    sim.ok(json!({"op": "call", "from": "5550002222", "interval_ms": 100}));
    s.until("+CLIP: \"5550002222\",129\r\n").await;
    assert_eq!(s.command("ATH").await, "\r\nOK\r\n");
    assert_eq!(sim.ok(json!({"op": "ping"}))["call"], "none");
    assert!(sim.err(json!({"op": "hangup"})).contains("no call"));
    assert!(
        sim.err(json!({"op": "call", "from": "nobody"}))
            .contains("from")
    );
}

/// The reads and the timed variants no other test drives: `ping`, `counters`, `hang` with
/// `ms`, `unplug` to another link with `replug_after_ms`, `stored` after `+CMGD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_counters_timed_hang_and_an_unplug_to_another_link() {
    let sim = Sim::start(&["--imei", "490154203237518"]);
    let p = sim.ok(json!({"op": "ping"}));
    assert_eq!(p["link"], json!(sim.proc.link));
    assert_eq!(p["plugged"], true);
    assert_eq!(p["imei"], "490154203237518");
    assert_eq!(p["sim"], "ready");
    let device = p["device"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_link(&sim.proc.link).unwrap(),
        PathBuf::from(&device)
    );
    let before = sim.ok(json!({"op": "counters"}));
    let mut s = Serial::quiet(&sim.proc.link).await;
    assert!(s.command("AT+CNMI=2,1,0,0,0").await.ends_with("OK\r\n"));
    s.send_pdu("+15551234567", "counted", false).await;
    sim.ok(json!({"op": "deliver", "from": "+15550001111", "text": "in"}));
    s.until("+CMTI: \"SM\",1\r\n").await;
    let c = sim.ok(json!({"op": "counters"}));
    // ATE0;+CMEE=1, AT+CNMI, AT+CMGS: three command lines; one part sent; one delivered.
    assert_eq!(
        c["commands"].as_u64().unwrap() - before["commands"].as_u64().unwrap(),
        3,
        "{c}"
    );
    assert_eq!(
        (c["parts"].clone(), c["sent"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (c["delivered"].clone(), c["stored"].clone()),
        (json!(1), json!(1))
    );
    assert!(s.command("AT+CMGD=1").await.ends_with("OK\r\n"));
    sim.ok(json!({"op": "wait", "until": {"command": "AT+CMGD"}}));
    assert_eq!(sim.ok(json!({"op": "stored"}))["messages"], json!([]));
    // A hang that ends by itself.
    sim.ok(json!({"op": "hang", "ms": 500}));
    let t = Instant::now();
    s.send("AT\r").await;
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.port.read(&mut buf))
            .await
            .is_err(),
        "a hung modem answered"
    );
    let deadline = Instant::now() + ANSWER;
    loop {
        s.send("AT\r").await;
        if tokio::time::timeout(Duration::from_millis(300), s.until("OK\r\n"))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the hang never ended");
    }
    assert!(t.elapsed() >= Duration::from_millis(500));
    // Unplugged, and back by itself under another name.
    let other = sim.proc.dir.path().join("ttyUSB9");
    sim.ok(json!({"op": "unplug", "replug_after_ms": 300, "link": other}));
    let w = sim.ok(json!({"op": "wait", "until": {"replugs": 1, "plugged": true}}));
    assert_eq!(w["link"], json!(other));
    assert!(std::fs::symlink_metadata(&sim.proc.link).is_err());
    let p = sim.ok(json!({"op": "ping"}));
    assert_eq!(p["link"], json!(other));
    assert_ne!(p["device"].as_str().unwrap(), device);
    let mut s = Serial::quiet(&other).await;
    assert!(s.command("AT+CGSN").await.contains("490154203237518"));
    let c = sim.ok(json!({"op": "counters"}));
    assert_eq!(
        (c["unplugs"].clone(), c["sent"].clone()),
        (json!(1), json!(1))
    );
}
