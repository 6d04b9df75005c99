//! Unit tests of the codec: published vectors (source named at each), boundaries, and
//! properties. Every vector here was also checked by hand against TS 23.038 / 23.040.

use proptest::prelude::*;

use super::text::{GSM7_MULTI, UCS2_MULTI, split};
use super::*;

fn hexs(b: &[u8]) -> String {
    hex::encode_upper(b)
}

/// Encodes with the given options and compares the hex of every part.
fn check_submit(to: &str, text: &str, opts: &SubmitOptions, reference: u8, expect: &[&str]) {
    let parts = encode_submit(to, text, opts, reference).expect("encodes");
    let got: Vec<String> = parts.iter().map(EncodedPart::to_hex).collect();
    assert_eq!(got, expect, "to={to} text={text:?}");
    for p in &parts {
        // TPDU length excludes the SMSC prefix, which is one octet when no SMSC is given.
        let smsc_len = usize::from(p.bytes[0]) + 1;
        assert_eq!(p.tpdu_len, p.bytes.len() - smsc_len);
    }
}

fn submit_of(hex: &str) -> Submit {
    match decode_hex(hex) {
        Ok(Pdu::Submit(s)) => s,
        other => panic!("{hex}: expected SUBMIT, got {other:?}"),
    }
}

#[test]
fn gsm7_packing_vectors() {
    // "hellohello" → E8329BFD4697D9EC37: the packing example of the widely used "SMS and the
    // PDU format" tutorial (dreamfabric.com), checked bit by bit against TS 23.038 §6.1.2.1.1.
    // "hello" shares its first four octets; its last octet holds the top three bits of 'o'
    // (0x6F >> 4 = 0x06).
    let check = |text: &str, fill: usize, expect: &str| {
        let septets = gsm7::encode(text).unwrap();
        let packed = gsm7::pack(&septets, fill);
        assert_eq!(hexs(&packed), expect, "{text:?} fill {fill}");
        assert_eq!(gsm7::unpack(&packed, fill, septets.len()).unwrap(), septets);
    };
    check("hellohello", 0, "E8329BFD4697D9EC37");
    check("hello", 0, "E8329BFD06");
    // Eight septets fill exactly seven octets.
    check("abcdefgh", 0, "61F1985C369FD1");
    // One fill bit (after a 6-octet UDH) shifts everything left by one.
    check("a", 1, "C2");
    check("", 0, "");
}

#[test]
fn gsm7_fill_bits_follow_the_header() {
    // TS 23.040 §9.2.3.24: the text starts on a septet boundary after the UDH.
    for (udh_octets, fill, septets) in [(6, 1, 7), (7, 0, 8), (5, 2, 6), (12, 2, 14)] {
        assert_eq!(gsm7::fill_bits(udh_octets), fill, "fill for {udh_octets}");
        assert_eq!(
            gsm7::header_septets(udh_octets),
            septets,
            "septets {udh_octets}"
        );
    }
}

#[test]
fn every_extension_character_is_escaped_both_ways() {
    // TS 23.038 §6.2.1.1.
    let table = [
        ('\u{0C}', 0x0A),
        ('^', 0x14),
        ('{', 0x28),
        ('}', 0x29),
        ('\\', 0x2F),
        ('[', 0x3C),
        ('~', 0x3D),
        (']', 0x3E),
        ('|', 0x40),
        ('€', 0x65),
    ];
    for (c, code) in table {
        let s = c.to_string();
        assert_eq!(gsm7::encode(&s).unwrap(), vec![0x1B, code], "{c:?}");
        assert_eq!(gsm7::decode(&[0x1B, code]), s);
        assert_eq!(plan(&s).encoding, Encoding::Gsm7);
        let parts = encode_submit("+15551234567", &s, &SubmitOptions::default(), 0).unwrap();
        let sub = submit_of(&parts[0].to_hex());
        assert_eq!(sub.text, s);
        assert_eq!(sub.user_data, vec![0x1B, code]);
    }
}

#[test]
fn default_alphabet_round_trips() {
    for s in 0u8..128 {
        if s == gsm7::ESC {
            continue;
        }
        let text = gsm7::decode(&[s]);
        assert_eq!(
            gsm7::encode(&text),
            Some(vec![s]),
            "septet {s:#04x} via {text:?}"
        );
    }
    // Spot checks of TS 23.038 §6.2.1 positions.
    for (text, septet) in [
        ("@", 0x00),
        ("£", 0x01),
        ("Δ", 0x10),
        ("¤", 0x24),
        ("¡", 0x40),
    ] {
        assert_eq!(gsm7::encode(text), Some(vec![septet]));
    }
    assert_eq!(gsm7::encode(" "), Some(vec![0x20]));
    // An escape followed by a code the extension table lacks shows the default character,
    // and a trailing escape shows a space.
    assert_eq!(gsm7::decode(&[0x1B, 0x41]), "A");
    assert_eq!(gsm7::decode(&[0x41, 0x1B]), "A ");
    assert_eq!(gsm7::encode("\u{1B}"), None);
}

