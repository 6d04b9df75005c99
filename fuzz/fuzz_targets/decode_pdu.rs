//! Any bytes through the PDU decoder: it must return, never panic. A status report it accepts
//! must re-encode to something it decodes again, and numeric addresses must survive unchanged
//! (the simulator relies on that for `+CDS`). Alphanumeric addresses may normalise once (an
//! unknown escape decodes to its default character), so for them the second pass must be stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu::{self, AddressKind, Pdu};

fuzz_target!(|data: &[u8]| {
    let Ok(Pdu::StatusReport(sr)) = pdu::decode(data) else {
        return;
    };
    let Ok(Pdu::StatusReport(once)) = pdu::decode(&pdu::encode_status_report(&sr).bytes) else {
        panic!("re-encoded status report does not decode: {sr:?}");
    };
    let alphanumeric = |a: &Option<pdu::Address>| {
        a.as_ref()
            .is_some_and(|a| a.kind == AddressKind::Alphanumeric)
    };
    if sr.recipient.kind != AddressKind::Alphanumeric && !alphanumeric(&sr.smsc) {
        assert_eq!(once, sr);
    }
    let twice = pdu::decode(&pdu::encode_status_report(&once).bytes);
    assert_eq!(twice, Ok(Pdu::StatusReport(once)));
});
