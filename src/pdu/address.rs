//! Address fields (TS 23.040 §9.1.2.5) and the SMSC address of TS 24.011 §8.2.5.2 as it
//! prefixes a PDU in TS 27.005 PDU mode, plus semi-octet helpers shared with timestamps.

use std::fmt;

use super::{DecodeError, EncodeError, Reader, gsm7};

/// What kind of number an address carries, from its type-of-number bits (TS 23.040 §9.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// TON 001: shown with a leading `+`.
    International,
    /// TON 010.
    National,
    /// TON 000: the network decides; what we send for numbers without `+`.
    Unknown,
    /// TON 101: a sender name in packed GSM-7 ("Bank", "Google").
    Alphanumeric,
    /// Any other TON; carries the raw type-of-address octet.
    Other(u8),
}

/// A phone number or sender name as carried in a PDU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// How to show `value` (a `+` for international numbers) and how to encode it.
    pub kind: AddressKind,
    /// The raw type-of-address octet, kept so that re-encoding reproduces the numbering plan.
    pub toa: u8,
    /// Digits (without `+`) for numbers, text for alphanumeric addresses.
    pub value: String,
}

/// Type of address for an international ISDN number.
pub const TOA_INTERNATIONAL: u8 = 0x91;
/// Type of address for an unknown-type ISDN number.
pub const TOA_UNKNOWN: u8 = 0x81;
/// Type of address for an alphanumeric sender (TON 101, NPI 0000).
pub const TOA_ALPHANUMERIC: u8 = 0xD0;

fn kind_of(toa: u8) -> AddressKind {
    match (toa >> 4) & 0x07 {
        0b001 => AddressKind::International,
        0b010 => AddressKind::National,
        0b000 => AddressKind::Unknown,
        0b101 => AddressKind::Alphanumeric,
        _ => AddressKind::Other(toa),
    }
}

/// An E.164 number (TS 23.040 §9.1.2.5: type of number international, numbering plan
/// E.164/ISDN), already validated by the one grammar of [`crate::model::Msisdn`].
impl From<&crate::model::Msisdn> for Address {
    fn from(n: &crate::model::Msisdn) -> Address {
        let digits = n.as_str().trim_start_matches('+');
        Address {
            kind: kind_of(TOA_INTERNATIONAL),
            toa: TOA_INTERNATIONAL,
            value: digits.to_string(),
        }
    }
}