#[test]
fn classic_submit_vector() {
    // The classic example of the dreamfabric.com "SMS and the PDU format" tutorial:
    // SMSC 00, TP-VPF relative (0x11), TP-MR 0, +46708251358, GSM-7, TP-VP 0xAA (4 days),
    // "hellohello". Checked field by field against TS 23.040 §9.2.2.2.
    let hex = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37";
    let opts = SubmitOptions {
        validity_minutes: Some(4 * 24 * 60),
        ..SubmitOptions::default()
    };
    check_submit("+46708251358", "hellohello", &opts, 0, &[hex]);
    let s = submit_of(hex);
    assert_eq!(s.destination.to_string(), "+46708251358");
    assert_eq!(s.destination.kind, AddressKind::International);
    assert_eq!(s.validity, Some(Validity::Relative(0xAA)));
    assert_eq!(validity_minutes(0xAA), 4 * 24 * 60);
    assert_eq!(s.text, "hellohello");
    assert_eq!((s.message_reference, s.pid, s.dcs), (0, 0, 0));
    assert!(!s.status_report_request && !s.reject_duplicates && !s.flash);
    assert_eq!(s.concat, None);
}

#[test]
fn submit_header_fields() {
    let plain = SubmitOptions::default();
    // No validity: TP-VPF 00, first octet 0x01. Odd digit count padded with F; even not.
    check_submit(
        "+4670825135",
        "",
        &plain,
        0,
        &["0001000A916407281553000000"],
    );
    check_submit(
        "+467082513",
        "a",
        &plain,
        0,
        &["000100099164072815F300000161"],
    );
    // National number: TOA 0x81.
    check_submit("0123456", "a", &plain, 0, &["0001000781103254F600000161"]);
    // Status report request (0x20) and flash (DCS 0x10).
    let opts = SubmitOptions {
        status_report: true,
        flash: true,
        ..SubmitOptions::default()
    };
    check_submit("+1555", "a", &opts, 0, &["0021000491515500100161"]);
    // Flash UCS-2 is DCS 0x18.
    check_submit(
        "+1555",
        "Ж",
        &opts,
        0,
        &["00210004915155001802 0416".replace(' ', "").as_str()],
    );
    // Explicit SMSC: length in octets, TOA, swapped digits; TPDU length excludes it.
    let opts = SubmitOptions {
        smsc: Some("+447785016005".into()),
        ..SubmitOptions::default()
    };
    let parts = encode_submit("+1555", "a", &opts, 0).unwrap();
    assert_eq!(
        parts[0].to_hex(),
        "07914477581006500100049151550000 0161".replace(' ', "")
    );
    assert_eq!(parts[0].tpdu_len, 10);
    let s = submit_of(&parts[0].to_hex());
    assert_eq!(s.smsc.unwrap().to_string(), "+447785016005");
}

#[test]
fn ucs2_text_and_surrogate_pairs() {
    // "Привет" is outside GSM-7: DCS 0x08, UTF-16BE, UDL counts octets.
    check_submit(
        "+1555",
        "Привет",
        &SubmitOptions::default(),
        0,
        &["000100049151550008 0C 041F044004380432043504 42"
            .replace(' ', "")
            .as_str()],
    );
    // U+1F600 is the surrogate pair D83D DE00.
    check_submit(
        "+1555",
        "a😀",
        &SubmitOptions::default(),
        0,
        &["0001000491515500080600 61D83DDE00"
            .replace(' ', "")
            .as_str()],
    );
    assert_eq!(
        submit_of(
            "0001000491515500080600 61D83DDE00"
                .replace(' ', "")
                .as_str()
        )
        .text,
        "a😀"
    );
}

#[test]
fn numbers_are_validated() {
    for bad in [
        "",
        "+",
        "12a4",
        "+1 555",
        "++1",
        "123456789012345678901",
        "-1",
    ] {
        assert!(
            matches!(
                Address::parse_destination(bad),
                Err(EncodeError::InvalidNumber(_))
            ),
            "{bad:?}"
        );
    }
    for good in ["1", "+1", "12345678901234567890", "+12345678901234567890"] {
        let a = Address::parse_destination(good).unwrap();
        assert_eq!(a.to_string(), good);
    }
    let bad_smsc = SubmitOptions {
        smsc: Some("x".into()),
        ..SubmitOptions::default()
    };
    assert_eq!(
        encode_submit("+1555", "a", &bad_smsc, 0),
        Err(EncodeError::InvalidSmsc("x".into()))
    );
}

#[test]
fn validity_rounds_up_to_the_next_period() {
    // TS 23.040 §9.2.3.12.1; each row: minutes asked → octet → minutes it stands for.
    let check = |minutes: u32, octet: u8| {
        assert_eq!(validity_octet(minutes), octet, "{minutes} min");
        assert!(minutes > 63 * 7 * 24 * 60 || validity_minutes(octet) >= minutes);
    };
    check(0, 0);
    check(1, 0);
    check(5, 0);
    check(6, 1);
    check(10, 1);
    check(11, 2);
    check(720, 143);
    check(721, 144);
    check(750, 144);
    check(751, 145);
    check(1440, 167);
    check(1441, 168);
    check(2880, 168);
    check(2881, 169);
    check(5760, 170);
    check(43200, 196);
    check(43201, 197);
    check(50400, 197);
    check(50401, 198);
    check(635040, 255);
    check(u32::MAX, 255);
    for (octet, minutes) in [
        (0, 5),
        (143, 720),
        (144, 750),
        (167, 1440),
        (168, 2880),
        (196, 43200),
        (197, 50400),
        (255, 635040),
    ] {
        assert_eq!(validity_minutes(octet), minutes);
    }
}

