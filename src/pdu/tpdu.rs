//! The three TPDUs we handle (TS 23.040 §9.2.2): SMS-SUBMIT, SMS-DELIVER, SMS-STATUS-REPORT,
//! each behind the SMSC prefix of TS 27.005 PDU mode. Also TP-VP (§9.2.3.12) and TP-SCTS
//! (§9.2.3.11).

use super::text::{self, Plan};
use super::{
    Address, Concat, DecodeError, Deliver, EncodeError, EncodedPart, Encoding, Pdu, Reader,
    StatusReport, Submit, SubmitOptions, Timestamp, Validity,
};

/// TP-MTI values (TS 23.040 §9.2.3.1), in the direction we read or write them.
const MTI_DELIVER: u8 = 0b00;
const MTI_SUBMIT: u8 = 0b01;
const MTI_STATUS_REPORT: u8 = 0b10;

/// The largest period TP-VP relative can express: 63 weeks.
const MAX_VALIDITY_MINUTES: u32 = 63 * 7 * 24 * 60;

/// TP-VP relative octet for `minutes` (TS 23.040 §9.2.3.12.1), rounded UP to the next
/// representable period so a code is never cut short; capped at 63 weeks (0xFF).
pub fn validity_octet(minutes: u32) -> u8 {
    const HOUR: u32 = 60;
    const DAY: u32 = 24 * HOUR;
    const WEEK: u32 = 7 * DAY;
    let v = if minutes <= 12 * HOUR {
        // 0..=143: (VP + 1) × 5 minutes.
        minutes.div_ceil(5).max(1) - 1
    } else if minutes <= DAY {
        // 144..=167: 12 hours + (VP − 143) × 30 minutes.
        143 + (minutes - 12 * HOUR).div_ceil(30)
    } else if minutes <= 30 * DAY {
        // 168..=196: (VP − 166) days; the first step is 2 days.
        166 + minutes.div_ceil(DAY).max(2)
    } else if minutes < MAX_VALIDITY_MINUTES {
        // 197..=255: (VP − 192) weeks; the first step is 5 weeks.
        192 + minutes.div_ceil(WEEK).max(5)
    } else {
        255
    };
    v as u8
}

/// The period a TP-VP relative octet stands for, in minutes (TS 23.040 §9.2.3.12.1).
pub fn validity_minutes(octet: u8) -> u32 {
    let v = u32::from(octet);
    match octet {
        0..=143 => (v + 1) * 5,
        144..=167 => 12 * 60 + (v - 143) * 30,
        168..=196 => (v - 166) * 24 * 60,
        _ => (v - 192) * 7 * 24 * 60,
    }
}

/// Encodes `text` to `to` as one or more SMS-SUBMIT PDUs, GSM-7 when every character fits and
/// UCS-2 otherwise, concatenated with reference `concat_reference` when it is too long for one.
/// TP-MR is 0: the modem assigns the real one and reports it in `+CMGS`.
pub fn encode_submit(
    to: &str,
    text: &str,
    opts: &SubmitOptions,
    concat_reference: u8,
) -> Result<Vec<EncodedPart>, EncodeError> {
    encode_submit_to(
        Address::parse_destination(to)?,
        text,
        opts,
        concat_reference,
    )
}

/// [`encode_submit`] to an address already parsed (the daemon's recipients are a
/// [`crate::model::Msisdn`], checked once at the API).
pub fn encode_submit_to(
    destination: Address,
    text: &str,
    opts: &SubmitOptions,
    concat_reference: u8,
) -> Result<Vec<EncodedPart>, EncodeError> {
    let mut smsc = Vec::new();
    match &opts.smsc {
        None => smsc.push(0x00),
        Some(s) => Address::parse_destination(s)
            .map_err(|_| EncodeError::InvalidSmsc(s.clone()))?
            .encode_smsc(&mut smsc)?,
    }
    let Plan { encoding, .. } = text::plan(text);
    let slices = text::split(text, encoding);
    let total = u8::try_from(slices.len()).map_err(|_| EncodeError::TooManyParts(slices.len()))?;
    let dcs = text::dcs_for(encoding, opts.flash);
    let mut parts = Vec::with_capacity(slices.len());
    for (i, slice) in slices.iter().enumerate() {
        let concat = (total > 1).then(|| Concat {
            reference: u16::from(concat_reference),
            total,
            seq: i as u8 + 1,
        });
        let body = text::body(slice, encoding).ok_or(EncodeError::NotRepresentable)?;
        let (udl, ud) =
            text::encode_ud(&body, encoding, concat).ok_or(EncodeError::TooLong(body.len()))?;
        let mut first = MTI_SUBMIT;
        if opts.validity_minutes.is_some() {
            first |= 0b10 << 3; // TP-VPF relative
        }
        if opts.status_report {
            first |= 0x20; // TP-SRR
        }
        if concat.is_some() {
            first |= 0x40; // TP-UDHI
        }
        let mut bytes = smsc.clone();
        bytes.push(first);
        bytes.push(0x00); // TP-MR
        destination.encode_tp(&mut bytes)?;
        bytes.push(0x00); // TP-PID: plain SME-to-SME
        bytes.push(dcs);
        if let Some(m) = opts.validity_minutes {
            bytes.push(validity_octet(m));
        }
        bytes.push(udl);
        bytes.extend_from_slice(&ud);
        parts.push(EncodedPart {
            tpdu_len: bytes.len() - smsc.len(),
            bytes,
        });
    }
    Ok(parts)
}

