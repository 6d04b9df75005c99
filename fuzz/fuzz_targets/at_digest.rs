//! Any bytes through the AT framer and URC router (`simgate::at::Digester`), cut into chunks at
//! fuzzer-chosen points and with or without a command in flight. It must never panic, every call
//! to `digest` must make progress (a bounded number of items per fed byte, so the engine's read
//! loop cannot spin), no line it hands out may carry a CR or LF, and a `Response` can only end a
//! command that was in flight (TS 27.007 §5.7 / §9.2 final result codes close exactly one command).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::at::{Digested, Digester};

/// Commands the driver really sends, chosen by the first input byte, so the fuzzer reaches the
/// echo, information-line and `> ` prompt paths as well as the idle URC path.
const COMMANDS: &[(&str, bool)] = &[
    ("AT", false),
    ("AT+CSQ", false),
    ("AT+CREG?", false),
    ("AT+CPIN?", false),
    ("AT+CMGS=23", true),
    ("AT^SYSINFO", false),
    ("AT+CNMA=0,1", false),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut digester = Digester::new();
    let mut in_flight = false;
    if selector & 0x80 != 0 {
        let (command, prompt) = COMMANDS[usize::from(selector & 0x7f) % COMMANDS.len()];
        digester.begin(command, prompt);
        in_flight = true;
    }
    // The second byte picks the chunk size, as a serial port hands out reads of any length.
    let Some((&chunk, body)) = rest.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 16) + 1;
    for piece in body.chunks(chunk) {
        digester.feed(piece);
        // Each item consumes at least one byte (a line end or the prompt), so more items than
        // buffered bytes plus one means a loop that does not advance.
        let budget = digester.pending_bytes() + 2;
        let mut items = 0;
        loop {
            let item = digester.digest();
            items += 1;
            assert!(items <= budget, "digest made no progress");
            match item {
                Digested::Incomplete => break,
                Digested::Prompt => {
                    assert!(in_flight, "prompt without a command in flight");
                    digester.payload_sent("0011000B915155214365F70000AA01311A");
                }
                Digested::Response(r) => {
                    assert!(in_flight, "response without a command in flight");
                    in_flight = false;
                    for line in &r.lines {
                        assert!(!line.contains(['\r', '\n']), "line end in {line:?}");
                    }
                }
                Digested::Overflow { .. } => {
                    assert!(in_flight, "overflow without a command in flight");
                    in_flight = false;
                }
                Digested::Urc(u) => {
                    assert!(!u.line.contains(['\r', '\n']), "line end in {:?}", u.line);
                    if let Some(pdu) = &u.pdu {
                        assert!(!pdu.contains(['\r', '\n']), "line end in {pdu:?}");
                    }
                }
            }
            assert_eq!(digester.in_flight(), in_flight, "in-flight state diverged");
        }
    }
});