/// Splits and reports (part count, length of each part in the encoding's unit).
fn check_split(text: &str, encoding: Encoding, expect: &[usize]) {
    assert_eq!(plan(text).encoding, encoding);
    let units = |s: &str| match encoding {
        Encoding::Gsm7 => gsm7::encode(s).unwrap().len(),
        _ => s.encode_utf16().count(),
    };
    let got: Vec<usize> = split(text, encoding).iter().map(|s| units(s)).collect();
    assert_eq!(got, expect, "len {}", text.chars().count());
    assert_eq!(plan(text).parts, expect.len());
}

#[test]
fn gsm7_part_boundaries() {
    let a = |n: usize| "a".repeat(n);
    check_split("", Encoding::Gsm7, &[0]);
    check_split(&a(152), Encoding::Gsm7, &[152]);
    check_split(&a(153), Encoding::Gsm7, &[153]);
    check_split(&a(154), Encoding::Gsm7, &[154]);
    check_split(&a(160), Encoding::Gsm7, &[160]);
    check_split(&a(161), Encoding::Gsm7, &[153, 8]);
    check_split(&a(306), Encoding::Gsm7, &[153, 153]);
    check_split(&a(307), Encoding::Gsm7, &[153, 153, 1]);
    // 159 'a' + '€' is 161 septets: split. The escape sequence would occupy septets 153..154
    // of part one only if it fit; it does at 152 'a' + '€' = 154 > 153, so it moves.
    check_split(&(a(152) + "€" + &a(10)), Encoding::Gsm7, &[152, 12]);
    check_split(&(a(151) + "€" + &a(10)), Encoding::Gsm7, &[153, 10]);
    // 158 'a' + '€' is exactly 160 septets: one part.
    check_split(&(a(158) + "€"), Encoding::Gsm7, &[160]);
    check_split(&(a(159) + "€"), Encoding::Gsm7, &[153, 8]);
}

#[test]
fn ucs2_part_boundaries() {
    let z = |n: usize| "Ж".repeat(n);
    check_split(&z(66), Encoding::Ucs2, &[66]);
    check_split(&z(67), Encoding::Ucs2, &[67]);
    check_split(&z(68), Encoding::Ucs2, &[68]);
    check_split(&z(70), Encoding::Ucs2, &[70]);
    check_split(&z(71), Encoding::Ucs2, &[67, 4]);
    check_split(&z(134), Encoding::Ucs2, &[67, 67]);
    check_split(&z(135), Encoding::Ucs2, &[67, 67, 1]);
    // The emoji would take units 67 and 68 of part one: it moves whole to part two.
    check_split(&(z(66) + "😀" + &z(10)), Encoding::Ucs2, &[66, 12]);
    check_split(&(z(65) + "😀" + &z(10)), Encoding::Ucs2, &[67, 10]);
    check_split(&(z(68) + "😀"), Encoding::Ucs2, &[70]);
    assert_eq!(GSM7_MULTI, 153);
    assert_eq!(UCS2_MULTI, 67);
}

#[test]
fn concatenated_parts_carry_the_udh() {
    // TS 23.040 §9.2.3.24.1: 05 00 03 <ref> <total> <seq>, TP-UDHI set (first octet 0x41),
    // UDL 160 = 7 header septets + 153 text septets, one fill bit.
    let text = "a".repeat(161);
    let parts = encode_submit("+1555", &text, &SubmitOptions::default(), 0xCC).unwrap();
    assert_eq!(parts.len(), 2);
    let h = parts[0].to_hex();
    assert!(
        h.starts_with(
            "0041000491515500 00A0 050003CC0201"
                .replace(' ', "")
                .as_str()
        ),
        "{h}"
    );
    assert_eq!(parts[0].tpdu_len, 1 + 1 + 4 + 1 + 1 + 1 + 140);
    let h2 = parts[1].to_hex();
    assert!(
        h2.starts_with(
            "0041000491515500 000F 050003CC0202"
                .replace(' ', "")
                .as_str()
        ),
        "{h2}"
    );
    for (i, p) in parts.iter().enumerate() {
        let s = submit_of(&p.to_hex());
        assert_eq!(
            s.concat,
            Some(Concat {
                reference: 0xCC,
                total: 2,
                seq: i as u8 + 1
            })
        );
    }
    // The last part: 8 'a' after one fill bit.
    let last = submit_of(&h2);
    assert_eq!(last.text, "a".repeat(8));
    // UCS-2 parts: 6 header octets + 134 text octets.
    let parts = encode_submit("+1555", &"Ж".repeat(71), &SubmitOptions::default(), 7).unwrap();
    assert!(
        parts[0].to_hex().starts_with(
            "004100049151550008 8C 05000307 0201"
                .replace(' ', "")
                .as_str()
        )
    );
    // 16-bit reference (IEI 0x08) decodes too: built by hand from §9.2.3.24.8.
    let hex16 = "00410004915155000009 06080412340302 61".replace(' ', "");
    let s = submit_of(&hex16);
    assert_eq!(
        s.concat,
        Some(Concat {
            reference: 0x1234,
            total: 3,
            seq: 2
        })
    );
    // A 7-octet UDH needs no fill bit: 8 header septets, then 'a' = 0x61.
    assert_eq!(s.text, "a");
}