/// Encodes an SMS-STATUS-REPORT (TS 23.040 §9.2.2.3) without the optional TP-PI fields, as a
/// network sends it in `+CDS`. TP-MMS is set (no more messages).
pub fn encode_status_report(sr: &StatusReport) -> EncodedPart {
    let mut bytes = Vec::with_capacity(40);
    smsc_prefix(&sr.smsc, &mut bytes);
    let smsc_len = bytes.len();
    bytes.push(MTI_STATUS_REPORT | 0x04);
    bytes.push(sr.message_reference);
    if sr.recipient.encode_tp(&mut bytes).is_err() {
        // An address that cannot be encoded (only reachable by building one by hand with
        // bad digits) is sent as an empty unknown-type address rather than a broken PDU.
        bytes.extend_from_slice(&[0x00, 0x81]);
    }
    encode_timestamp(&sr.sc_timestamp, &mut bytes);
    encode_timestamp(&sr.discharge_time, &mut bytes);
    bytes.push(sr.status);
    EncodedPart {
        tpdu_len: bytes.len() - smsc_len,
        bytes,
    }
}

/// Encodes an SMS-DELIVER (TS 23.040 §9.2.2.1) carrying one part: `text` for GSM-7 and UCS-2,
/// `user_data` for 8-bit data, with the concatenation UDH when `concat` is set. `Deliver` has
/// no place for TP-RP, TP-SRI or UDH elements other than concatenation, so those are not
/// written; everything else round-trips through [`decode`].
pub fn encode_deliver(d: &Deliver) -> Result<EncodedPart, EncodeError> {
    let (dcs_encoding, _) = text::dcs_info(d.dcs);
    if dcs_encoding != d.encoding {
        return Err(EncodeError::DcsMismatch {
            dcs: d.dcs,
            encoding: d.encoding.name(),
        });
    }
    let body = match d.encoding {
        Encoding::EightBit => d.user_data.clone(),
        e => text::body(&d.text, e).ok_or(EncodeError::NotRepresentable)?,
    };
    let (udl, ud) =
        text::encode_ud(&body, d.encoding, d.concat).ok_or(EncodeError::TooLong(body.len()))?;
    let mut bytes = Vec::with_capacity(40 + ud.len());
    smsc_prefix(&d.smsc, &mut bytes);
    let smsc_len = bytes.len();
    let mut first = MTI_DELIVER;
    if !d.more_messages {
        first |= 0x04; // TP-MMS: no more messages waiting
    }
    if d.concat.is_some() {
        first |= 0x40;
    }
    bytes.push(first);
    d.originator.encode_tp(&mut bytes)?;
    bytes.push(d.pid);
    bytes.push(d.dcs);
    encode_timestamp(&d.sc_timestamp, &mut bytes);
    bytes.push(udl);
    bytes.extend_from_slice(&ud);
    Ok(EncodedPart {
        tpdu_len: bytes.len() - smsc_len,
        bytes,
    })
}

fn smsc_prefix(smsc: &Option<Address>, out: &mut Vec<u8>) {
    let start = out.len();
    let ok = smsc.as_ref().is_some_and(|a| a.encode_smsc(out).is_ok());
    if !ok {
        out.truncate(start);
        out.push(0x00);
    }
}

/// Decodes hex (either case, surrounding whitespace ignored) and then the PDU.
pub fn decode_hex(hex: &str) -> Result<Pdu, DecodeError> {
    let hex = hex.trim();
    let bytes = hex::decode(hex).map_err(|e| {
        let offset = match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => index / 2,
            _ => hex.len() / 2,
        };
        DecodeError {
            field: "hex",
            offset,
            reason: e.to_string(),
        }
    })?;
    decode(&bytes)
}

