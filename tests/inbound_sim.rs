//! Inbound texts are never destroyed unread: without `[inbound] enabled = true` simgate stores
//! none, so a text the modem announces with `+CMTI` is read but left on the SIM (no `AT+CMGD`;
//! with storage on, tests/inbound_store.rs and tests/inbound_delivery.rs cover the deletion). A real `simgate serve`
//! drives a real `simgate sim` on a pty whose network delivers a text; once the daemon has
//! logged that it saw it, the test stops the daemon, opens the port itself and lists the SIM.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::time::{Duration, Instant};

use daemon::spawn_serve;
use support::SimProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::SerialPortBuilderExt;

const SENDER: &str = "+15550001111";
const TEXT: &str = "Hello from a phone 4711";

/// Sends `line` and returns everything up to the final `OK` or `ERROR`.
async fn command(port: &mut tokio_serial::SerialStream, line: &str) -> String {
    port.write_all(format!("{line}\r").as_bytes())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.ends_with("\r\nOK\r\n") || text.contains("ERROR") {
            return text;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no final result to {line:?}: {text:?}");
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) = tokio::time::timeout(left, port.read(&mut buf)).await {
            got.extend_from_slice(&buf[..n]);
        }
    }
}

#[tokio::test]
async fn a_text_announced_with_cmti_stays_on_the_sim() {
    let sim = SimProcess::start(&[
        "--incoming",
        &format!("{SENDER}:{TEXT}"),
        "--incoming-after",
        "0.2",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let link = sim.link.to_str().unwrap().to_owned();
    let (mut child, _listen, stderr_path) = spawn_serve(
        &data,
        &["--device", &link],
        None,
        // trace: the AT traffic, to see which commands the daemon sent.
        &[("RUST_LOG", "simgate=trace,info")],
    );
    let log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The driver's "incoming text" line: it has read and decoded the text.
    while !log().contains("incoming text modem=") {
        assert!(
            Instant::now() < deadline,
            "the daemon never saw the text:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for whatever the driver does next with the notice (it used to delete the text).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success(), "{}", log());
    let mut port = tokio_serial::new(&link, 115_200)
        .open_native_async()
        .unwrap_or_else(|e| panic!("open {link}: {e}"));
    assert!(command(&mut port, "AT+CMGF=1").await.ends_with("OK\r\n"));
    let listing = command(&mut port, "AT+CMGL=\"ALL\"").await;
    assert!(listing.contains(&format!("\"{SENDER}\"")), "{listing:?}");
    assert!(listing.contains(TEXT), "{listing:?}");
    let storage = command(&mut port, "AT+CPMS?").await;
    assert!(storage.contains("+CPMS: \"SM\",1,"), "{storage:?}");
    let log = log();
    assert!(log.contains("incoming text left on the SIM"), "{log}");
    assert!(log.contains("AT+CMGR="), "the daemon read the text:\n{log}");
    assert!(!log.contains("AT+CMGD"), "and did not delete it:\n{log}");
    assert!(!log.contains(TEXT), "no text content in the log:\n{log}");
}
