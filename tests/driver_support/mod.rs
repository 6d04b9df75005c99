//! Helpers shared by the `driver_*` integration tests: a driver with short timeouts over a
//! simulator's link, waiting for states, and sending with the caller-side retries a dispatcher
//! would do.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use simgate::modem::{ModemConfig, ModemEvent, ModemHandle, ModemState, ModemStatus, SendError};
use simgate::pdu::{EncodedPart, SubmitOptions, encode_submit};
use tokio::sync::mpsc;

/// A config with timeouts short enough for tests and long enough for a busy CI machine.
pub fn config(link: &Path) -> ModemConfig {
    let mut cfg = ModemConfig::new("test-modem", link);
    cfg.send_timeout = Duration::from_secs(4);
    cfg.command_timeout = Duration::from_secs(3);
    cfg
}

/// Starts a driver; returns it with its event receiver.
pub fn start(cfg: ModemConfig) -> (ModemHandle, mpsc::Receiver<ModemEvent>) {
    let (tx, rx) = mpsc::channel(64);
    (ModemHandle::spawn(cfg, tx), rx)
}

/// Waits until the status satisfies `pred`; panics with the last status after `timeout`.
pub async fn wait_for(
    handle: &ModemHandle,
    timeout: Duration,
    pred: impl Fn(&ModemStatus) -> bool,
) -> ModemStatus {
    let mut rx = handle.status();
    let result = tokio::time::timeout(timeout, async {
        loop {
            {
                let s = rx.borrow_and_update();
                if pred(&s) {
                    return s.clone();
                }
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone();
            }
        }
    })
    .await;
    match result {
        Ok(s) if pred(&s) => s,
        _ => panic!(
            "modem did not reach the expected status within {timeout:?}; last: {:?}",
            handle.status().borrow()
        ),
    }
}

/// Waits for `ModemState::Ready`.
pub async fn wait_ready(handle: &ModemHandle) -> ModemStatus {
    wait_for(handle, Duration::from_secs(20), |s| {
        s.state == ModemState::Ready
    })
    .await
}

/// The SMS-SUBMIT parts of `text`.
pub fn parts(to: &str, text: &str, status_report: bool, reference: u8) -> Vec<EncodedPart> {
    let opts = SubmitOptions {
        status_report,
        ..SubmitOptions::default()
    };
    encode_submit(to, text, &opts, reference).expect("encode")
}

/// Sends like a dispatcher: temporary errors, "not ready" and unknown outcomes are retried
/// (after a short pause) until `deadline`; a permanent error panics. Returns the TP-MRs and the
/// errors seen on the way.
pub async fn send_with_retries(
    handle: &ModemHandle,
    parts: Vec<EncodedPart>,
    deadline: Duration,
) -> (Vec<u8>, Vec<SendError>) {
    let end = tokio::time::Instant::now() + deadline;
    let mut errors = Vec::new();
    loop {
        match handle.send(parts.clone()).await {
            Ok(mrs) => return (mrs, errors),
            Err(SendError::Permanent(e)) => panic!("permanent send error: {e}"),
            Err(e) => {
                errors.push(e);
                if tokio::time::Instant::now() > end {
                    panic!("send did not succeed within {deadline:?}: {errors:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