/// Decodes a PDU as PDU mode shows it: SMSC length octet first, then the TPDU. The TP-MTI
/// decides the type; an MTI of 11 (reserved) is an error. `bytes` is the whole PDU: a byte
/// after the last field (the TP-UD that TP-UDL announces, or what a report's TP-PI announces)
/// is an error, so that something which merely starts like a PDU is not taken for one.
pub fn decode(bytes: &[u8]) -> Result<Pdu, DecodeError> {
    decode_pdu(bytes)
}

/// Decodes a PDU whose TPDU length the modem announced (`+CMT: ,<length>`, `+CDS: <length>`,
/// `+CMGR: <stat>,,<length>`, TS 27.005 §3.4.1 / §3.4.3; the SMSC prefix is not counted). A PDU
/// longer or shorter than announced is refused before any field is read: the modem and we would
/// otherwise disagree on where the message ends.
pub fn decode_announced(bytes: &[u8], tpdu_len: usize) -> Result<Pdu, DecodeError> {
    if let Some(&smsc_len) = bytes.first() {
        let prefix = 1 + usize::from(smsc_len);
        let actual = bytes.len().saturating_sub(prefix);
        if bytes.len() < prefix || actual != tpdu_len {
            return Err(DecodeError {
                field: "TPDU length",
                offset: prefix.min(bytes.len()),
                reason: format!(
                    "the modem announced {tpdu_len} TPDU octets after the {prefix}-octet SMSC \
                     prefix, but {actual} follow"
                ),
            });
        }
    }
    decode_pdu(bytes)
}

fn decode_pdu(bytes: &[u8]) -> Result<Pdu, DecodeError> {
    let mut r = Reader::new(bytes);
    let smsc = Address::decode_smsc(&mut r)?;
    let first_at = r.pos();
    let first = r.u8("first octet")?;
    match first & 0x03 {
        MTI_DELIVER => decode_deliver(&mut r, smsc, first).map(Pdu::Deliver),
        MTI_SUBMIT => decode_submit(&mut r, smsc, first).map(Pdu::Submit),
        MTI_STATUS_REPORT => decode_status_report(&mut r, smsc, first).map(Pdu::StatusReport),
        _ => Err(r.error_at("TP-MTI", first_at, "reserved message type 11".into())),
    }
}

fn decode_submit(
    r: &mut Reader<'_>,
    smsc: Option<Address>,
    first: u8,
) -> Result<Submit, DecodeError> {
    let message_reference = r.u8("TP-MR")?;
    let destination = Address::decode_tp(r, "TP-DA")?;
    let pid = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let (encoding, flash) = text::dcs_info(dcs);
    let validity = match (first >> 3) & 0x03 {
        0b00 => None,
        0b10 => Some(Validity::Relative(r.u8("TP-VP")?)),
        0b11 => Some(Validity::Absolute(decode_timestamp(r, "TP-VP")?)),
        _ => {
            let raw = r.take(7, "TP-VP")?;
            let mut arr = [0u8; 7];
            arr.copy_from_slice(raw);
            Some(Validity::Enhanced(arr))
        }
    };
    let ud = text::decode_ud(r, first & 0x40 != 0, encoding)?;
    Ok(Submit {
        smsc,
        reject_duplicates: first & 0x04 != 0,
        status_report_request: first & 0x20 != 0,
        message_reference,
        destination,
        pid,
        dcs,
        encoding,
        flash,
        validity,
        concat: ud.concat,
        text: ud.text,
        user_data: ud.user_data,
    })
}

fn decode_deliver(
    r: &mut Reader<'_>,
    smsc: Option<Address>,
    first: u8,
) -> Result<Deliver, DecodeError> {
    let originator = Address::decode_tp(r, "TP-OA")?;
    let pid = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let (encoding, _) = text::dcs_info(dcs);
    let sc_timestamp = decode_timestamp(r, "TP-SCTS")?;
    let ud = text::decode_ud(r, first & 0x40 != 0, encoding)?;
    Ok(Deliver {
        smsc,
        originator,
        pid,
        dcs,
        encoding,
        sc_timestamp,
        concat: ud.concat,
        text: ud.text,
        user_data: ud.user_data,
        more_messages: first & 0x04 == 0,
    })
}

