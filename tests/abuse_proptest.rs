//! Issue 6.5 in `cargo test`: the properties the fuzz targets `at_digest`, `json_body` and
//! `json_msisdn` check, as proptest cases so every CI run exercises them. Arbitrary bytes (and
//! plausible modem lines mixed with garbage) into the AT digester never panic, always make
//! progress and never hand out a line with a line end; arbitrary JSON into the request bodies
//! never panics; the E.164 validator accepts exactly `+` and 8 to 15 digits without a leading 0
//! (ITU-T E.164 §6).

use proptest::prelude::*;
use serde_json::Value;
use simgate::at::{Digested, Digester};
use simgate::http::dto::{CreateOtpBody, SendTextBody, VerifyBody, VerifyByNumberBody};
use simgate::model::Msisdn;

/// Commands the driver sends, so the echo, information-line and prompt paths are reached.
const COMMANDS: &[(&str, bool)] = &[
    ("AT", false),
    ("AT+CSQ", false),
    ("AT+CREG?", false),
    ("AT+CMGS=23", true),
    ("AT^SYSINFO", false),
];

/// Lines a modem really sends (TS 27.007 / TS 27.005 answers and URCs), to mix with garbage.
const LINES: &[&str] = &[
    "OK",
    "ERROR",
    "+CME ERROR: 10",
    "+CMS ERROR: 38",
    "+CMS ERROR: 999999999999",
    "+CSQ: 17,99",
    "+CREG: 0,1",
    "+CREG: 1",
    "+CMGS: 12",
    "+CDS: 25",
    "0791447758100650060C9144775810065021011231450021011231450000",
    "+CMTI: \"SM\",3",
    "^RSSI:14",
    "RING",
    "> ",
    ">",
    "AT+CSQ",
    "\u{1a}",
    "\u{1b}",
    "",
];

/// Feeds `data` in pieces of `chunk` bytes and checks the digester's invariants; returns the
/// number of items it produced.
fn digest_all(command: Option<(&str, bool)>, data: &[u8], chunk: usize) -> usize {
    let mut d = Digester::new();
    let mut in_flight = false;
    if let Some((c, prompt)) = command {
        d.begin(c, prompt);
        in_flight = true;
    }
    let mut produced = 0;
    for piece in data.chunks(chunk.max(1)) {
        d.feed(piece);
        let budget = d.pending_bytes() + 2;
        let mut items = 0;
        loop {
            let item = d.digest();
            items += 1;
            assert!(items <= budget, "digest made no progress");
            match item {
                Digested::Incomplete => break,
                Digested::Prompt => {
                    assert!(in_flight, "prompt without a command in flight");
                    d.payload_sent("0011000B915155214365F70000AA01311A");
                }
                Digested::Response(r) => {
                    assert!(in_flight, "response without a command in flight");
                    in_flight = false;
                    for l in &r.lines {
                        assert!(!l.contains(['\r', '\n']), "{l:?}");
                    }
                }
                Digested::Overflow { .. } => {
                    assert!(in_flight, "overflow without a command in flight");
                    in_flight = false;
                }
                Digested::Urc(u) => {
                    assert!(!u.line.contains(['\r', '\n']), "{:?}", u.line);
                    assert!(!u.line.is_empty(), "empty URC");
                    if let Some(p) = &u.pdu {
                        assert!(!p.contains(['\r', '\n']), "{p:?}");
                    }
                }
            }
            produced += 1;
            assert_eq!(d.in_flight(), in_flight);
        }
    }
    produced
}

/// A modem's output: real lines and random bytes, joined by any mix of line ends.
fn modem_output() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(LINES).prop_map(|l| l.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    let end = prop::sample::select(vec!["\r\n", "\r", "\n", "", "\r\r\n"]);
    prop::collection::vec((piece, end), 0..40).prop_map(|parts| {
        parts
            .into_iter()
            .flat_map(|(mut p, e)| {
                p.extend_from_slice(e.as_bytes());
                p
            })
            .collect()
    })
}

