//! Texts the simulated network delivers to the SIM: SMS-DELIVER PDUs (TS 23.040 §9.2.2.1)
//! built from a sender and a text, optionally with a message class (TS 23.038 §4) and split
//! into concatenated parts with a chosen 8- or 16-bit reference (TS 23.040 §9.2.3.24.1 and
//! .8), or taken as raw PDUs from a test. Pure: the wall clock is an argument.

use time::OffsetDateTime;

use crate::pdu::{self, Address, Concat, Encoding, Pdu, SubmitOptions, Timestamp};

/// One SMS-DELIVER ready for the modem's storage or a `+CMT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPart {
    /// Octets of the TPDU (the `+CMT`/`+CMGR` length, SMSC prefix excluded).
    pub tpdu_len: usize,
    /// The PDU with its SMSC prefix, uppercase hex.
    pub pdu_hex: String,
    /// Text-mode fields after `+CMT: ` or a `+CMGR` <stat>: `"<oa>",,"<scts>"`, a line break
    /// and the text (TS 27.005 §3.4.1, §3.4.3).
    pub text_fields: String,
    /// The message class of TP-DCS, if it names one: `+CNMI` <mt> 2 and 3 route by it.
    pub class: Option<u8>,
    /// The concatenation element: (reference, total, seq); `None` for a single SMS.
    pub concat: Option<(u16, u8, u8)>,
}

/// How a concatenated text's parts are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference {
    /// The reference all parts share.
    pub value: u16,
    /// The 16-bit information element (IEI 0x08) instead of the 8-bit one (IEI 0x00).
    pub sixteen_bit: bool,
}

/// A text in one SMS (the `--incoming` flag): GSM 7-bit when it fits, else UCS-2, no class.
pub fn single(from: &str, text: &str, wall: OffsetDateTime) -> Result<InboundPart, String> {
    let parts = build(from, &[text.to_string()], None, None, wall)?;
    Ok(parts.into_iter().next().expect("one part for one text"))
}

/// Splits `text` the way a sender's phone would (153 GSM characters or 67 UCS-2 units a
/// part) and builds its parts in sequence order. A text that fits one SMS is one part
/// without a header unless `reference` is given.
pub fn split(
    from: &str,
    text: &str,
    class: Option<u8>,
    reference: Option<Reference>,
    wall: OffsetDateTime,
) -> Result<Vec<InboundPart>, String> {
    // The codec's splitter is the one the daemon sends with; its SUBMITs carry each part's
    // slice of the text, whole characters only.
    let submits = pdu::encode_submit("+1", text, &SubmitOptions::default(), 0)
        .map_err(|e| format!("text cannot be encoded: {e}"))?;
    let mut texts = Vec::new();
    for s in submits {
        match pdu::decode(&s.bytes) {
            Ok(Pdu::Submit(s)) => texts.push(s.text),
            _ => return Err("text cannot be split".into()),
        }
    }
    // The 16-bit element is one octet longer, so its parts hold one character less (152
    // GSM / 66 UCS-2): split again, filling each part as far as it encodes.
    if texts.len() > 1 && reference.is_some_and(|r| r.sixteen_bit) {
        texts = refill(from, text, reference)?;
    }
    build(from, &texts, class, reference, wall)
}

/// Splits `text` into the longest parts that encode next to `reference`'s header.
fn refill(from: &str, text: &str, reference: Option<Reference>) -> Result<Vec<String>, String> {
    let ucs2 = pdu::plan(text).encoding != Encoding::Gsm7;
    let fits = |part: &str| {
        let mut probe = vec![part.to_string()];
        if ucs2 && pdu::plan(part).encoding == Encoding::Gsm7 {
            // Keep the whole text's alphabet: a non-GSM character forces UCS-2 throughout.
            probe.push("\u{1F600}".into());
        }
        build(from, &probe, None, reference, OffsetDateTime::UNIX_EPOCH).is_ok()
    };
    let mut parts = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if !fits(&current) {
            current.pop();
            if current.is_empty() {
                return Err(format!("character {c:?} does not fit a part"));
            }
            parts.push(std::mem::take(&mut current));
            current.push(c);
        }
    }
    parts.push(current);
    Ok(parts)
}

