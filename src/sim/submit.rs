//! The simulator's use of the shared PDU codec: checking what follows `AT+CMGS=<length>` in PDU
//! mode (TS 27.005 §3.5.1) and building the SMS-STATUS-REPORT of a `+CDS` (TS 23.040 §9.2.2.3).

use time::OffsetDateTime;

use crate::pdu::{self, Address, AddressKind, Pdu, StatusReport, Timestamp};

/// What the simulator needs to know about one submitted part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitFacts {
    /// Destination as logged: `+digits` for international numbers, else as given.
    pub to: String,
    /// This part's text.
    pub text: String,
    /// Concatenation element: (reference, total, seq).
    pub concat: Option<(u16, u8, u8)>,
    /// TP-SRR (PDU mode) or bit 5 of `+CSMP`'s first octet (text mode).
    pub status_report: bool,
    /// TP-DA as received, reused as TP-RA of the status report; `None` in text mode.
    pub recipient: Option<Address>,
    /// The PDU as received, uppercase hex; `None` in text mode.
    pub pdu_hex: Option<String>,
}

/// Checks a PDU-mode body: hex, the length given to `AT+CMGS` matching the TPDU (the SMSC
/// prefix is not counted, TS 27.005 §3.5.1), and an SMS-SUBMIT that decodes.
pub fn parse(body: &[u8], tpdu_len: usize) -> Result<SubmitFacts, String> {
    let hex_text = std::str::from_utf8(body)
        .map_err(|_| "PDU is not ASCII hex".to_string())?
        .trim();
    let bytes = hex::decode(hex_text).map_err(|e| format!("PDU is not hex: {e}"))?;
    let smsc_len = *bytes.first().ok_or("empty PDU")? as usize;
    if bytes.len() != 1 + smsc_len + tpdu_len {
        return Err(format!(
            "length mismatch: AT+CMGS said {tpdu_len} TPDU octets, got {}",
            bytes.len().saturating_sub(1 + smsc_len)
        ));
    }
    let submit = match pdu::decode(&bytes) {
        Ok(Pdu::Submit(s)) => s,
        Ok(_) => return Err("not an SMS-SUBMIT".into()),
        Err(e) => return Err(format!("undecodable SUBMIT: {e}")),
    };
    let to = match submit.destination.kind {
        AddressKind::International => format!("+{}", submit.destination.value),
        _ => submit.destination.value.clone(),
    };
    Ok(SubmitFacts {
        to,
        text: submit.text,
        concat: submit.concat.map(|c| (c.reference, c.total, c.seq)),
        status_report: submit.status_report_request,
        recipient: Some(submit.destination),
        pdu_hex: Some(hex::encode_upper(&bytes)),
    })
}

/// The `+CDS` payload for a part: TPDU length and uppercase hex of an SMS-STATUS-REPORT with
/// the part's TP-MR and recipient, both timestamps `wall`, and TP-ST `status`.
pub fn status_report(
    facts: &SubmitFacts,
    mr: u8,
    status: u8,
    wall: OffsetDateTime,
) -> (usize, String) {
    let recipient = facts.recipient.clone().unwrap_or_else(|| Address {
        kind: AddressKind::Unknown,
        toa: pdu::address::TOA_UNKNOWN,
        value: facts.to.trim_start_matches('+').to_string(),
    });
    let ts = timestamp(wall);
    let part = pdu::encode_status_report(&StatusReport {
        smsc: None,
        message_reference: mr,
        recipient,
        sc_timestamp: ts,
        discharge_time: ts,
        status,
    });
    (part.tpdu_len, part.to_hex())
}

/// An SMS-DELIVER (TS 23.040 §9.2.2.1) in one part, as the network hands a received text to
/// the modem: TPDU length and uppercase hex. `from` is `+` and digits, or an alphanumeric
/// sender (TS 23.040 §9.1.2.5); the alphabet is GSM 7-bit when `text` fits it, else UCS-2.
pub fn deliver(from: &str, text: &str, wall: OffsetDateTime) -> Result<(usize, String), String> {
    let originator = if from.starts_with('+') {
        Address::parse_destination(from)
    } else {
        Address::alphanumeric(from)
    }
    .map_err(|e| format!("sender {from:?}: {e}"))?;
    let encoding = pdu::plan(text).encoding;
    let part = pdu::encode_deliver(&pdu::Deliver {
        smsc: None,
        originator,
        pid: 0,
        // TS 23.038 §4: general data coding, no class; 0x08 selects UCS-2.
        dcs: if encoding == pdu::Encoding::Gsm7 {
            0x00
        } else {
            0x08
        },
        encoding,
        sc_timestamp: timestamp(wall),
        concat: None,
        text: text.to_string(),
        user_data: Vec::new(),
        more_messages: false,
    })
    .map_err(|e| format!("text does not fit one SMS: {e}"))?;
    Ok((part.tpdu_len, part.to_hex()))
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
    use crate::pdu::{SubmitOptions, encode_submit};

    #[test]
    fn accepts_what_the_codec_encodes_and_checks_the_length() {
        let parts = encode_submit("+15551234567", "hello", &SubmitOptions::default(), 7).unwrap();
        let p = &parts[0];
        let facts = parse(p.to_hex().as_bytes(), p.tpdu_len).unwrap();
        assert_eq!(facts.to, "+15551234567");
        assert_eq!(facts.text, "hello");
        assert_eq!(facts.pdu_hex.as_deref(), Some(p.to_hex().as_str()));
        assert!(parse(p.to_hex().as_bytes(), p.tpdu_len + 1).is_err());
        assert!(parse(b"00ZZ", 1).is_err());
    }
}