impl Address {
    /// Parses a destination typed by a user: `+` then digits (international, TOA 0x91) or
    /// digits only (TOA 0x81); 1 to 20 digits, the most an address field can carry.
    pub fn parse_destination(s: &str) -> Result<Address, EncodeError> {
        let (international, digits) = match s.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EncodeError::InvalidNumber(s.to_string()));
        }
        let toa = if international {
            TOA_INTERNATIONAL
        } else {
            TOA_UNKNOWN
        };
        Ok(Address {
            kind: kind_of(toa),
            toa,
            value: digits.to_string(),
        })
    }

    /// An alphanumeric sender name (at most 11 GSM-7 characters, TS 23.040 §9.1.2.5).
    pub fn alphanumeric(name: &str) -> Result<Address, EncodeError> {
        match gsm7::encode(name) {
            Some(s) if !s.is_empty() && s.len() <= 11 => Ok(Address {
                kind: AddressKind::Alphanumeric,
                toa: TOA_ALPHANUMERIC,
                value: name.to_string(),
            }),
            _ => Err(EncodeError::InvalidNumber(name.to_string())),
        }
    }

    /// The address-value bytes and the "length" the field announces (semi-octets).
    fn value_bytes(&self) -> Result<(usize, Vec<u8>), EncodeError> {
        if self.kind == AddressKind::Alphanumeric {
            let septets = gsm7::encode(&self.value)
                .filter(|s| s.len() <= 11)
                .ok_or_else(|| EncodeError::InvalidNumber(self.value.clone()))?;
            let packed = gsm7::pack(&septets, 0);
            // The length counts the semi-octets actually used by the septets.
            return Ok(((septets.len() * 7).div_ceil(4), packed));
        }
        let digits = encode_digits(&self.value)
            .ok_or_else(|| EncodeError::InvalidNumber(self.value.clone()))?;
        Ok((self.value.len(), digits))
    }

    /// Encodes as a TP address field: length in semi-octets, TOA, value.
    pub(crate) fn encode_tp(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (len, bytes) = self.value_bytes()?;
        if bytes.len() > 10 {
            return Err(EncodeError::InvalidNumber(self.value.clone()));
        }
        out.push(len as u8);
        out.push(self.toa);
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Encodes as the SMSC prefix of a PDU-mode PDU: length in octets (TOA included), TOA,
    /// value.
    pub(crate) fn encode_smsc(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (_, bytes) = self
            .value_bytes()
            .map_err(|_| EncodeError::InvalidSmsc(self.value.clone()))?;
        // An empty value (length octet 1: a TOA and no digits) is legal on the wire, so it
        // re-encodes as it was decoded.
        if bytes.len() > 10 {
            return Err(EncodeError::InvalidSmsc(self.value.clone()));
        }
        out.push(bytes.len() as u8 + 1);
        out.push(self.toa);
        out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Decodes a TP address field (length in semi-octets).
    pub(crate) fn decode_tp(
        r: &mut Reader<'_>,
        field: &'static str,
    ) -> Result<Address, DecodeError> {
        let at = r.pos();
        let len = usize::from(r.u8(field)?);
        if len > 20 {
            return Err(r.error_at(field, at, format!("address length {len} exceeds 20")));
        }
        let toa = r.u8(field)?;
        let bytes = r.take(len.div_ceil(2), field)?;
        let kind = kind_of(toa);
        let value = if kind == AddressKind::Alphanumeric {
            let septets = gsm7::unpack(bytes, 0, len * 4 / 7)
                .ok_or_else(|| r.error_at(field, at, "alphanumeric address truncated".into()))?;
            gsm7::decode(&septets)
        } else {
            decode_digits(bytes, len)
                .ok_or_else(|| r.error_at(field, at + 2, "bad semi-octet digit".into()))?
        };
        Ok(Address { kind, toa, value })
    }

    /// Decodes the SMSC prefix (length in octets); `None` when the length octet is 0.
    pub(crate) fn decode_smsc(r: &mut Reader<'_>) -> Result<Option<Address>, DecodeError> {
        const FIELD: &str = "SMSC address";
        let at = r.pos();
        let len = usize::from(r.u8(FIELD)?);
        if len == 0 {
            return Ok(None);
        }
        if len > 11 {
            return Err(r.error_at(FIELD, at, format!("SMSC length {len} exceeds 11")));
        }
        let toa = r.u8(FIELD)?;
        let bytes = r.take(len - 1, FIELD)?;
        let kind = kind_of(toa);
        let value = if kind == AddressKind::Alphanumeric {
            gsm7::decode(&gsm7::unpack(bytes, 0, bytes.len() * 8 / 7).unwrap_or_default())
        } else {
            // Trailing F pads an odd count; decode_digits stops there.
            let digits =
                bytes.len() * 2 - usize::from(bytes.last().is_some_and(|b| b >> 4 == 0x0F));
            decode_digits(bytes, digits)
                .ok_or_else(|| r.error_at(FIELD, at + 2, "bad semi-octet digit".into()))?
        };
        Ok(Some(Address { kind, toa, value }))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AddressKind::International => write!(f, "+{}", self.value),
            _ => f.write_str(&self.value),
        }
    }
}

/// Digit characters of TS 23.040 §9.1.2.3 semi-octets: 0-9, `*`, `#`, `a`, `b`, `c`.
const DIGITS: &[u8; 15] = b"0123456789*#abc";

/// Swapped-nibble BCD of a digit string, padded with F when the count is odd
/// (TS 23.040 §9.1.2.3).
fn encode_digits(digits: &str) -> Option<Vec<u8>> {
    let nibbles = digits
        .bytes()
        .map(|b| DIGITS.iter().position(|d| *d == b).map(|p| p as u8))
        .collect::<Option<Vec<u8>>>()?;
    Some(
        nibbles
            .chunks(2)
            .map(|pair| pair[0] | pair.get(1).copied().unwrap_or(0x0F) << 4)
            .collect(),
    )
}

/// Reads `count` semi-octet digits; `None` on a nibble that is no digit (0xF inside the count).
fn decode_digits(bytes: &[u8], count: usize) -> Option<String> {
    (0..count)
        .map(|i| {
            let b = *bytes.get(i / 2)?;
            let n = if i % 2 == 0 { b & 0x0F } else { b >> 4 };
            DIGITS.get(usize::from(n)).map(|d| char::from(*d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_msisdn_is_the_international_address_the_parser_makes_of_it() {
        for n in ["+15551234567", "+4915112345678", "+861234567890"] {
            let m = crate::model::Msisdn::parse(n).unwrap();
            assert_eq!(Address::from(&m), Address::parse_destination(n).unwrap());
        }
    }
}
