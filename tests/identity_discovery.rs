//! Modems found by identity: the real driver scans a glob of simulator links (real ptys), binds
//! the one with the configured IMEI or ICCID, and finds it again under another name after it
//! was "replugged".

mod driver_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use driver_support::{config, parts, send_with_retries, start, wait_for};
use simgate::modem::{DeviceIdentity, ModemConfig, ModemState};
use support::SimProcess;

const TO: &str = "+15551234567";
const IMEI_A: &str = "356938035643801";
const IMEI_B: &str = "356938035643802";

/// A driver config with no device path, found by `identity` among `<dir>/modem-*`.
fn by_identity(dir: &Path, identity: DeviceIdentity) -> ModemConfig {
    let mut cfg = config(Path::new(""));
    cfg.identity = Some(identity);
    cfg.scan = vec![format!("{}/modem-*", dir.display())];
    cfg
}

fn sim(dir: &Path, name: &str, args: &[&str]) -> SimProcess {
    SimProcess::start_at(
        &dir.join(format!("modem-{name}")),
        &dir.join(format!("{name}.jsonl")),
        args,
    )
}

async fn wait_ready_at(modem: &simgate::modem::ModemHandle, device: &Path) {
    let device = device.to_path_buf();
    wait_for(modem, Duration::from_secs(15), move |s| {
        s.state == ModemState::Ready && s.device.as_deref() == Some(device.as_path())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imei_picks_the_right_modem_and_follows_it_to_a_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sim_a = sim(d, "a", &["--imei", IMEI_A]);
    let mut sim_b = sim(d, "b", &["--imei", IMEI_B]);

    let (modem, _events) = start(by_identity(d, DeviceIdentity::Imei(IMEI_B.into())));
    wait_ready_at(&modem, &d.join("modem-b")).await;
    assert_eq!(modem.status().borrow().imei.as_deref(), Some(IMEI_B));
    modem
        .send(parts(TO, "to the modem with IMEI B", false, 1))
        .await
        .unwrap();
    let log = sim_b.wait_for_log_lines(1, Duration::from_secs(5));
    assert_eq!(log[0]["text"], "to the modem with IMEI B");
    assert!(sim_a.log_lines().is_empty(), "modem A got a text");

    // Unplug B; it comes back under another name, as a replugged ttyUSB0 becomes ttyUSB3. The
    // old name goes away as a USB tty's does (a killed simulator would leave its link, and the
    // kernel reuses pty numbers, so the stale link could point at the new pty).
    sim_b.kill();
    std::fs::remove_file(d.join("modem-b")).unwrap();
    wait_for(&modem, Duration::from_secs(10), |s| {
        s.state != ModemState::Ready
    })
    .await;
    let sim_c = sim(d, "c", &["--imei", IMEI_B]);
    wait_ready_at(&modem, &d.join("modem-c")).await;
    send_with_retries(
        &modem,
        parts(TO, "after the replug", false, 2),
        Duration::from_secs(10),
    )
    .await;
    let log = sim_c.wait_for_log_lines(1, Duration::from_secs(5));
    assert_eq!(log[0]["text"], "after the replug");
    assert!(sim_a.log_lines().is_empty(), "modem A got a text");
    modem.shutdown().await;
    // The driver let go of the port: it can be opened again at once.
    assert!(simgate::transport::open(&d.join("modem-c"), 115_200).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iccid_and_two_modems_bind_distinct_ports() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let iccid_a = "8944500102198304821";
    let iccid_b = "8944500102198304822";
    let sim_a = sim(d, "a", &["--iccid", iccid_a, "--profile", "simcom"]);
    let sim_b = sim(d, "b", &["--iccid", iccid_b, "--profile", "quectel"]);

    // Two modems of one process scanning the same glob: each must bind its own SIM, and
    // neither may steal (or disturb) the other's port.
    let mut cfg_a = by_identity(d, DeviceIdentity::Iccid(iccid_a.into()));
    cfg_a.id = "sim-a".into();
    let mut cfg_b = by_identity(d, DeviceIdentity::Iccid(iccid_b.into()));
    cfg_b.id = "sim-b".into();
    let (modem_a, _ea) = start(cfg_a);
    let (modem_b, _eb) = start(cfg_b);
    wait_ready_at(&modem_a, &d.join("modem-a")).await;
    wait_ready_at(&modem_b, &d.join("modem-b")).await;
    send_with_retries(
        &modem_a,
        parts(TO, "via A", false, 1),
        Duration::from_secs(10),
    )
    .await;
    send_with_retries(
        &modem_b,
        parts(TO, "via B", false, 2),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        sim_a.wait_for_log_lines(1, Duration::from_secs(5))[0]["text"],
        "via A"
    );
    assert_eq!(
        sim_b.wait_for_log_lines(1, Duration::from_secs(5))[0]["text"],
        "via B"
    );
    assert_eq!(sim_a.log_lines().len(), 1);
    assert_eq!(sim_b.log_lines().len(), 1);
    modem_a.shutdown().await;
    modem_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_and_identity_together_bind_only_when_they_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _sim_a = sim(d, "a", &["--imei", IMEI_A]);
    let link_a: PathBuf = d.join("modem-a");

    // The identity is at the named device: bound.
    let mut cfg = by_identity(d, DeviceIdentity::Imei(IMEI_A.into()));
    cfg.device = link_a.clone();
    let (modem, _events) = start(cfg);
    wait_ready_at(&modem, &link_a).await;
    modem.shutdown().await;

    // Another modem sits at the named device: never bound, even though the scan glob would
    // find nothing else either.
    let mut cfg = by_identity(d, DeviceIdentity::Imei(IMEI_B.into()));
    cfg.device = link_a.clone();
    let (modem, _events) = start(cfg);
    let mut rx = modem.status();
    let outcome = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            if rx.borrow_and_update().state != ModemState::Disconnected {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        outcome.is_err(),
        "bound a modem with the wrong IMEI: {:?}",
        modem.status().borrow()
    );
    assert_eq!(modem.status().borrow().device, None);
    modem.shutdown().await;
}
