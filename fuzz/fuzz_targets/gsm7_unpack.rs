//! Septet unpacking at every fill-bit offset and count: it must never panic, and what it
//! unpacks must pack and unpack to the same septets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu::gsm7;

fuzz_target!(|data: &[u8]| {
    let [fill, count, octets @ ..] = data else {
        return;
    };
    let fill = usize::from(*fill % 7);
    let count = usize::from(*count);
    if let Some(septets) = gsm7::unpack(octets, fill, count) {
        let repacked = gsm7::pack(&septets, fill);
        assert_eq!(
            gsm7::unpack(&repacked, fill, count).as_ref(),
            Some(&septets)
        );
        // Decoding text never fails, whatever the septets.
        let _ = gsm7::decode(&septets);
    }
});
