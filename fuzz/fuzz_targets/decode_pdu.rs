//! Any bytes through the PDU decoder: it must return, never panic. What it accepts must be a PDU
//! through and through:
//! - the bytes end where the last field ends, so two more zero bytes are refused (one `00`
//!   after a report's TP-ST is a valid TP-PI announcing nothing), and the same bytes
//!   with the TPDU length they really have decode through `decode_announced` too;
//! - every timestamp is a date a clock can show (month 1..=12, a day the month has, 0..=23 h);
//! - a DELIVER or STATUS-REPORT re-encodes to bytes that decode again and then re-encode to the
//!   very same bytes, and a report in the encoder's own form (no SMSC, first octet 0x06, numeric
//!   recipient, no TP-PI, no "minus zero" time zone) re-encodes to exactly the input.
//!
//! Numeric addresses must survive unchanged (the simulator relies on that for `+CDS`).
//! Alphanumeric addresses may normalise once (an unknown escape decodes to its default
//! character), so for them only the second pass must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu::{self, AddressKind, Pdu, Timestamp, Validity};

fn plausible(t: &Timestamp) -> bool {
    let leap = t.year % 4 == 0 && (t.year % 100 != 0 || t.year % 400 == 0);
    let last_day = match t.month {
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 31,
    };
    (1..=12).contains(&t.month)
        && (1..=last_day).contains(&t.day)
        && t.hour < 24
        && t.minute < 60
        && t.second < 60
}

/// The form `encode_status_report` writes, byte for byte.
fn canonical_report(bytes: &[u8]) -> bool {
    let [0x00, 0x06, _mr, digits, toa, rest @ ..] = bytes else {
        return false;
    };
    let addr_len = usize::from(*digits).div_ceil(2);
    if toa & 0x70 == 0x50 || rest.len() != addr_len + 15 {
        return false;
    }
    let padded = digits % 2 == 0 || rest[addr_len - 1] >> 4 == 0x0F;
    let no_minus_zero = |tz: u8| tz & 0xF7 != 0 || tz & 0x08 == 0;
    padded && no_minus_zero(rest[addr_len + 6]) && no_minus_zero(rest[addr_len + 13])
}

fn reencode(p: &Pdu) -> Option<Vec<u8>> {
    match p {
        Pdu::Deliver(d) => pdu::encode_deliver(d).ok().map(|e| e.bytes),
        Pdu::StatusReport(sr) => Some(pdu::encode_status_report(sr).bytes),
        Pdu::Submit(_) => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = pdu::decode(data) else {
        return;
    };
    let mut longer = data.to_vec();
    longer.extend([0x00, 0x00]);
    assert!(pdu::decode(&longer).is_err(), "trailing bytes were accepted");
    let tpdu_len = data.len() - 1 - usize::from(data[0]);
    assert_eq!(pdu::decode_announced(data, tpdu_len).as_ref(), Ok(&decoded));
    assert!(pdu::decode_announced(data, tpdu_len + 1).is_err());

    match &decoded {
        Pdu::Submit(s) => {
            if let Some(Validity::Absolute(t)) = &s.validity {
                assert!(plausible(t), "{t:?}");
            }
        }
        Pdu::Deliver(d) => assert!(plausible(&d.sc_timestamp), "{:?}", d.sc_timestamp),
        Pdu::StatusReport(sr) => {
            assert!(plausible(&sr.sc_timestamp), "{:?}", sr.sc_timestamp);
            assert!(plausible(&sr.discharge_time), "{:?}", sr.discharge_time);
        }
    }

    let Some(once_bytes) = reencode(&decoded) else {
        return;
    };
    let once = pdu::decode(&once_bytes)
        .unwrap_or_else(|e| panic!("re-encoding of {decoded:?} does not decode: {e}"));
    assert_eq!(reencode(&once).as_deref(), Some(once_bytes.as_slice()));

    if let (Pdu::StatusReport(sr), Pdu::StatusReport(back)) = (&decoded, &once) {
        let alphanumeric = |a: &Option<pdu::Address>| {
            a.as_ref()
                .is_some_and(|a| a.kind == AddressKind::Alphanumeric)
        };
        if sr.recipient.kind != AddressKind::Alphanumeric && !alphanumeric(&sr.smsc) {
            assert_eq!(back, sr);
        }
        if canonical_report(data) {
            assert_eq!(once_bytes, data, "a canonical report re-encoded differently");
        }
    }
});