#[test]
fn too_many_parts_is_an_error() {
    let text = "a".repeat(153 * 255 + 1);
    assert_eq!(
        encode_submit("+1555", &text, &SubmitOptions::default(), 0),
        Err(EncodeError::TooManyParts(256))
    );
    assert_eq!(plan(&"a".repeat(153 * 255)).parts, 255);
    assert!(
        encode_submit(
            "+1555",
            &"a".repeat(153 * 255),
            &SubmitOptions::default(),
            0
        )
        .is_ok()
    );
}

#[test]
fn deliver_vector() {
    // SMS-DELIVER example of the dreamfabric.com "SMS and the PDU format" tutorial: SMSC
    // +27381000015, first octet 04 (no more messages), originator TOA 0xC8, SCTS 99-03-29
    // 15:16:59 +02:00 (TZ 0x80 = 8 quarters), "hellohello".
    let hex = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37";
    let Ok(Pdu::Deliver(d)) = decode_hex(hex) else {
        panic!("not a DELIVER")
    };
    assert_eq!(d.smsc.as_ref().unwrap().to_string(), "+27381000015");
    assert_eq!(d.originator.toa, 0xC8);
    assert_eq!(d.originator.kind, AddressKind::Other(0xC8));
    assert_eq!(d.originator.value, "27838890001");
    assert_eq!(d.sc_timestamp.to_rfc3339(), "1999-03-29T15:16:59+02:00");
    assert_eq!(d.text, "hellohello");
    assert!(!d.more_messages);
    assert_eq!(encode_deliver(&d).unwrap().to_hex(), hex);
}

#[test]
fn deliver_from_an_alphanumeric_sender() {
    // "Google" packed as GSM-7: 6 septets = 42 bits = 11 semi-octets (TS 23.040 §9.1.2.5).
    let d = Deliver {
        smsc: None,
        originator: Address::alphanumeric("Google").unwrap(),
        pid: 0,
        dcs: 0,
        encoding: Encoding::Gsm7,
        sc_timestamp: Timestamp {
            year: 2026,
            month: 11,
            day: 22,
            hour: 10,
            minute: 33,
            second: 21,
            tz_quarter_hours: -20,
        },
        concat: None,
        text: "G-123456 is your code".into(),
        user_data: gsm7::encode("G-123456 is your code").unwrap(),
        more_messages: false,
    };
    let part = encode_deliver(&d).unwrap();
    let h = part.to_hex();
    // Originator field: 0B D0 C7F7FBCC2E03; SCTS 62 11 22 01 33 12 then TZ -20 → 02 | sign 08.
    assert!(
        h.starts_with("00040BD0C7F7FBCC2E0300006211220133120A"),
        "{h}"
    );
    let Ok(Pdu::Deliver(back)) = decode(&part.bytes) else {
        panic!()
    };
    assert_eq!(back, d);
    assert_eq!(back.originator.to_string(), "Google");
    assert_eq!(back.sc_timestamp.to_rfc3339(), "2026-11-22T10:33:21-05:00");
}

#[test]
fn status_report_vector() {
    // A +CDS status report in the form gsm-modem FAQs quote (TP-MR 0xD6, recipient
    // +31628870634, delivered), checked by hand against TS 23.040 §9.2.2.3 and by
    // python-gsmmodem-new's decoder (tests/pdu_crosscheck.rs): SCTS 2011-01-11 17:59:15 +01:00
    // (TZ 0x40 = 4 quarters), discharge 17:59:17, TP-ST 00.
    let hex = "0006D60B911326880736F4111011719551401110117195714000";
    let Ok(Pdu::StatusReport(sr)) = decode_hex(hex) else {
        panic!("not a status report")
    };
    assert_eq!(sr.message_reference, 0xD6);
    assert_eq!(sr.recipient.to_string(), "+31628870634");
    assert_eq!(sr.sc_timestamp.to_rfc3339(), "2011-01-11T17:59:15+01:00");
    assert_eq!(sr.discharge_time.to_rfc3339(), "2011-01-11T17:59:17+01:00");
    assert_eq!(sr.outcome(), DeliveryOutcome::Delivered);
    let enc = encode_status_report(&sr);
    assert_eq!(enc.to_hex(), hex);
    assert_eq!(enc.tpdu_len, 25);
    // Optional TP-PI tails (TS 23.040 §9.2.3.27) are tolerated: none, PID+DCS, PID+DCS+UD.
    for tail in ["00", "030000", "07000005E8329BFD06", "8000"] {
        let with = format!("{hex}{tail}");
        assert_eq!(
            decode_hex(&with),
            Ok(Pdu::StatusReport(sr.clone())),
            "{tail}"
        );
    }
    // A TP-PI promising user data that is not there is an error naming TP-UDL.
    let err = decode_hex(&format!("{hex}04")).unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-UDL", 27));
}