/// Arbitrary JSON values, nested a few levels, with the body fields' names likely as keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".*".prop_map(Value::String),
        "\\+[0-9]{0,17}".prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "to",
            "code",
            "text",
            "ttl_seconds",
            "code_length",
            "template",
            "origin",
            "app_hash",
        ])
        .prop_map(str::to_owned),
        ".{0,8}",
    ];
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn check_number(to: &str) {
    if let Ok(n) = Msisdn::parse(to) {
        assert_eq!(n.as_str(), to);
        let d = to.strip_prefix('+').expect("accepted numbers start with +");
        assert!((8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
        assert!(!d.starts_with('0'));
    }
}

fn parse_bodies(bytes: &[u8]) {
    if let Ok(b) = serde_json::from_slice::<CreateOtpBody>(bytes) {
        check_number(&b.to);
        let to = b.to.clone();
        let create: simgate::service::CreateOtp = b.into();
        assert_eq!(create.to, to);
    }
    if let Ok(b) = serde_json::from_slice::<SendTextBody>(bytes) {
        check_number(&b.to);
    }
    if let Ok(b) = serde_json::from_slice::<VerifyByNumberBody>(bytes) {
        check_number(&b.to);
    }
    let _ = serde_json::from_slice::<VerifyBody>(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn digester_survives_arbitrary_bytes(
        command in prop::option::of(prop::sample::select(COMMANDS)),
        data in prop::collection::vec(any::<u8>(), 0..512),
        chunk in 1usize..64,
    ) {
        digest_all(command, &data, chunk);
    }

    #[test]
    fn digester_survives_modem_lines_mixed_with_garbage(
        command in prop::option::of(prop::sample::select(COMMANDS)),
        data in modem_output(),
        chunk in 1usize..64,
    ) {
        // Chunking must not change what comes out: one byte at a time and all at once produce
        // the same number of items.
        let whole = digest_all(command, &data, data.len().max(1));
        let bytewise = digest_all(command, &data, 1);
        let chunked = digest_all(command, &data, chunk);
        prop_assert_eq!(whole, bytewise);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn request_bodies_survive_arbitrary_json(v in json_value()) {
        parse_bodies(v.to_string().as_bytes());
    }

    #[test]
    fn request_bodies_survive_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_bodies(&bytes);
    }

    #[test]
    fn msisdn_accepts_exactly_e164(s in prop_oneof![".{0,20}", "\\+?[0-9]{0,18}", "[+0-9 ()٠-٩-]{0,18}"]) {
        let expected = s.strip_prefix('+').is_some_and(|d| {
            (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
        });
        match Msisdn::parse(&s) {
            Ok(n) => {
                prop_assert!(expected, "accepted {:?}", s);
                prop_assert_eq!(n.as_str(), s.as_str());
            }
            Err(reason) => {
                prop_assert!(!expected, "refused {:?}: {}", s, reason);
                prop_assert!(!reason.is_empty());
            }
        }
    }
}

/// A modem that never ends a line (stuck in a binary mode, or a hostile device on the port) must
/// not make the digester buffer without bound: no AT line is longer than a few kilobytes (the
/// longest are PDU lines of `+CMGL`/`+CDS`, under 600 hex characters), so the unfinished line
/// has to be capped or dropped. Unbounded, memory grows with the stream and every read rescans
/// the whole buffer for a line end, so the CPU cost grows quadratically too.
#[test]
fn a_line_without_end_is_bounded() {
    const BOUND: usize = 64 * 1024;
    let mut d = Digester::new();
    d.begin("AT+CSQ", false);
    let chunk = [b'A'; 256];
    for _ in 0..(1024 * 1024 / chunk.len()) {
        d.feed(&chunk);
        assert_eq!(d.digest(), Digested::Incomplete);
        assert!(
            d.pending_bytes() <= BOUND,
            "the digester holds {} bytes of one unfinished line (bound {BOUND})",
            d.pending_bytes()
        );
    }
}
