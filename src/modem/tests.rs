//! The driver over an in-memory pipe with a scripted modem: the paths the simulator does not
//! exercise (`+CSMS` service 1 and `AT+CNMA`, the `AT+CNMI` fallback, `+CMTI` read-back,
//! the Huawei quirk, vendor `+CMS ERROR` codes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use super::*;
use crate::pdu::{SubmitOptions, encode_submit};

/// A status report for TP-MR 214 to +31628870634, delivered (a published example PDU).
const CDS_PDU: &str = "0006D60B911326880736F4111011719551401110117195714000";
/// An SMS-DELIVER "How are you?" from +31641600986.
const DELIVER_PDU: &str =
    "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07";

/// How the scripted modem behaves.
#[derive(Clone)]
struct Script {
    /// `+CSMS?` service.
    csms: u8,
    /// The `+CMS ERROR` the next `AT+CMGS` payload gets, if any.
    cmgs_error: Option<u16>,
}

/// Answers one command line; `None` for `AT+CMGS`, which opens a prompt.
fn answer(script: &Script, line: &str) -> Option<String> {
    let ok = |info: &str| Some(format!("\r\n{info}\r\n\r\nOK\r\n"));
    match line {
        _ if line.starts_with("AT+CMGS=") => None,
        "AT+CGMI" => ok("huawei"),
        "AT+CGMM" => ok("E3372"),
        "AT+CGMR" => ok("22.328.62.00.00"),
        "AT+CGSN" => ok("867223021234563"),
        "AT+CPIN?" => ok("+CPIN: READY"),
        "AT+CSMS?" => ok(&format!("+CSMS: {},1,1,1", script.csms)),
        // The first variant is refused, as some modems do.
        "AT+CNMI=2,1,0,1,0" => Some("\r\n+CMS ERROR: 303\r\n".into()),
        "AT+CREG?" => ok("+CREG: 1,5"),
        "AT+COPS?" => ok("+COPS: 0,0,\"Fake Net\",7"),
        "AT+CSQ" => ok("+CSQ: 10,99"),
        "AT+CMGR=3" => ok(&format!("+CMGR: 0,,30\r\n{DELIVER_PDU}")),
        // A storage that numbers from 0, holding one text from before start-up.
        "AT+CMGL=4" => ok(&format!("+CMGL: 0,1,,30\r\n{DELIVER_PDU}")),
        // The length says 24 but 30 TPDU octets follow.
        "AT+CMGR=4" => ok(&format!("+CMGR: 0,,24\r\n{DELIVER_PDU}")),
        "AT+CNMA" if script.csms == 1 => Some("\r\nOK\r\n".into()),
        "AT+CNMA" => Some("\r\n+CMS ERROR: 340\r\n".into()),
        _ => Some("\r\nOK\r\n".into()),
    }
}

/// Runs the scripted modem on `io`: records every command line, answers it, and writes the
/// URCs the test pushes.
async fn fake_modem(
    mut io: DuplexStream,
    script: Script,
    seen: Arc<Mutex<Vec<String>>>,
    mut urcs: mpsc::Receiver<String>,
) {
    let mut line = Vec::new();
    let mut in_payload = false;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            urc = urcs.recv() => match urc {
                Some(urc) => io.write_all(urc.as_bytes()).await.unwrap(),
                None => return,
            },
            n = io.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                for &b in &buf[..n] {
                    match b {
                        0x1A if in_payload => {
                            in_payload = false;
                            line.clear();
                            let reply = match script.cmgs_error {
                                Some(code) => format!("\r\n+CMS ERROR: {code}\r\n"),
                                None => "\r\n+CMGS: 77\r\n\r\nOK\r\n".to_string(),
                            };
                            io.write_all(reply.as_bytes()).await.unwrap();
                        }
                        0x1B => line.clear(),
                        b'\r' if !in_payload => {
                            let text = String::from_utf8_lossy(&line).trim().to_string();
                            line.clear();
                            if text.is_empty() {
                                continue;
                            }
                            seen.lock().unwrap().push(text.clone());
                            match answer(&script, &text) {
                                Some(reply) => io.write_all(reply.as_bytes()).await.unwrap(),
                                None => {
                                    in_payload = true;
                                    io.write_all(b"\r\n> ").await.unwrap();
                                }
                            }
                        }
                        _ => line.push(b),
                    }
                }
            }
        }
    }
}

struct Harness {
    handle: ModemHandle,
    events: mpsc::Receiver<ModemEvent>,
    seen: Arc<Mutex<Vec<String>>>,
    urcs: mpsc::Sender<String>,
}

fn harness(script: Script) -> Harness {
    harness_with(script, false)
}