/// Builds one part per entry of `texts` (each must fit one SMS next to the header), all in
/// one alphabet: UCS-2 if any part needs it. More than one text needs a `reference`; without
/// one the parts get reference 0.
pub fn build(
    from: &str,
    texts: &[String],
    class: Option<u8>,
    reference: Option<Reference>,
    wall: OffsetDateTime,
) -> Result<Vec<InboundPart>, String> {
    if texts.is_empty() {
        return Err("no text to deliver".into());
    }
    let total = u8::try_from(texts.len()).map_err(|_| "at most 255 parts".to_string())?;
    if class.is_some_and(|c| c > 3) {
        return Err("class must be 0 to 3".into());
    }
    let originator = if from.starts_with('+') {
        Address::parse_destination(from)
    } else {
        Address::alphanumeric(from)
    }
    .map_err(|e| format!("sender {from:?}: {e}"))?;
    let encoding = if texts
        .iter()
        .all(|t| pdu::plan(t).encoding == Encoding::Gsm7)
    {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    };
    // TS 23.038 §4: general data coding; bit 4 says bits 1..0 carry the class; bits 3..2
    // select the alphabet (00 GSM 7-bit, 10 UCS-2).
    let alphabet = if encoding == Encoding::Gsm7 {
        0x00
    } else {
        0x08
    };
    let dcs = match class {
        Some(c) => 0x10 | alphabet | c,
        None => alphabet,
    };
    let multi = texts.len() > 1 || reference.is_some();
    let reference = reference.unwrap_or(Reference {
        value: 0,
        sixteen_bit: false,
    });
    if !reference.sixteen_bit && reference.value > 255 {
        return Err(format!(
            "an 8-bit reference is 0 to 255, not {}",
            reference.value
        ));
    }
    // The codec picks the 16-bit element only for references above 255: a small 16-bit one
    // is encoded as 0x100 + value (same header length, so the same packing) and its high
    // octet cleared afterwards.
    let patch = reference.sixteen_bit && reference.value <= 255;
    let coded_ref = if patch {
        reference.value | 0x100
    } else {
        reference.value
    };
    let sc_timestamp = timestamp(wall);
    let mut parts = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let seq = i as u8 + 1;
        let concat = multi.then_some(Concat {
            reference: coded_ref,
            total,
            seq,
        });
        let encoded = pdu::encode_deliver(&pdu::Deliver {
            smsc: None,
            originator: originator.clone(),
            pid: 0,
            dcs,
            encoding,
            sc_timestamp,
            concat,
            text: text.clone(),
            user_data: Vec::new(),
            more_messages: false,
        })
        .map_err(|e| format!("part {seq} does not fit one SMS: {e}"))?;
        let mut bytes = encoded.bytes;
        if patch {
            let header = [0x06, 0x08, 0x04, 0x01, reference.value as u8, total, seq];
            let at = bytes
                .windows(header.len())
                .position(|w| w == header)
                .ok_or("16-bit reference header not found")?;
            bytes[at + 3] = 0x00;
        }
        let part = from_bytes(&bytes)?;
        let expected = multi.then_some((reference.value, total, seq));
        if part.concat != expected {
            return Err(format!("part {seq} did not encode its reference"));
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A raw SMS-DELIVER from a test: hex with the SMSC prefix (`00` for none), as `+CMT` shows it.
pub fn raw(hex_text: &str) -> Result<InboundPart, String> {
    let bytes = hex::decode(hex_text.trim()).map_err(|e| format!("pdu is not hex: {e}"))?;
    from_bytes(&bytes)
}

fn from_bytes(bytes: &[u8]) -> Result<InboundPart, String> {
    let smsc_len = usize::from(*bytes.first().ok_or("empty pdu")?);
    let d = match pdu::decode(bytes) {
        Ok(Pdu::Deliver(d)) => d,
        Ok(_) => return Err("pdu is not an SMS-DELIVER".into()),
        Err(e) => return Err(format!("pdu does not decode: {e}")),
    };
    let text_fields = format!(
        "\"{}\",,\"{}\"\r\n{}",
        d.originator,
        text_timestamp(&d.sc_timestamp),
        d.text
    );
    Ok(InboundPart {
        tpdu_len: bytes.len() - 1 - smsc_len,
        pdu_hex: hex::encode_upper(bytes),
        text_fields,
        class: class_of(d.dcs),
        concat: d.concat.map(|c| (c.reference, c.total, c.seq)),
    })
}

/// The message class TP-DCS names (TS 23.038 §4), if any.
fn class_of(dcs: u8) -> Option<u8> {
    match dcs >> 4 {
        // General data coding and automatic deletion groups, bit 4 set: class in bits 1..0.
        0x0..=0x7 if dcs & 0x10 != 0 => Some(dcs & 0x03),
        0xF => Some(dcs & 0x03),
        _ => None,
    }
}

/// `yy/MM/dd,hh:mm:ss±zz` of TS 27.005 §3.3.2, the time zone in quarter hours.
fn text_timestamp(t: &Timestamp) -> String {
    let q = t.tz_quarter_hours;
    format!(
        "{:02}/{:02}/{:02},{:02}:{:02}:{:02}{}{:02}",
        t.year % 100,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        if q < 0 { '-' } else { '+' },
        q.unsigned_abs()
    )
}

fn timestamp(t: OffsetDateTime) -> Timestamp {
    let t = t.to_offset(time::UtcOffset::UTC);
    Timestamp {
        year: t.year().clamp(2000, 2099) as u16,
        month: u8::from(t.month()),
        day: t.day(),
        hour: t.hour(),
        minute: t.minute(),
        second: t.second(),
        tz_quarter_hours: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const WALL: OffsetDateTime = datetime!(2026-11-22 10:00:00 UTC);

    fn deliver(p: &InboundPart) -> pdu::Deliver {
        match pdu::decode_hex(&p.pdu_hex).unwrap() {
            Pdu::Deliver(d) => d,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_short_text_is_one_part_without_header() {
        let p = single("+15550001111", "Hi there", WALL).unwrap();
        assert_eq!(p.concat, None);
        assert_eq!(p.class, None);
        assert_eq!(
            p.text_fields,
            "\"+15550001111\",,\"26/11/22,10:00:00+00\"\r\nHi there"
        );
        let d = deliver(&p);
        assert_eq!((d.text.as_str(), d.dcs), ("Hi there", 0x00));
        assert_eq!(p.tpdu_len * 2 + 2, p.pdu_hex.len());
    }

    #[test]
    fn long_texts_split_with_8_and_16_bit_references() {
        let text = "x".repeat(200);
        for (value, sixteen_bit) in [(7u16, false), (7, true), (0xBEEF, true)] {
            let parts = split(
                "Bank",
                &text,
                Some(1),
                Some(Reference { value, sixteen_bit }),
                WALL,
            )
            .unwrap();
            assert_eq!(parts.len(), 2);
            let joined: String = parts.iter().map(|p| deliver(p).text).collect();
            assert_eq!(joined, text);
            for (i, p) in parts.iter().enumerate() {
                assert_eq!(p.concat, Some((value, 2, i as u8 + 1)));
                assert_eq!(p.class, Some(1));
                let udh_iei = if sixteen_bit { "0804" } else { "0003" };
                assert!(p.pdu_hex.contains(udh_iei), "{}", p.pdu_hex);
            }
        }
        assert!(
            split(
                "Bank",
                &text,
                None,
                Some(Reference {
                    value: 300,
                    sixteen_bit: false
                }),
                WALL
            )
            .is_err()
        );
    }

    #[test]
    fn ucs2_and_class_pick_the_dcs() {
        let p = split("+4915112345678", "Grüße 😀", Some(0), None, WALL).unwrap();
        assert_eq!(p.len(), 1);
        let d = deliver(&p[0]);
        assert_eq!((d.text.as_str(), d.dcs), ("Grüße 😀", 0x18));
        assert_eq!(p[0].class, Some(0));
    }

    #[test]
    fn raw_pdus_must_be_delivers() {
        let p = single("+15550001111", "raw", WALL).unwrap();
        assert_eq!(raw(&p.pdu_hex.to_lowercase()).unwrap(), p);
        let submit = pdu::encode_submit("+1555", "x", &SubmitOptions::default(), 1).unwrap();
        assert!(
            raw(&submit[0].to_hex())
                .unwrap_err()
                .contains("SMS-DELIVER")
        );
        assert!(raw("zz").is_err());
    }
}