#[test]
fn status_values_map_to_outcomes() {
    // TS 23.040 §9.2.3.15.
    let check = |st: u8, outcome: DeliveryOutcome| {
        let sr = StatusReport {
            smsc: None,
            message_reference: 1,
            recipient: Address::parse_destination("+1555").unwrap(),
            sc_timestamp: ts(0),
            discharge_time: ts(0),
            status: st,
        };
        assert_eq!(sr.outcome(), outcome, "TP-ST {st:#04x}");
    };
    use DeliveryOutcome::*;
    for (st, o) in [
        (0x00, Delivered),
        (0x01, Delivered),
        (0x02, Delivered),
        (0x1F, Delivered),
        (0x20, StillTrying),
        (0x30, StillTrying),
        (0x3F, StillTrying),
        (0x40, PermanentFailure),
        (0x41, PermanentFailure),
        (0x5F, PermanentFailure),
        (0x60, TemporaryFailure),
        (0x62, TemporaryFailure),
        (0x7F, TemporaryFailure),
        (0x80, PermanentFailure),
        (0xFF, PermanentFailure),
    ] {
        check(st, o);
    }
}

fn ts(tz: i8) -> Timestamp {
    Timestamp {
        year: 2026,
        month: 1,
        day: 2,
        hour: 3,
        minute: 4,
        second: 5,
        tz_quarter_hours: tz,
    }
}

#[test]
fn timestamps_and_time_zones() {
    // TZ octet: swapped digits, sign in bit 3 (TS 23.040 §9.2.3.11).
    let check = |tz_octet: &str, q: i8, rfc: &str| {
        let hex = format!("00060104915155621020304050{tz_octet}621020304050{tz_octet}00");
        let Ok(Pdu::StatusReport(sr)) = decode_hex(&hex) else {
            panic!("{hex}")
        };
        assert_eq!(sr.sc_timestamp.tz_quarter_hours, q);
        assert_eq!(sr.sc_timestamp.to_rfc3339(), rfc);
        assert_eq!(encode_status_report(&sr).to_hex(), hex);
    };
    check("00", 0, "2026-01-02T03:04:05+00:00");
    check("80", 8, "2026-01-02T03:04:05+02:00");
    check("4A", -24, "2026-01-02T03:04:05-06:00");
    check("23", 32, "2026-01-02T03:04:05+08:00");
    check("39", -13, "2026-01-02T03:04:05-03:15");
    // A non-decimal digit is an error naming the field and the octet.
    let err = decode_hex("00060104915155621020304A5060000000000000000000").unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-SCTS", 11));
}

#[test]
fn eight_bit_data_has_no_text() {
    let s = submit_of("0001000491515500040301FF80");
    assert_eq!(s.encoding, Encoding::EightBit);
    assert_eq!(s.text, "");
    assert_eq!(s.user_data, vec![0x01, 0xFF, 0x80]);
    // Coding group 1111 with bit 2 set is 8-bit, class in bits 0..1.
    let s = submit_of("0001000491515500F40100");
    assert_eq!((s.encoding, s.flash), (Encoding::EightBit, true));
}

#[test]
fn decode_errors_name_field_and_offset() {
    let check = |hex: &str, field: &str, offset: usize| {
        let err = decode_hex(hex).unwrap_err();
        assert_eq!((err.field, err.offset), (field, offset), "{hex}: {err}");
        assert!(err.to_string().contains(field));
    };
    check("", "SMSC address", 0);
    check("0G", "hex", 0);
    check("001", "hex", 1);
    check("0C", "SMSC address", 0);
    check("00", "first octet", 1);
    check("0003", "TP-MTI", 1);
    check("0001", "TP-MR", 2);
    check("000100", "TP-DA", 3);
    check("0001001591", "TP-DA", 3);
    check("000100049151", "TP-DA", 5);
    check("000100049151F5", "TP-DA", 5);
    check("00010004915155", "TP-PID", 7);
    check("0001000491515500", "TP-DCS", 8);
    check("000100049151550000", "TP-UDL", 9);
    check("00010004915155000005E832", "TP-UDL", 9);
    check("0011000491515500000", "hex", 9);
    check("001100049151550000", "TP-VP", 9);
    check("004100049151550000010A", "TP-UDH", 10);
    check(
        "00410004915155000002 0305".replace(' ', "").as_str(),
        "TP-UDH",
        10,
    );
    check(
        "00410004915155000004 03000200".replace(' ', "").as_str(),
        "TP-UDH",
        11,
    );
    check(
        "00410004915155000005 0400020000".replace(' ', "").as_str(),
        "TP-UDH",
        11,
    );
    check("0004", "TP-OA", 2);
    check("00040491515500", "TP-DCS", 7);
    check("0004049151550000", "TP-SCTS", 8);
    check("0006", "TP-MR", 2);
    check("000601049151556210203040506000", "TP-DT", 14);
    check("000601049151556210203040506062102030405060", "TP-ST", 21);
}

