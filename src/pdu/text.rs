//! Text ↔ user data: choosing GSM-7 or UCS-2, splitting long texts into concatenated parts
//! (TS 23.040 §9.2.3.24.1), the user data header, and TP-DCS (TS 23.038 §4).

use super::{Concat, DecodeError, Encoding, Reader, gsm7};

/// Septets in one unsplit GSM-7 SMS (140 octets × 8 / 7).
pub const GSM7_SINGLE: usize = 160;
/// Septets per part next to a 6-octet concatenation UDH: 134 octets, minus one fill bit.
pub const GSM7_MULTI: usize = 153;
/// UTF-16 units in one unsplit UCS-2 SMS.
pub const UCS2_SINGLE: usize = 70;
/// UTF-16 units per part next to a 6-octet concatenation UDH.
pub const UCS2_MULTI: usize = 67;
/// Octets of user data in one SMS (TS 23.040 §9.2.3.16).
pub const MAX_UD_OCTETS: usize = 140;

/// How a text would be sent, without encoding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// GSM-7 when every character fits, else UCS-2.
    pub encoding: Encoding,
    /// How many SMS the text takes (1 for empty text).
    pub parts: usize,
}

/// How many parts `text` needs and in which alphabet.
pub fn plan(text: &str) -> Plan {
    let encoding = choose(text);
    Plan {
        encoding,
        parts: split(text, encoding).len(),
    }
}

/// GSM-7 when every character is in the default alphabet or extension table, else UCS-2.
pub(crate) fn choose(text: &str) -> Encoding {
    if gsm7::fits(text) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    }
}

/// What one character costs in the unit `encoding` counts (septets or UTF-16 units). A
/// character GSM-7 lacks costs its UCS-2 size so that callers never see a panic.
fn cost(c: char, encoding: Encoding) -> usize {
    match encoding {
        Encoding::Gsm7 => gsm7::septet_cost(c).unwrap_or(2),
        Encoding::Ucs2 | Encoding::EightBit => c.len_utf16(),
    }
}

/// Splits `text` into the slices each part carries. Whole characters only, so an escape
/// sequence (two septets) or a surrogate pair (two units) never straddles two parts.
pub(crate) fn split(text: &str, encoding: Encoding) -> Vec<&str> {
    let (single, multi) = match encoding {
        Encoding::Gsm7 => (GSM7_SINGLE, GSM7_MULTI),
        _ => (UCS2_SINGLE, UCS2_MULTI),
    };
    let total: usize = text.chars().map(|c| cost(c, encoding)).sum();
    if total <= single {
        return vec![text];
    }
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, c) in text.char_indices() {
        let n = cost(c, encoding);
        if used + n > multi {
            parts.push(&text[start..i]);
            start = i;
            used = 0;
        }
        used += n;
    }
    parts.push(&text[start..]);
    parts
}

/// The body of `text` in `encoding`'s code units: unpacked septets or UTF-16BE octets.
pub(crate) fn body(text: &str, encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Gsm7 => gsm7::encode(text),
        Encoding::Ucs2 => Some(text.encode_utf16().flat_map(u16::to_be_bytes).collect()),
        Encoding::EightBit => Some(text.as_bytes().to_vec()),
    }
}

/// Text from a body; empty for 8-bit data, which has no defined character set. Unpaired
/// surrogates (another sender's split) become U+FFFD rather than an error.
pub(crate) fn text_of(body: &[u8], encoding: Encoding) -> String {
    match encoding {
        Encoding::Gsm7 => gsm7::decode(body),
        Encoding::Ucs2 => {
            let units: Vec<u16> = body
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        Encoding::EightBit => String::new(),
    }
}

/// TP-DCS for a message we originate: general data coding, class 0 when `flash`.
pub(crate) fn dcs_for(encoding: Encoding, flash: bool) -> u8 {
    let alphabet = match encoding {
        Encoding::Gsm7 => 0x00,
        Encoding::EightBit => 0x04,
        Encoding::Ucs2 => 0x08,
    };
    if flash { alphabet | 0x10 } else { alphabet }
}

/// The alphabet and class-0 flag a TP-DCS selects (TS 23.038 §4). Reserved alphabets and
/// reserved coding groups are read as GSM-7, as the spec advises; compressed text is treated
/// as 8-bit data because we do not implement TS 23.042 compression.
pub(crate) fn dcs_info(dcs: u8) -> (Encoding, bool) {
    match dcs >> 4 {
        // General data coding (00xx) and automatic deletion (01xx).
        0x0..=0x7 => {
            let class0 = dcs & 0x13 == 0x10;
            if dcs & 0x20 != 0 {
                return (Encoding::EightBit, class0);
            }
            let enc = match (dcs >> 2) & 0x03 {
                0b01 => Encoding::EightBit,
                0b10 => Encoding::Ucs2,
                _ => Encoding::Gsm7,
            };
            (enc, class0)
        }
        // Message waiting indication: discard / store with GSM-7, store with UCS-2.
        0xC | 0xD => (Encoding::Gsm7, false),
        0xE => (Encoding::Ucs2, false),
        // Data coding / message class.
        0xF => {
            let enc = if dcs & 0x04 != 0 {
                Encoding::EightBit
            } else {
                Encoding::Gsm7
            };
            (enc, dcs & 0x03 == 0)
        }
        _ => (Encoding::Gsm7, false),
    }
}

/// The user data header for a concatenation element: IEI 0x00 (8-bit reference) when the
/// reference fits an octet, else IEI 0x08 (16-bit). UDHL included.
fn concat_udh(c: Concat) -> Vec<u8> {
    match u8::try_from(c.reference) {
        Ok(r) => vec![0x05, 0x00, 0x03, r, c.total, c.seq],
        Err(_) => {
            let [hi, lo] = c.reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, hi, lo, c.total, c.seq]
        }
    }
}

