//! `simgate pdu` as a user runs it: the real binary, its stdout, stderr and exit code.

use std::process::{Command, Output};

use serde_json::Value;

fn simgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(args)
        .output()
        .expect("simgate runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn decode_json(hex: &str) -> Value {
    let o = simgate(&["pdu", "decode", hex]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&stdout(&o)).expect("one JSON object")
}

#[test]
fn encode_prints_length_and_hex_and_decode_reads_it_back() {
    let o = simgate(&[
        "pdu",
        "encode",
        "--to",
        "+15551234567",
        "--text",
        "Your code is 123456",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    // SMSC 00, SUBMIT 01, MR 00, 0B 91 5155214365F7, PID 00, DCS 00, UDL 0x13, 19 septets
    // in 17 octets: 1 + 1 + 8 + 1 + 1 + 1 + 17 = 30 TPDU octets.
    assert_eq!(
        out,
        "30 0001000B915155214365F7000013D9775D0E1ABFC965507A0E8AC966B49A0D\n"
    );
    let (len, hex) = out.trim().split_once(' ').unwrap();
    assert_eq!(len.parse::<usize>().unwrap() * 2 + 2, hex.len());
    let v = decode_json(hex);
    assert_eq!(v["type"], "sms-submit");
    assert_eq!(v["destination"]["value"], "+15551234567");
    assert_eq!(v["text"], "Your code is 123456");
    assert_eq!(v["encoding"], "gsm7");
    assert_eq!(v["status_report_request"], false);
    assert_eq!(v["validity"], Value::Null);
}

#[test]
fn options_reach_the_pdu() {
    let o = simgate(&[
        "pdu",
        "encode",
        "--to",
        "0123456",
        "--text",
        "x",
        "--status-report",
        "--validity",
        "61",
    ]);
    assert!(o.status.success());
    let hex = stdout(&o).split_whitespace().nth(1).unwrap().to_string();
    let v = decode_json(&hex);
    assert_eq!(v["status_report_request"], true);
    // 61 minutes is rounded up to 65 (TP-VP 12).
    assert_eq!(v["validity"]["octet"], 12);
    assert_eq!(v["validity"]["minutes"], 65);
    assert_eq!(v["destination"]["value"], "0123456");
    assert_eq!(v["destination"]["toa"], 0x81);
}

#[test]
fn json_lists_the_parts_of_a_long_text() {
    let text = "Ж".repeat(100);
    let o = simgate(&[
        "--json",
        "pdu",
        "encode",
        "--to",
        "+15551234567",
        "--text",
        &text,
        "--reference",
        "42",
    ]);
    assert!(o.status.success());
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["encoding"], "ucs2");
    let parts = v["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    let mut joined = String::new();
    for (i, p) in parts.iter().enumerate() {
        let hex = p["pdu"].as_str().unwrap();
        assert_eq!(p["length"].as_u64().unwrap() as usize * 2 + 2, hex.len());
        let d = decode_json(hex);
        assert_eq!(d["concat"]["reference"], 42);
        assert_eq!(d["concat"]["total"], 2);
        assert_eq!(d["concat"]["seq"], i + 1);
        joined.push_str(d["text"].as_str().unwrap());
    }
    assert_eq!(joined, text);
}

#[test]
fn decode_shows_a_status_report() {
    let v = decode_json("0006D60B911326880736F4111011719551401110117195714000");
    assert_eq!(v["type"], "sms-status-report");
    assert_eq!(v["message_reference"], 214);
    assert_eq!(v["recipient"]["value"], "+31628870634");
    assert_eq!(v["sc_timestamp"], "2011-01-11T17:59:15+01:00");
    assert_eq!(v["discharge_time"], "2011-01-11T17:59:17+01:00");
    assert_eq!(v["status"]["code"], 0);
    assert_eq!(v["status"]["outcome"], "delivered");
}

#[test]
fn decode_shows_a_deliver() {
    let v = decode_json("07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37");
    assert_eq!(v["type"], "sms-deliver");
    assert_eq!(v["smsc"]["value"], "+27381000015");
    assert_eq!(v["text"], "hellohello");
    assert_eq!(v["sc_timestamp"], "1999-03-29T15:16:59+02:00");
}

#[test]
fn bad_input_exits_2_naming_field_and_offset() {
    let check = |args: &[&str], needle: &str| {
        let o = simgate(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    check(&["pdu", "decode", "00ZZ"], "hex at byte 1");
    check(&["pdu", "decode", "0001000B91"], "TP-DA at byte 5");
    check(
        &["pdu", "decode", "0011000B916407281553F80000AA0AE8329BFD"],
        "TP-UDL at byte 14",
    );
    check(
        &["pdu", "encode", "--to", "+1-555", "--text", "x"],
        "invalid number",
    );
}

#[test]
fn decode_refuses_what_is_not_a_pdu() {
    // Issue 15.1: 400 zero octets used to print an SMS-DELIVER dated 2000-00-00 and exit 0.
    let check = |hex: &str, needle: &str| {
        let o = simgate(&["pdu", "decode", hex]);
        assert_eq!(o.status.code(), Some(2), "{hex}");
        assert!(o.stdout.is_empty(), "{hex}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{hex}: {err}");
    };
    check(&"00".repeat(400), "TP-SCTS at byte 7: month 0");
    // A real DELIVER with an octet after its user data.
    check(
        "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC3700",
        "TP-UDL at byte 26",
    );
    // A status report discharged at 24:00.
    check(
        "0006D60B911326880736F4111011719551401110114271714000",
        "TP-DT at byte 21: hour 24",
    );
}
