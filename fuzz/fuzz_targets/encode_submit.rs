//! Arbitrary text through the SUBMIT encoder: every part decodes, and the parts' texts
//! reassemble to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::pdu::{self, Pdu, SubmitOptions};

fuzz_target!(|text: &str| {
    let Ok(parts) = pdu::encode_submit("+15551234567", text, &SubmitOptions::default(), 1) else {
        return;
    };
    let mut joined = String::new();
    for p in &parts {
        match pdu::decode(&p.bytes) {
            Ok(Pdu::Submit(s)) => joined.push_str(&s.text),
            other => panic!("part does not decode as SUBMIT: {other:?}"),
        }
    }
    assert_eq!(joined, text);
});
