//! Debian's gammu-smsd (files backend), a daemon nobody here wrote, against `simgate sim`
//! steered through its control socket: injected texts (short, multi-part UCS-2) reach its
//! inbox and its RunOnReceive hook; a text it sends from its outbox gets the delivery report
//! the test chose (delivered, failed); after a USB unplug and replug at run time it reconnects
//! and receives and sends again. Skips with a printed reason when gammu-smsd is absent.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use simgate::sim::control::Client;
use support::SimProcess;

/// gammu-smsd polls the SIM every second, but its start-up (identify, network, storage) and a
/// reconnection (three failed polls, then a new init) take a while on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(90);

fn smsd_present() -> bool {
    Command::new("gammu-smsd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A gammu-smsd child with its spool directories; killed on drop.
struct Smsd {
    child: Child,
    dir: PathBuf,
}

impl Smsd {
    fn start(dir: &Path, device: &Path) -> Smsd {
        for d in ["inbox", "outbox", "sent", "error", "hook"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The hook records its arguments and the SMS_* / DECODED_* variables gammu-smsd passes,
        // one file per run, written whole (rename) so the test never reads half of one.
        let hook = dir.join("on-receive.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nout={hook_dir}/$$\n{{ echo \"ARGS=$*\"; env | grep -E '^(SMS|DECODED)_' | sort; }} > \"$out.tmp\"\nmv \"$out.tmp\" \"$out.txt\"\n",
                hook_dir = dir.join("hook").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let rc = dir.join("smsdrc");
        let p = |d: &str| format!("{}/", dir.join(d).display());
        std::fs::write(
            &rc,
            format!(
                "[gammu]\ndevice = {device}\nconnection = at\n\n[smsd]\nservice = files\n\
                 inboxpath = {inbox}\noutboxpath = {outbox}\nsentsmspath = {sent}\n\
                 errorsmspath = {error}\nlogfile = {log}\ndebuglevel = 1\n\
                 deliveryreport = sms\noutboxformat = unicode\ntransmitformat = auto\n\
                 receivefrequency = 1\ncommtimeout = 1\nsendtimeout = 20\n\
                 runonreceive = {hook}\n",
                device = device.display(),
                inbox = p("inbox"),
                outbox = p("outbox"),
                sent = p("sent"),
                error = p("error"),
                log = dir.join("smsd.log").display(),
                hook = hook.display(),
            ),
        )
        .unwrap();
        let child = Command::new("gammu-smsd")
            .arg("-c")
            .arg(&rc)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gammu-smsd");
        Smsd {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("smsd.log")).unwrap_or_default()
    }

    /// Every file in `sub` with its content.
    fn files(&self, sub: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(self.dir.join(sub))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
                    .map(|e| {
                        (
                            e.file_name().to_string_lossy().into_owned(),
                            std::fs::read_to_string(e.path()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Waits until some file in `sub` satisfies `pred`; returns its (name, content).
    fn wait_file(
        &self,
        sub: &str,
        what: &str,
        pred: impl Fn(&str, &str) -> bool,
    ) -> (String, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(f) = self.files(sub).into_iter().find(|(n, c)| pred(n, c)) {
                return f;
            }
            assert!(
                Instant::now() < deadline,
                "gammu-smsd: no {what} in {sub}/ after {PATIENCE:?}; files {:?}\nlog:\n{}",
                self.files(sub),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Queues a text in the outbox (UTF-16, as `outboxformat = unicode` reads it).
    fn queue(&self, to: &str, text: &str, tag: &str) {
        let mut bytes = vec![0xFF, 0xFE];
        for u in text.encode_utf16() {
            bytes.extend_from_slice(&u.to_le_bytes());
        }
        let name = format!("OUTA_{to}_{tag}.txt");
        let tmp = self.dir.join(format!("{name}.part"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.dir.join("outbox").join(name)).unwrap();
    }
}

impl Drop for Smsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctl(sock: &Path, req: Value) -> Value {
    Client::connect(sock.to_str().unwrap())
        .unwrap()
        .ok(&req)
        .unwrap_or_else(|e| panic!("{req}: {e}"))
}

fn wait_ready(ready: &Path, sim: &SimProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            Instant::now() < deadline,
            "no ready file: {}",
            sim.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gammu_smsd_receives_sends_gets_reports_and_survives_a_replug() {
    if !smsd_present() {
        eprintln!("skipping: gammu-smsd is not installed (Debian package gammu-smsd)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let sock = work.path().join("ctl.sock");
    let ready = work.path().join("ready.json");
    let sim = SimProcess::start(&[
        "--control",
        sock.to_str().unwrap(),
        "--ready-file",
        ready.to_str().unwrap(),
        "--report-delay",
        "0",
    ]);
    wait_ready(&ready, &sim);
    let smsd = Smsd::start(work.path(), &sim.link);

    // Incoming: a short GSM text and a three-part UCS-2 one with an 8-bit reference.
    ctl(
        &sock,
        json!({"op": "deliver", "from": "+15550001111", "text": "Your parcel is here"}),
    );
    let (name, text) = smsd.wait_file("inbox", "short text", |n, _| n.contains("+15550001111"));
    assert_eq!(text, "Your parcel is here", "{name}");
    let long = "Grüße aus Köln 😀 ".repeat(12);
    let a = ctl(
        &sock,
        json!({"op": "deliver", "from": "Bank", "text": long, "ref": 77}),
    );
    assert_eq!(a["parts"].as_array().unwrap().len(), 4, "{a}");
    let (_, hook) = smsd.wait_file("hook", "RunOnReceive run for the long text", |_, c| {
        c.contains("SMS_MESSAGES=4")
    });
    assert!(hook.contains("SMS_1_NUMBER=Bank"), "{hook}");
    assert!(
        hook.contains(&format!("DECODED_1_TEXT={long}")),
        "RunOnReceive did not get the joined text: {hook}"
    );
    let inbox = smsd.files("inbox");
    let parts: String = inbox
        .iter()
        .filter(|(n, _)| n.contains("_Bank_"))
        .map(|(_, c)| c.as_str())
        .collect();
    assert_eq!(parts, long, "the inbox files of the four parts, in order");
    let short_hook = smsd.wait_file("hook", "RunOnReceive run for the short text", |_, c| {
        c.contains("SMS_1_TEXT=Your parcel is here")
    });
    assert!(short_hook.1.contains("ARGS=IN"), "{short_hook:?}");
    // What gammu-smsd did on the serial side: it polled the storage and deleted what it read.
    let w = ctl(
        &sock,
        json!({"op": "wait", "until": {"delivered": 5, "command": "AT+CMGD"}, "timeout_ms": 20000}),
    );
    assert_eq!(w["delivered"], 5);
    let deadline = Instant::now() + PATIENCE;
    while ctl(&sock, json!({"op": "stored"}))["messages"]
        .as_array()
        .is_some_and(|m| !m.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "gammu-smsd left texts on the SIM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Outgoing, with the reports chosen here: one delivered, one failed with TP-ST 69.
    ctl(
        &sock,
        json!({"op": "report", "to": "+15551230001", "outcome": "delivered"}),
    );
    ctl(
        &sock,
        json!({"op": "report", "to": "+15551230002", "outcome": "failed", "status": 69}),
    );
    smsd.queue("+15551230001", "Your code is 481516", "a");
    smsd.wait_file("sent", "sent file a", |n, _| n.contains("+15551230001"));
    smsd.queue("+15551230002", "Ваш код 271828", "b");
    smsd.wait_file("sent", "sent file b", |n, _| n.contains("+15551230002"));
    let w = ctl(
        &sock,
        json!({"op": "wait", "until": {"sent": 2, "reports": 2}, "timeout_ms": 30000}),
    );
    assert_eq!(w["sent"], 2);
    let sent = ctl(&sock, json!({"op": "sent"}));
    assert_eq!(sent["lines"][0]["text"], "Your code is 481516");
    assert_eq!(sent["lines"][1]["text"], "Ваш код 271828");
    assert_eq!(sent["lines"][1]["to"], "+15551230002");
    let (_, ok) = smsd.wait_file("inbox", "delivery report (delivered)", |n, _| {
        n.contains("+15551230001")
    });
    assert_eq!(ok.trim(), "Delivered");
    let (_, failed) = smsd.wait_file("inbox", "delivery report (failed)", |n, _| {
        n.contains("+15551230002")
    });
    assert_eq!(failed.trim(), "Failed");

    // A USB pull while gammu-smsd runs; the modem comes back fresh a second later.
    ctl(&sock, json!({"op": "unplug", "replug_after_ms": 1000}));
    ctl(
        &sock,
        json!({"op": "wait", "until": {"replugs": 1}, "timeout_ms": 10000}),
    );
    ctl(
        &sock,
        json!({"op": "deliver", "from": "+15550003333", "text": "after the replug"}),
    );
    let (_, again) = smsd.wait_file("inbox", "text after the replug", |n, _| {
        n.contains("+15550003333")
    });
    assert_eq!(again, "after the replug");
    smsd.queue("+15551230003", "sent after the replug", "c");
    let w = ctl(
        &sock,
        json!({"op": "wait", "until": {"sent": 3}, "timeout_ms": 60000}),
    );
    assert_eq!(w["unplugs"], 1);
    assert_eq!(
        ctl(&sock, json!({"op": "sent", "since": 2}))["lines"][0]["text"],
        "sent after the replug"
    );
    assert!(
        smsd.log().contains("Terminating communication"),
        "gammu-smsd never noticed the unplug:\n{}",
        smsd.log()
    );
}
