//! The GSM 7-bit default alphabet and its extension table (3GPP TS 23.038 §6.2.1 and
//! §6.2.1.1), and septet packing (TS 23.038 §6.1.2.1.1) with the fill bits that align the first
//! septet after a user data header (TS 23.040 §9.2.3.24).

/// The escape septet that introduces a character of the extension table.
pub const ESC: u8 = 0x1B;

/// TS 23.038 §6.2.1, default alphabet indexed by septet value. 0x1B is the escape to the
/// extension table; it decodes to a space when it stands alone (the spec's advice for a
/// receiving entity that meets an escape it cannot follow).
const DEFAULT: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// TS 23.038 §6.2.1.1, the extension table: (septet after ESC, character).
pub const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets that encode `c`: one for the default alphabet, two (ESC + code) for the
/// extension table, `None` when the character is not in GSM-7 at all.
pub fn char_septets(c: char) -> Option<([u8; 2], usize)> {
    if let Some(&(code, _)) = EXTENSION.iter().find(|(_, ch)| *ch == c) {
        return Some(([ESC, code], 2));
    }
    // ESC itself is not a character; index 0x1B must never be produced from a space.
    DEFAULT
        .iter()
        .enumerate()
        .find(|&(i, ch)| *ch == c && i != usize::from(ESC))
        .map(|(i, _)| ([i as u8, 0], 1))
}

/// How many septets `c` costs in GSM-7, or `None` if it needs UCS-2.
pub fn septet_cost(c: char) -> Option<usize> {
    char_septets(c).map(|(_, n)| n)
}

/// True when every character of `text` is in the default alphabet or the extension table.
pub fn fits(text: &str) -> bool {
    text.chars().all(|c| septet_cost(c).is_some())
}

/// Encodes `text` to unpacked septets (one per byte); `None` if a character is not in GSM-7.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let (s, n) = char_septets(c)?;
        out.extend_from_slice(&s[..n]);
    }
    Some(out)
}

/// Decodes unpacked septets to text. Never fails: an escape followed by a code the extension
/// table lacks shows the default-alphabet character of that code (TS 23.038 §6.2.1.1 note), and
/// a trailing escape shows as a space. Bits above the seventh are ignored.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut i = 0;
    while i < septets.len() {
        let s = septets[i] & 0x7F;
        if s == ESC {
            match septets.get(i + 1).map(|n| n & 0x7F) {
                Some(code) => {
                    let ext = EXTENSION.iter().find(|(k, _)| *k == code).map(|(_, c)| *c);
                    out.push(ext.unwrap_or(DEFAULT[usize::from(code)]));
                    i += 2;
                }
                None => {
                    out.push(' ');
                    i += 1;
                }
            }
        } else {
            out.push(DEFAULT[usize::from(s)]);
            i += 1;
        }
    }
    out
}

/// Packs septets LSB first into octets (TS 23.038 §6.1.2.1.1), starting after `fill_bits`
/// zero bits so that text following a user data header starts on a septet boundary.
pub fn pack(septets: &[u8], fill_bits: usize) -> Vec<u8> {
    let total_bits = fill_bits + 7 * septets.len();
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = fill_bits + 7 * i;
        let (byte, shift) = (bit / 8, bit % 8);
        let v = u16::from(s & 0x7F) << shift;
        out[byte] |= v as u8;
        if shift > 1 {
            out[byte + 1] |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpacks `count` septets that start after `fill_bits` bits of `octets`. Returns `None` when
/// `octets` is too short to hold them.
pub fn unpack(octets: &[u8], fill_bits: usize, count: usize) -> Option<Vec<u8>> {
    let needed = fill_bits.checked_add(count.checked_mul(7)?)?.div_ceil(8);
    if needed > octets.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let bit = fill_bits + 7 * i;
        let (byte, shift) = (bit / 8, bit % 8);
        let lo = u16::from(octets[byte]);
        let hi = u16::from(octets.get(byte + 1).copied().unwrap_or(0));
        out.push((((hi << 8 | lo) >> shift) & 0x7F) as u8);
    }
    Some(out)
}

/// Fill bits between a user data header of `udh_octets` octets (UDHL included) and the first
/// septet of text (TS 23.040 §9.2.3.24).
pub fn fill_bits(udh_octets: usize) -> usize {
    (7 - (udh_octets * 8) % 7) % 7
}

/// Septets a user data header of `udh_octets` octets occupies, fill bits included; TP-UDL of a
/// GSM-7 message counts these as well as the text.
pub fn header_septets(udh_octets: usize) -> usize {
    (udh_octets * 8).div_ceil(7)
}
