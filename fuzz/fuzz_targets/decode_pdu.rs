//! Any bytes through the PDU decoder: it must return, never panic; a status report it accepts
//! must survive encode → decode unchanged (the simulator relies on that for `+CDS`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu::{self, Pdu};

fuzz_target!(|data: &[u8]| {
    if let Ok(Pdu::StatusReport(sr)) = pdu::decode(data) {
        let again = pdu::decode(&pdu::encode_status_report(&sr).bytes);
        assert_eq!(again, Ok(Pdu::StatusReport(sr)));
    }
});
