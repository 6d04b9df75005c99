//! python-gsmmodem-new accepts `simgate sim` as a modem: `connect()` and `sendSms` of a short,
//! a long (concatenated) and a unicode text, whose texts arrive intact in the simulator's log.
//! Uses $SIMGATE_PYTHON, else /opt/simgate-venv/bin/python, else python3; skips with a printed
//! reason when `import gsmmodem` fails. The modem is the crate's test fixture,
//! `simgate::sim::Sim`, in-process: what it received is read through its control operations.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use simgate::sim::{Profile, Sim};

/// The client script: connects, prints what it learned, sends the texts given as arguments.
const SCRIPT: &str = r#"
import sys
from gsmmodem.modem import GsmModem
port, to = sys.argv[1], sys.argv[2]
modem = GsmModem(port, 115200)
modem.connect()
print("manufacturer=" + str(modem.manufacturer))
print("imei=" + str(modem.imei))
print("network=" + str(modem.networkName))
print("signal=" + str(modem.signalStrength))
for text in sys.argv[3:]:
    sms = modem.sendSms(to, text)
    print("sent parts=" + str(len(sms.reference) if isinstance(sms.reference, list) else 1))
modem.close()
print("closed")
"#;

/// A Python interpreter that can import gsmmodem, or the reason there is none.
fn python() -> Result<String, String> {
    let candidates: Vec<String> = match std::env::var("SIMGATE_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/opt/simgate-venv/bin/python".into(), "python3".into()],
    };
    for p in &candidates {
        if let Ok(o) = Command::new(p).args(["-c", "import gsmmodem"]).output()
            && o.status.success()
        {
            return Ok(p.clone());
        }
    }
    Err(format!("none of {candidates:?} can `import gsmmodem`"))
}

#[test]
fn python_gsmmodem_connects_and_sends_short_long_and_unicode() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let sim = Sim::builder().start().expect("start the simulator");
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(8);
    let unicode = "Ваш код 123456 ✓ 日本";
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(sim.link())
        .arg("+15551234567")
        .args(["Your code is 271828", long.as_str(), unicode])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python-gsmmodem failed ({}):\nstdout: {stdout}\nstderr: {}\nlast commands: {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sim.commands(20)
    );
    assert!(stdout.contains("manufacturer=simgate"), "{stdout}");
    assert!(stdout.contains("imei=356938035643809"), "{stdout}");
    assert!(stdout.contains("network=Simgate Mobile"), "{stdout}");
    assert!(stdout.contains("signal=21"), "{stdout}");
    assert!(stdout.contains("closed"), "{stdout}");
    sim.wait(json!({"sent": 3}), Duration::from_secs(10))
        .unwrap();
    let lines = sim.sent();
    assert_eq!(lines[0]["text"], "Your code is 271828");
    assert_eq!(lines[0]["to"], "+15551234567");
    assert_eq!(lines[1]["text"], long.as_str());
    assert_eq!(lines[1]["parts"], 3);
    assert_eq!(lines[2]["text"], unicode);
    assert_eq!(lines[2]["parts"], 1);
}

#[test]
fn python_gsmmodem_unlocks_a_pin_protected_sim() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let sim = Sim::builder()
        .pin("2468")
        .profile(Profile::Simcom)
        .start()
        .expect("start the simulator");
    let script = r#"
import sys
from gsmmodem.modem import GsmModem
modem = GsmModem(sys.argv[1], 115200)
modem.connect(pin="2468")
modem.sendSms("+15550001111", "after unlock")
modem.close()
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(sim.link())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python-gsmmodem failed:\n{}\nlast commands: {:?}",
        String::from_utf8_lossy(&out.stderr),
        sim.commands(20)
    );
    sim.wait(json!({"sent": 1, "sim": "ready"}), Duration::from_secs(10))
        .unwrap();
    assert_eq!(sim.sent()[0]["text"], "after unlock");
    let pins: Vec<String> = sim
        .commands(1000)
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("AT+CPIN="))
        .collect();
    assert_eq!(pins, ["AT+CPIN=\"2468\""], "one PIN entry, the right one");
}

#[test]
fn python_gsmmodem_receives_a_delivery_report_through_storage() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    // python-gsmmodem sets +CNMI <ds>=2: the report is stored, announced with +CDSI, then read
    // with +CPMS="SR", +CMGR and deleted with +CMGD.
    let sim = Sim::builder()
        .with_faults(|f| f.report_delay = Duration::from_millis(200))
        .start()
        .expect("start the simulator");
    let script = r#"
import sys
from gsmmodem.modem import GsmModem
modem = GsmModem(sys.argv[1], 115200)
modem.connect()
sms = modem.sendSms("+15552223333", "report please", waitForDeliveryReport=True, deliveryTimeout=10)
print("status=" + str(sms.status))
print("reference=" + str(sms.reference))
print("report_reference=" + str(sms.report.reference))
modem.close()
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(sim.link())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python-gsmmodem failed:\n{}\nlast commands: {:?}",
        String::from_utf8_lossy(&out.stderr),
        sim.commands(20)
    );
    // Stored (+CNMI <ds>=2), read and deleted: nothing is left on the SIM.
    assert_eq!(sim.counters()["reports"], 1);
    assert_eq!(sim.counters()["stored"], 0);
    // SentSms.DELIVERED is 1.
    assert!(stdout.contains("status=1"), "{stdout}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::to_string)
    };
    assert_eq!(field("reference="), field("report_reference="), "{stdout}");
}
