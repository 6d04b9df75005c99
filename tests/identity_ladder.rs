//! The recovery ladder against a simulator that hangs (`--hang-after N --hang-for SECS`): the
//! real driver logs re-sync, CFUN reset, USB reset (skipped: a pty is no USB device) and
//! re-discovery, in that order, and sends again once the modem answers.

mod driver_support;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use driver_support::{config, parts, send_with_retries, start, wait_for, wait_ready};
use simgate::modem::ModemState;
use support::SimProcess;

/// Everything the driver logged, shared with the subscriber installed once per test binary.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("simgate=info"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .init();
        log
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The rung names of the "recovery rung" lines of `modem`, in order, with their lines.
fn rungs(log: &str, modem: &str) -> Vec<(String, String)> {
    log.lines()
        .filter(|l| l.contains("recovery rung") && l.contains(&format!("modem={modem}")))
        .filter_map(|l| {
            let rung = l.split("rung=").nth(1)?.split_whitespace().next()?;
            Some((rung.trim_matches('"').to_string(), l.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_modem_climbs_the_ladder_and_comes_back() {
    let log = captured();
    // Hangs a few commands into the first initialisation, for long enough that re-sync and
    // the CFUN reset both fail and only reopening the port (after the hang) brings it back.
    let sim = SimProcess::start(&["--hang-after", "5", "--hang-for", "12"]);
    let mut cfg = config(&sim.link);
    cfg.id = "ladder".into();
    cfg.command_timeout = Duration::from_secs(1);
    let (modem, _events) = start(cfg);
    wait_for(&modem, Duration::from_secs(25), |s| {
        s.state == ModemState::Ready
    })
    .await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let seen = rungs(&text, "ladder");
    for (_, line) in &seen {
        eprintln!("{line}");
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.starts_with(&["re-sync", "cfun-reset", "usb-reset", "re-discovery"]),
        "rungs out of order: {names:?}\n{text}"
    );
    assert!(seen[0].1.contains("failed"), "{}", seen[0].1);
    assert!(seen[1].1.contains("failed"), "{}", seen[1].1);
    assert!(
        seen[2].1.contains("skipped") && seen[2].1.contains("not a USB device"),
        "{}",
        seen[2].1
    );
    assert!(seen[3].1.contains("reopening"), "{}", seen[3].1);
    assert!(
        names.last() == Some(&"re-discovery") && seen.last().unwrap().1.contains("open again"),
        "the last rung must be the reopen that worked: {names:?}"
    );

    // Back in service: a text goes out, and the ladder starts over.
    send_with_retries(
        &modem,
        parts("+15551234567", "after the hang", false, 1),
        Duration::from_secs(10),
    )
    .await;
    let lines = sim.wait_for_log_lines(1, Duration::from_secs(5));
    assert_eq!(lines[0]["text"], "after the hang");
    modem.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_hang_is_healed_by_the_first_rung() {
    let log = captured();
    let sim = SimProcess::start(&["--hang-after", "5", "--hang-for", "1.5"]);
    let mut cfg = config(&sim.link);
    cfg.id = "short-hang".into();
    cfg.command_timeout = Duration::from_secs(1);
    let (modem, _events) = start(cfg);
    wait_ready(&modem).await;
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let seen = rungs(&text, "short-hang");
    assert_eq!(seen.len(), 1, "one rung expected: {seen:?}\n{text}");
    assert_eq!(seen[0].0, "re-sync");
    assert!(seen[0].1.contains("modem answers again"), "{}", seen[0].1);
    send_with_retries(
        &modem,
        parts("+15551234567", "after a short hang", false, 1),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        sim.wait_for_log_lines(1, Duration::from_secs(5))[0]["text"],
        "after a short hang"
    );
    modem.shutdown().await;
}
