//! Arbitrary strings through the hex front door of the decoder (`simgate pdu decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu;

fuzz_target!(|s: &str| {
    let _ = pdu::decode_hex(s);
});