#[test]
fn bytes_after_the_last_field_are_refused() {
    // 400 zero octets used to decode as a DELIVER from nobody, sent on 2000-00-00, with 390
    // octets nobody read. The SCTS is what gives them away first.
    let zeros = "00".repeat(400);
    let err = decode_hex(&zeros).unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-SCTS", 7), "{err}");
    assert!(err.to_string().contains("month 0"), "{err}");

    // A well-formed DELIVER with one octet too many: the error names TP-UDL and its offset.
    let deliver = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37";
    assert!(decode_hex(deliver).is_ok());
    let err = decode_hex(&format!("{deliver}00")).unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-UDL", 26), "{err}");
    assert!(err.to_string().contains("1 more bytes follow"), "{err}");

    // SUBMIT likewise (TP-UDL at byte 9 of this one).
    let submit = "0001000491515500000141";
    assert!(decode_hex(submit).is_ok());
    let err = decode_hex(&format!("{submit}FF")).unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-UDL", 9), "{err}");

    // A status report ends after TP-ST, after what TP-PI announces, or after its TP-UD.
    let report = "0006D60B911326880736F4111011719551401110117195714000";
    for (tail, field, offset) in [
        ("00FF", "TP-PI", 26),
        ("030000AA", "TP-PI", 26),
        ("07000005E8329BFD0600", "TP-UDL", 29),
    ] {
        let err = decode_hex(&format!("{report}{tail}")).unwrap_err();
        assert_eq!((err.field, err.offset), (field, offset), "{tail}: {err}");
    }
}

#[test]
fn impossible_timestamps_are_refused() {
    // SCTS starts at byte 8 of this DELIVER (SMSC 00, first octet 04, TP-OA of 4 digits).
    let check = |scts: &str, offset: usize, what: &str| {
        let hex = format!("0004049151550000{scts}0141");
        let err = decode_hex(&hex).unwrap_err();
        assert_eq!(
            (err.field, err.offset),
            ("TP-SCTS", offset),
            "{scts}: {err}"
        );
        assert!(err.reason.contains(what), "{scts}: {err}");
    };
    check("62002030405000", 9, "month 0");
    check("62312030405000", 9, "month 13");
    check("62100030405000", 10, "day 0");
    check("62102330405000", 10, "day 32");
    check("62209230405000", 10, "day 29 is not 1..=28 in 2026-02");
    check("62102042405000", 11, "hour 24");
    check("62102030065000", 12, "minute 60");
    check("62102030400600", 13, "second 60");
    // 29 February exists in leap years only (2024 yes, 2100 is not reachable: 00 is 2000, a
    // leap year by the 400 rule).
    assert!(
        decode_hex(
            "000404915155000042209230405000 0141"
                .replace(' ', "")
                .as_str()
        )
        .is_ok()
    );
    assert!(
        decode_hex(
            "000404915155000000209230405000 0141"
                .replace(' ', "")
                .as_str()
        )
        .is_ok()
    );
    // TP-DT of a status report: the second timestamp (byte 14).
    let err = decode_hex("000601049151556210203040506062003040506000").unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-DT", 15), "{err}");
    // Absolute TP-VP of a SUBMIT (TP-VPF 11, the timestamp at byte 9).
    let err = decode_hex("0019000491515500006210004050600000").unwrap_err();
    assert_eq!((err.field, err.offset), ("TP-VP", 11), "{err}");
}

#[test]
fn announced_length_must_match() {
    let report = hex::decode("0006D60B911326880736F4111011719551401110117195714000").unwrap();
    assert!(matches!(
        decode_announced(&report, 25),
        Ok(Pdu::StatusReport(_))
    ));
    for wrong in [24, 26, 0] {
        let err = decode_announced(&report, wrong).unwrap_err();
        assert_eq!(
            (err.field, err.offset),
            ("TPDU length", 1),
            "{wrong}: {err}"
        );
    }
    // Padding beyond the announced length is not a PDU either.
    let mut padded = report.clone();
    padded.push(0xFF);
    assert_eq!(
        decode_announced(&padded, 25).unwrap_err().field,
        "TPDU length"
    );
    // An SMSC prefix longer than the bytes: the length check cannot even find the TPDU.
    assert_eq!(
        decode_announced(&[0x07, 0x91], 0).unwrap_err().field,
        "TPDU length"
    );
    assert_eq!(decode_announced(&[], 0).unwrap_err().field, "SMSC address");
}

#[test]
fn published_vectors_have_the_properties_of_an_exact_pdu() {
    for hex in [
        "0006D60B911326880736F4111011719551401110117195714000",
        "0006D60B911326880736F411101171955140111011719571400000",
        "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37",
        "07911326040000F0040B911346610089F60000208062917314080CC8F71D14969741F977FD07",
        "0001000491515500000141",
    ] {
        accepted_pdus_are_exact(&hex::decode(hex).unwrap()).unwrap();
    }
}

/// The year a two-digit TP-SCTS year stands for, as the decoder reads it.
fn full_year(y: u16) -> u16 {
    if y >= 90 { 1900 + y } else { 2000 + y }
}