/// As [`harness`], with `store_inbound` set as given.
fn harness_with(script: Script, store_inbound: bool) -> Harness {
    let (ours, theirs) = tokio::io::duplex(4096);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (urc_tx, urc_rx) = mpsc::channel(8);
    tokio::spawn(fake_modem(theirs, script, seen.clone(), urc_rx));
    let mut port = Some(ours);
    let opener: driver::Opener = Box::new(move || {
        let opened = match port.take() {
            Some(p) => Ok(driver::Opened {
                port: Box::new(p),
                device: None,
                claim: None,
            }),
            None => Err("the fake modem was unplugged".into()),
        };
        Box::pin(async move { opened })
    });
    let mut cfg = ModemConfig::new("fake", "/dev/fake");
    cfg.command_timeout = Duration::from_secs(2);
    cfg.send_timeout = Duration::from_secs(2);
    cfg.store_inbound = store_inbound;
    let (tx, events) = mpsc::channel(8);
    Harness {
        handle: ModemHandle::spawn_with(cfg, tx, opener),
        events,
        seen,
        urcs: urc_tx,
    }
}

async fn ready(handle: &ModemHandle) -> ModemStatus {
    let mut rx = handle.status();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = rx.borrow_and_update().clone();
            if s.state == ModemState::Ready {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("ready in time")
}

async fn event(events: &mut mpsc::Receiver<ModemEvent>) -> ModemEvent {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event in time")
        .expect("channel open")
}

fn seen(h: &Harness) -> Vec<String> {
    h.seen.lock().unwrap().clone()
}

#[tokio::test]
async fn init_sequence_quirks_and_fallback() {
    let h = harness(Script {
        csms: 0,
        cmgs_error: None,
    });
    let status = ready(&h.handle).await;
    assert_eq!(status.manufacturer.as_deref(), Some("huawei"));
    assert_eq!(status.registration.as_deref(), Some("roaming"));
    assert_eq!(status.operator.as_deref(), Some("Fake Net"));
    assert_eq!(status.signal_dbm, Some(-93));
    let seen = seen(&h);
    let pos = |cmd: &str| {
        seen.iter()
            .position(|l| l == cmd)
            .unwrap_or_else(|| panic!("{cmd} not sent: {seen:?}"))
    };
    assert!(pos("AT") < pos("ATE0"));
    assert!(pos("ATE0") < pos("AT+CMEE=1"));
    assert!(
        pos("AT+CGMI") < pos("AT^CURC=0"),
        "quirk after identification"
    );
    assert!(pos("AT+CPIN?") < pos("AT+CMGF=0"));
    assert!(
        pos("AT+CNMI=2,1,0,1,0") < pos("AT+CNMI=1,1,0,1,0"),
        "fallback"
    );
    assert!(pos("AT+CMGF=0") < pos("AT+CREG?"));
    h.handle.shutdown().await;
}

#[tokio::test]
async fn status_reports_are_acked_only_with_csms_1() {
    for csms in [0u8, 1] {
        let mut h = harness(Script {
            csms,
            cmgs_error: None,
        });
        ready(&h.handle).await;
        h.urcs
            .send(format!("\r\n+CDS: 25\r\n{CDS_PDU}\r\n"))
            .await
            .unwrap();
        match event(&mut h.events).await {
            ModemEvent::StatusReport {
                message_reference,
                recipient,
                outcome,
                ..
            } => {
                assert_eq!(message_reference, 214);
                assert_eq!(recipient, "+31628870634");
                assert_eq!(outcome, DeliveryOutcome::Delivered);
            }
            other => panic!("{other:?}"),
        }
        // A command after the event proves the ack (if any) went out before it.
        let parts = encode_submit("+15551234567", "x", &SubmitOptions::default(), 0).unwrap();
        h.handle.send(parts).await.unwrap();
        let acked = seen(&h).iter().any(|l| l == "AT+CNMA");
        assert_eq!(acked, csms == 1, "csms {csms}");
        h.handle.shutdown().await;
    }
}

#[tokio::test]
async fn pdus_that_disagree_with_the_announced_length_are_dropped() {
    let mut h = harness(Script {
        csms: 0,
        cmgs_error: None,
    });
    ready(&h.handle).await;
    // Announced one octet short or long, a report with a byte after what its TP-PI announces,
    // a stored text with the wrong length: no event for any.
    for urc in [
        format!("\r\n+CDS: 24\r\n{CDS_PDU}\r\n"),
        format!("\r\n+CDS: 27\r\n{CDS_PDU}0000\r\n"),
        format!("\r\n+CDS: 25\r\n{CDS_PDU}00\r\n"),
        "\r\n+CMTI: \"SM\",4\r\n".to_string(),
    ] {
        h.urcs.send(urc).await.unwrap();
    }
    // The next well-formed report (TP-MR 215) is the first event.
    let next = CDS_PDU.replacen("D6", "D7", 1);
    h.urcs
        .send(format!("\r\n+CDS: 25\r\n{next}\r\n"))
        .await
        .unwrap();
    match event(&mut h.events).await {
        ModemEvent::StatusReport {
            message_reference, ..
        } => assert_eq!(message_reference, 215),
        other => panic!("{other:?}"),
    }
    assert!(seen(&h).contains(&"AT+CMGR=4".to_string()));
    h.handle.shutdown().await;
}

#[tokio::test]
async fn stored_texts_are_read_and_left_on_the_sim() {
    let mut h = harness(Script {
        csms: 0,
        cmgs_error: None,
    });
    ready(&h.handle).await;
    h.urcs.send("\r\n+CMTI: \"SM\",3\r\n".into()).await.unwrap();
    assert_eq!(
        event(&mut h.events).await,
        ModemEvent::Incoming {
            modem_id: "fake".into(),
            from: "+31641600986".into(),
            text: "How are you?".into(),
            split_units: None,
            sc_timestamp: "2002-08-26T19:37:41+00:00".into(),
            concat: None,
            custody: None,
        }
    );
    assert!(seen(&h).contains(&"AT+CMGR=3".to_string()));
    // A command after the event proves the driver finished with the notice: simgate stores no
    // inbound texts yet, so it must not delete one.
    let parts = encode_submit("+15551234567", "x", &SubmitOptions::default(), 0).unwrap();
    h.handle.send(parts).await.unwrap();
    assert!(
        !seen(&h).iter().any(|l| l.starts_with("AT+CMGD")),
        "{:?}",
        seen(&h)
    );
    h.handle.shutdown().await;
}

#[tokio::test]
async fn cms_errors_are_classified_and_counted() {
    for (code, temporary) in [(38u16, true), (1, false), (515, true), (304, false)] {
        let h = harness(Script {
            csms: 0,
            cmgs_error: Some(code),
        });
        ready(&h.handle).await;
        let parts = encode_submit("+15551234567", "x", &SubmitOptions::default(), 0).unwrap();
        let err = h.handle.send_detailed(parts).await.unwrap_err();
        assert!(err.sent.is_empty());
        match (&err.error, temporary) {
            (SendError::Temporary(_), true) | (SendError::Permanent(_), false) => {}
            other => panic!("code {code}: {other:?}"),
        }
        let status = h.handle.status().borrow().clone();
        assert_eq!((status.sent, status.failed), (0, 1));
        assert_eq!(status.state, ModemState::Ready, "the modem stays usable");
        h.handle.shutdown().await;
    }
}

/// Waits until the fake modem saw `line`.
async fn saw(h: &Harness, line: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen(h).iter().any(|l| l == line) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never saw {line}: {:?}", seen(h)));
}

fn custody_of(event: ModemEvent) -> Custody {
    match event {
        ModemEvent::Incoming {
            custody: Some(c), ..
        } => c,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn with_inbound_storage_texts_are_deleted_only_once_stored() {
    let mut h = harness_with(
        Script {
            csms: 0,
            cmgs_error: None,
        },
        true,
    );
    // The text stored before start-up, at index 0.
    let listed = custody_of(event(&mut h.events).await);
    assert!(seen(&h).contains(&"AT+CMGL=4".to_string()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !seen(&h).iter().any(|l| l.starts_with("AT+CMGD")),
        "{:?}",
        seen(&h)
    );
    listed.stored();
    saw(&h, "AT+CMGD=0").await;
    // A text the store could not take stays on the SIM.
    ready(&h.handle).await;
    h.urcs.send("\r\n+CMTI: \"SM\",3\r\n".into()).await.unwrap();
    custody_of(event(&mut h.events).await).failed();
    let parts = encode_submit("+15551234567", "x", &SubmitOptions::default(), 0).unwrap();
    h.handle.send(parts).await.unwrap();
    assert!(
        !seen(&h).contains(&"AT+CMGD=3".to_string()),
        "{:?}",
        seen(&h)
    );
    h.handle.shutdown().await;
}

#[tokio::test]
async fn with_inbound_storage_a_routed_text_is_acknowledged_only_once_stored() {
    let mut h = harness_with(
        Script {
            csms: 1,
            cmgs_error: None,
        },
        true,
    );
    custody_of(event(&mut h.events).await).stored();
    saw(&h, "AT+CMGD=0").await;
    ready(&h.handle).await;
    h.urcs
        .send(format!("\r\n+CMT: ,30\r\n{DELIVER_PDU}\r\n"))
        .await
        .unwrap();
    let c = custody_of(event(&mut h.events).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!seen(&h).contains(&"AT+CNMA".to_string()), "{:?}", seen(&h));
    c.stored();
    saw(&h, "AT+CNMA").await;
    h.handle.shutdown().await;
}