/// TP-UDL and TP-UD for a body, with the concatenation UDH when `concat` is given. Returns
/// `None` if it does not fit in 140 octets.
pub(crate) fn encode_ud(
    body: &[u8],
    encoding: Encoding,
    concat: Option<Concat>,
) -> Option<(u8, Vec<u8>)> {
    let udh = concat.map(concat_udh).unwrap_or_default();
    let (udl, ud) = match encoding {
        Encoding::Gsm7 => {
            let fill = if udh.is_empty() {
                0
            } else {
                gsm7::fill_bits(udh.len())
            };
            let mut ud = udh.clone();
            ud.extend(gsm7::pack(body, fill));
            let header = if udh.is_empty() {
                0
            } else {
                gsm7::header_septets(udh.len())
            };
            (header + body.len(), ud)
        }
        Encoding::Ucs2 | Encoding::EightBit => {
            let mut ud = udh;
            ud.extend_from_slice(body);
            (ud.len(), ud)
        }
    };
    if ud.len() > MAX_UD_OCTETS {
        return None;
    }
    Some((u8::try_from(udl).ok()?, ud))
}

/// What the user data of one PDU carries.
pub(crate) struct DecodedUd {
    /// The concatenation element, if the UDH has one.
    pub concat: Option<Concat>,
    /// The text; empty for 8-bit data.
    pub text: String,
    /// The body after the UDH, in code units (see `Submit::user_data`).
    pub user_data: Vec<u8>,
}

/// Reads TP-UDL and TP-UD, the last field of every TPDU (TS 23.040 §9.2.2): an octet after the
/// user data TP-UDL announces is an error, since a decoder that skips it would accept bytes
/// that are not a PDU at all (a buffer of zeros reads as a DELIVER with 390 spare octets).
pub(crate) fn decode_ud(
    r: &mut Reader<'_>,
    udhi: bool,
    encoding: Encoding,
) -> Result<DecodedUd, DecodeError> {
    let udl_at = r.pos();
    let udl = usize::from(r.u8("TP-UDL")?);
    let ud_at = r.pos();
    let octets = match encoding {
        Encoding::Gsm7 => (udl * 7).div_ceil(8),
        _ => udl,
    };
    if octets > r.remaining() {
        return Err(r.error_at(
            "TP-UDL",
            udl_at,
            format!(
                "announces {udl} units ({octets} octets) but only {} octets follow",
                r.remaining()
            ),
        ));
    }
    let ud = r.take(octets, "TP-UD")?;
    if r.remaining() > 0 {
        return Err(r.error_at(
            "TP-UDL",
            udl_at,
            format!(
                "announces {udl} units ({octets} octets, ending at byte {}) but {} more bytes follow",
                r.pos(),
                r.remaining()
            ),
        ));
    }
    let (concat, udh_len) = if udhi {
        let udhl = usize::from(*ud.first().ok_or_else(|| {
            r.error_at("TP-UDH", ud_at, "UDHI set but user data is empty".into())
        })?);
        if udhl + 1 > ud.len() {
            return Err(r.error_at(
                "TP-UDH",
                ud_at,
                format!("UDHL {udhl} exceeds the {} octets of user data", ud.len()),
            ));
        }
        (parse_udh(&ud[1..=udhl], ud_at + 1)?, udhl + 1)
    } else {
        (None, 0)
    };
    let user_data = match encoding {
        Encoding::Gsm7 => {
            let header = if udhi {
                gsm7::header_septets(udh_len)
            } else {
                0
            };
            let count = udl.checked_sub(header).ok_or_else(|| {
                r.error_at(
                    "TP-UDL",
                    udl_at,
                    format!("{udl} septets cannot hold a {udh_len}-octet header"),
                )
            })?;
            let fill = if udhi { gsm7::fill_bits(udh_len) } else { 0 };
            gsm7::unpack(&ud[udh_len..], fill, count)
                .ok_or_else(|| r.error_at("TP-UD", ud_at, "septets truncated".into()))?
        }
        _ => ud[udh_len..].to_vec(),
    };
    Ok(DecodedUd {
        concat,
        text: text_of(&user_data, encoding),
        user_data,
    })
}

/// Walks the information elements of a UDH (without its UDHL octet), keeping the last
/// concatenation element; other elements are skipped.
fn parse_udh(udh: &[u8], base: usize) -> Result<Option<Concat>, DecodeError> {
    let mut concat = None;
    let mut i = 0;
    while i < udh.len() {
        let iei = udh[i];
        let Some(&len) = udh.get(i + 1) else {
            return Err(DecodeError {
                field: "TP-UDH",
                offset: base + i,
                reason: format!("information element 0x{iei:02X} has no length"),
            });
        };
        let data = udh
            .get(i + 2..i + 2 + usize::from(len))
            .ok_or(DecodeError {
                field: "TP-UDH",
                offset: base + i,
                reason: format!("information element 0x{iei:02X} overruns the header"),
            })?;
        match (iei, data) {
            (0x00, &[r, total, seq]) => {
                concat = Some(Concat {
                    reference: u16::from(r),
                    total,
                    seq,
                })
            }
            (0x08, &[hi, lo, total, seq]) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([hi, lo]),
                    total,
                    seq,
                })
            }
            (0x00 | 0x08, _) => {
                return Err(DecodeError {
                    field: "TP-UDH",
                    offset: base + i,
                    reason: format!("concatenation element with length {len}"),
                });
            }
            _ => {}
        }
        i += 2 + usize::from(len);
    }
    Ok(concat)
}
