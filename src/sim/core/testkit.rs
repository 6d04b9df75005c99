//! What the core's unit tests share: a fixed wall clock, a default configuration and ways to
//! feed a core and read what it wrote.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use super::{Action, Core};
use crate::pdu::{SubmitOptions, encode_submit};
use crate::sim::{Faults, SimOptions};

pub const WALL: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

pub fn cfg() -> SimOptions {
    SimOptions::default()
}

/// The default options with these faults.
pub fn faulty(faults: Faults) -> SimOptions {
    SimOptions { faults, ..cfg() }
}

pub fn writes(actions: &[Action]) -> String {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

/// Feeds `input` at time `now_ms` and returns what was written.
pub fn run(core: &mut Core, input: &str, now_ms: u64) -> String {
    writes(&core.feed(input.as_bytes(), Duration::from_millis(now_ms), WALL))
}

/// A core with echo off, numeric errors.
pub fn quiet(cfg: SimOptions) -> Core {
    let mut core = Core::new(cfg);
    core.boot(Duration::ZERO);
    assert_eq!(run(&mut core, "ATE0\r", 0), "ATE0\r\r\nOK\r\n");
    assert_eq!(run(&mut core, "AT+CMEE=1\r", 0), "\r\nOK\r\n");
    core
}

pub fn check(core: &mut Core, input: &str, expect: &str) {
    assert_eq!(run(core, input, 0), expect, "input {input:?}");
}

pub fn pdu(to: &str, text: &str, srr: bool) -> (usize, String) {
    let opts = SubmitOptions {
        status_report: srr,
        ..SubmitOptions::default()
    };
    let p = &encode_submit(to, text, &opts, 1).unwrap()[0];
    (p.tpdu_len, p.to_hex())
}