fn days_in(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Every field a decoded timestamp has is one a clock can show.
fn plausible(t: &Timestamp) -> bool {
    (1..=12).contains(&t.month)
        && (1..=days_in(t.year, t.month)).contains(&t.day)
        && t.hour < 24
        && t.minute < 60
        && t.second < 60
}

fn reassemble(parts: &[EncodedPart]) -> (String, Vec<Submit>) {
    let subs: Vec<Submit> = parts
        .iter()
        .map(|p| match decode(&p.bytes) {
            Ok(Pdu::Submit(s)) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    (subs.iter().map(|s| s.text.as_str()).collect(), subs)
}

proptest! {
    #[test]
    fn any_text_round_trips(text in any::<String>(), reference in any::<u8>()) {
        let parts = encode_submit("+15551234567", &text, &SubmitOptions::default(), reference).unwrap();
        let p = plan(&text);
        prop_assert_eq!(parts.len(), p.parts);
        let (back, subs) = reassemble(&parts);
        prop_assert_eq!(back, text);
        for (i, s) in subs.iter().enumerate() {
            prop_assert_eq!(s.encoding, p.encoding);
            prop_assert!(parts[i].tpdu_len <= 164);
            if parts.len() > 1 {
                prop_assert_eq!(s.concat, Some(Concat { reference: u16::from(reference), total: parts.len() as u8, seq: i as u8 + 1 }));
            }
        }
    }

    #[test]
    fn gsm7_text_round_trips(text in "[@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !-?¡A-ZÄÖÑÜ§¿a-zäöñüà^{}\\[~\\]|€\u{0C}]{0,400}") {
        let parts = encode_submit("+1555", &text, &SubmitOptions::default(), 1).unwrap();
        let (back, subs) = reassemble(&parts);
        prop_assert_eq!(back, text);
        prop_assert!(subs.iter().all(|s| s.encoding == Encoding::Gsm7));
    }

    #[test]
    fn numbers_round_trip(number in "\\+?[0-9]{1,20}") {
        let parts = encode_submit(&number, "x", &SubmitOptions { status_report: true, validity_minutes: Some(30), ..SubmitOptions::default() }, 0).unwrap();
        let (_, subs) = reassemble(&parts);
        prop_assert_eq!(subs[0].destination.to_string(), number);
        prop_assert!(subs[0].status_report_request);
        prop_assert_eq!(subs[0].validity, Some(Validity::Relative(5)));
    }

    #[test]
    fn validity_never_shortens(minutes in 0u32..700_000) {
        let v = validity_octet(minutes);
        if minutes <= 635_040 {
            prop_assert!(validity_minutes(v) >= minutes);
            // …and it is the smallest such octet.
            prop_assert!(v == 0 || validity_minutes(v - 1) < minutes);
        } else {
            prop_assert_eq!(v, 255);
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        accepted_pdus_are_exact(&bytes)?;
    }

    #[test]
    fn decode_never_panics_on_plausible_prefixes(
        first in prop_oneof![Just(0x00u8), Just(0x01), Just(0x02), Just(0x04), Just(0x06), Just(0x41), Just(0x51), Just(0x44)],
        tail in proptest::collection::vec(any::<u8>(), 0..180),
    ) {
        let mut bytes = vec![0x00, first];
        bytes.extend(tail);
        accepted_pdus_are_exact(&bytes)?;
    }

    #[test]
    fn decode_hex_never_panics(s in "\\PC{0,80}") {
        let _ = decode_hex(&s);
    }

    #[test]
    fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), fill in 0usize..8, count in 0usize..100) {
        if let Some(s) = gsm7::unpack(&bytes, fill, count) {
            prop_assert_eq!(s.len(), count);
            prop_assert!(s.iter().all(|b| *b < 0x80));
        }
    }

    #[test]
    fn status_reports_round_trip(mr in any::<u8>(), st in any::<u8>(), number in "\\+?[0-9]{1,20}",
                                 y in 0u16..100, mo in 1u8..13, d in 1u8..32, h in 0u8..24, mi in 0u8..60, s in 0u8..60, tz in -79i8..80,
                                 extra in proptest::collection::vec(any::<u8>(), 1..4)) {
        let year = full_year(y);
        let t = Timestamp { year, month: mo, day: d.min(days_in(year, mo)), hour: h, minute: mi, second: s, tz_quarter_hours: tz };
        let sr = StatusReport { smsc: None, message_reference: mr, recipient: Address::parse_destination(&number).unwrap(), sc_timestamp: t, discharge_time: t, status: st };
        let enc = encode_status_report(&sr);
        prop_assert_eq!(decode(&enc.bytes), Ok(Pdu::StatusReport(sr.clone())));
        prop_assert_eq!(decode_announced(&enc.bytes, enc.tpdu_len), Ok(Pdu::StatusReport(sr)));
        // What follows TP-ST is a TP-PI, and its announced fields end the PDU: nothing after it.
        let mut longer = enc.bytes.clone();
        longer.push(0x00);
        longer.extend(&extra);
        prop_assert!(decode(&longer).is_err());
        prop_assert!(decode_announced(&longer, longer.len() - 1).is_err());
    }

    #[test]
    fn impossible_dates_never_decode(mo in 0u8..100, d in 0u8..100, h in 0u8..100, mi in 0u8..100, s in 0u8..100) {
        let bcd = |v: u8| (v / 10) | (v % 10) << 4;
        // A DELIVER whose TP-SCTS (bytes 8..15) says 2026, then the fields under test.
        let scts = [0x62, bcd(mo), bcd(d), bcd(h), bcd(mi), bcd(s), 0x00];
        let hex = format!("0004049151550000{}0141", hex::encode_upper(scts));
        let valid = (1..=12).contains(&mo) && d >= 1 && d <= days_in(2026, mo) && h < 24 && mi < 60 && s < 60;
        match decode_hex(&hex) {
            Ok(Pdu::Deliver(deliver)) => {
                prop_assert!(valid, "{hex} decoded to {:?}", deliver.sc_timestamp);
                prop_assert_eq!(encode_deliver(&deliver).unwrap().to_hex(), hex);
            }
            Ok(other) => prop_assert!(false, "{hex}: {other:?}"),
            Err(e) => {
                prop_assert!(!valid, "{hex} refused: {e}");
                prop_assert_eq!(e.field, "TP-SCTS");
                prop_assert!((9..=13).contains(&e.offset), "{}", e);
            }
        }
    }

    #[test]
    fn delivers_round_trip(text in "\\PC{0,35}", more in any::<bool>()) {
        let encoding = if gsm7::fits(&text) { Encoding::Gsm7 } else { Encoding::Ucs2 };
        let d = Deliver {
            smsc: Some(Address::parse_destination("+447785016005").unwrap()),
            originator: Address::parse_destination("+15551234567").unwrap(),
            pid: 0, dcs: if encoding == Encoding::Gsm7 { 0 } else { 8 }, encoding,
            sc_timestamp: ts(4), concat: None,
            user_data: text::body(&text, encoding).unwrap(), text, more_messages: more,
        };
        let enc = encode_deliver(&d).unwrap();
        prop_assert_eq!(decode(&enc.bytes), Ok(Pdu::Deliver(d.clone())));
        prop_assert_eq!(decode_announced(&enc.bytes, enc.tpdu_len), Ok(Pdu::Deliver(d)));
        let mut longer = enc.bytes.clone();
        longer.push(0x00);
        prop_assert_eq!(decode(&longer).unwrap_err().field, "TP-UDL");
    }
}

/// The properties every accepted PDU must have (the fuzz target `decode_pdu` checks the same):
/// its timestamps are dates a clock can show; two more zero bytes make it undecodable (the
/// decoder read every byte; one `00` after a report's TP-ST would be a valid empty TP-PI); and a DELIVER or report re-encodes to bytes that decode to the same thing
/// and encode again to the very same bytes, which equal the input when the input carries only
/// what the model keeps.
fn accepted_pdus_are_exact(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(pdu) = decode(bytes) else {
        return Ok(());
    };
    let mut longer = bytes.to_vec();
    longer.extend([0x00, 0x00]);
    prop_assert!(
        decode(&longer).is_err(),
        "trailing bytes accepted after {}",
        hexs(bytes)
    );
    let tpdu_len = bytes.len() - 1 - usize::from(bytes[0]);
    prop_assert_eq!(decode_announced(bytes, tpdu_len), Ok(pdu.clone()));
    prop_assert!(decode_announced(bytes, tpdu_len + 1).is_err());
    longer.push(0x00);
    prop_assert!(
        decode(&longer).is_err(),
        "trailing byte accepted after {}",
        hexs(bytes)
    );
    let reencoded = match &pdu {
        Pdu::Submit(s) => {
            if let Some(Validity::Absolute(t)) = &s.validity {
                prop_assert!(plausible(t), "{t:?}");
            }
            return Ok(());
        }
        Pdu::Deliver(d) => {
            prop_assert!(plausible(&d.sc_timestamp), "{:?}", d.sc_timestamp);
            match encode_deliver(d) {
                Ok(p) => p.bytes,
                Err(_) => return Ok(()),
            }
        }
        Pdu::StatusReport(sr) => {
            prop_assert!(
                plausible(&sr.sc_timestamp) && plausible(&sr.discharge_time),
                "{sr:?}"
            );
            encode_status_report(sr).bytes
        }
    };
    let Ok(again) = decode(&reencoded) else {
        return Err(TestCaseError::fail(format!(
            "re-encoding {} does not decode",
            hexs(&reencoded)
        )));
    };
    let twice = match &again {
        Pdu::Deliver(d) => encode_deliver(d).map(|p| p.bytes).ok(),
        Pdu::StatusReport(sr) => Some(encode_status_report(sr).bytes),
        Pdu::Submit(_) => None,
    };
    prop_assert_eq!(twice.as_deref(), Some(reencoded.as_slice()));
    if matches!(pdu, Pdu::StatusReport(_)) && canonical_report(bytes) {
        prop_assert_eq!(hexs(&reencoded), hexs(bytes));
    }
    Ok(())
}

/// A report as `encode_status_report` writes one: no SMSC, first octet 0x06, numeric
/// recipient with `F` padding, no TP-PI, and no "minus zero" time zone.
fn canonical_report(bytes: &[u8]) -> bool {
    let [0x00, 0x06, _mr, digits, toa, rest @ ..] = bytes else {
        return false;
    };
    let addr_len = usize::from(*digits).div_ceil(2);
    if toa & 0x70 == 0x50 || rest.len() != addr_len + 15 {
        return false;
    }
    let padded_ok = digits % 2 == 0 || rest[addr_len - 1] >> 4 == 0x0F;
    let tz_ok = |tz: u8| tz & 0xF7 != 0 || tz & 0x08 == 0;
    padded_ok && tz_ok(rest[addr_len + 6]) && tz_ok(rest[addr_len + 13])
}