/// TP-PI and the fields it announces are optional (TS 23.040 §9.2.3.27): they are read so
/// that a malformed tail is reported, but not kept; a report's meaning is in TP-ST.
fn decode_status_report(
    r: &mut Reader<'_>,
    smsc: Option<Address>,
    first: u8,
) -> Result<StatusReport, DecodeError> {
    let message_reference = r.u8("TP-MR")?;
    let recipient = Address::decode_tp(r, "TP-RA")?;
    let sc_timestamp = decode_timestamp(r, "TP-SCTS")?;
    let discharge_time = decode_timestamp(r, "TP-DT")?;
    let status = r.u8("TP-ST")?;
    if r.remaining() > 0 {
        let pi_at = r.pos();
        let mut pi = r.u8("TP-PI")?;
        let first_pi = pi;
        // Bit 7 extends TP-PI by another octet; those further octets are reserved.
        while pi & 0x80 != 0 {
            pi = r.u8("TP-PI")?;
        }
        if first_pi & 0x01 != 0 {
            r.u8("TP-PID")?;
        }
        let mut encoding = Encoding::Gsm7;
        if first_pi & 0x02 != 0 {
            encoding = text::dcs_info(r.u8("TP-DCS")?).0;
        }
        if first_pi & 0x04 != 0 {
            // TP-UD is the last field; `decode_ud` refuses anything after it.
            text::decode_ud(r, first & 0x40 != 0, encoding)?;
        } else if r.remaining() > 0 {
            return Err(r.error_at(
                "TP-PI",
                pi_at,
                format!(
                    "0x{first_pi:02X} announces no user data, but {} more bytes follow at byte {}",
                    r.remaining(),
                    r.pos()
                ),
            ));
        }
    }
    Ok(StatusReport {
        smsc,
        message_reference,
        recipient,
        sc_timestamp,
        discharge_time,
        status,
    })
}

/// Two decimal digits in swapped-nibble order: units in the high nibble.
fn bcd(b: u8) -> Option<u8> {
    let (tens, units) = (b & 0x0F, b >> 4);
    (tens <= 9 && units <= 9).then_some(tens * 10 + units)
}

fn to_bcd(v: u8) -> u8 {
    let v = v % 100;
    (v / 10) | (v % 10) << 4
}

/// TS 23.040 §9.2.3.11: YY MM DD hh mm ss TZ, semi-octets with swapped nibbles; bit 3 of the
/// TZ octet is the sign of the quarter-hour offset.
fn decode_timestamp(r: &mut Reader<'_>, field: &'static str) -> Result<Timestamp, DecodeError> {
    let at = r.pos();
    let raw = r.take(7, field)?;
    let mut d = [0u8; 6];
    for (i, b) in raw[..6].iter().enumerate() {
        d[i] = bcd(*b).ok_or_else(|| {
            r.error_at(
                field,
                at + i,
                format!("0x{b:02X} is not two decimal digits"),
            )
        })?;
    }
    let tz = raw[6];
    let q = bcd(tz & 0xF7)
        .ok_or_else(|| r.error_at(field, at + 6, format!("time zone 0x{tz:02X} is not BCD")))?;
    // Two BCD digits with the sign bit removed are at most 79, which fits an i8.
    let q = q as i8;
    // SMS predates 2000 by a decade: 90..=99 are the 1990s, everything else is 20YY.
    let year = if d[0] >= 90 { 1900 } else { 2000 } + u16::from(d[0]);
    let [_, month, day, hour, minute, second] = d;
    // A date no clock can show is not a timestamp: bytes that are not a PDU (all zeros, say)
    // would otherwise decode as the 0th day of the 0th month.
    let impossible = |i: usize, what: &str, v: u8, range: &str| {
        r.error_at(
            field,
            at + i,
            format!("{what} {v} is not {range} (octet 0x{:02X})", raw[i]),
        )
    };
    if !(1..=12).contains(&month) {
        return Err(impossible(1, "month", month, "1..=12"));
    }
    let last_day = days_in_month(year, month);
    if !(1..=last_day).contains(&day) {
        return Err(impossible(
            2,
            "day",
            day,
            &format!("1..={last_day} in {year:04}-{month:02}"),
        ));
    }
    if hour > 23 {
        return Err(impossible(3, "hour", hour, "0..=23"));
    }
    if minute > 59 {
        return Err(impossible(4, "minute", minute, "0..=59"));
    }
    if second > 59 {
        return Err(impossible(5, "second", second, "0..=59"));
    }
    Ok(Timestamp {
        year,
        month,
        day,
        hour,
        minute,
        second,
        tz_quarter_hours: if tz & 0x08 != 0 { -q } else { q },
    })
}

/// Gregorian month lengths; `month` is 1..=12.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

fn encode_timestamp(t: &Timestamp, out: &mut Vec<u8>) {
    out.push(to_bcd((t.year % 100) as u8));
    for v in [t.month, t.day, t.hour, t.minute, t.second] {
        out.push(to_bcd(v));
    }
    let q = t.tz_quarter_hours.unsigned_abs().min(79);
    let mut tz = to_bcd(q);
    if t.tz_quarter_hours < 0 {
        tz |= 0x08;
    }
    out.push(tz);
}
