//! Arbitrary strings through the hex front door of the decoder (`simgate pdu decode`): it must
//! return, never panic, and a string it accepts is the whole PDU, so the same string with two
//! more octets (`0000`) is refused (a decoder that stops reading early would take any buffer that
//! starts like a PDU for one). Two octets, because one `00` after a report's TP-ST is a valid
//! TP-PI announcing nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu;

fuzz_target!(|s: &str| {
    if pdu::decode_hex(s).is_ok() {
        let longer = format!("{}0000", s.trim());
        assert!(pdu::decode_hex(&longer).is_err(), "{longer:?} was accepted");
    }
});
