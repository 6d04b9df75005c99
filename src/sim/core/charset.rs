//! Text-mode character sets (TS 27.007 §5.5 `+CSCS`): how strings in commands, answers and
//! message bodies are coded.

/// TS 27.007 §5.5 character sets, for text-mode strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charset {
    Gsm,
    Ira,
    Latin1,
    Ucs2,
}

impl Charset {
    pub(super) fn name(self) -> &'static str {
        match self {
            Charset::Gsm => "GSM",
            Charset::Ira => "IRA",
            Charset::Latin1 => "8859-1",
            Charset::Ucs2 => "UCS2",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Charset> {
        match s.to_ascii_uppercase().as_str() {
            "GSM" => Some(Charset::Gsm),
            "IRA" | "ASCII" => Some(Charset::Ira),
            "8859-1" => Some(Charset::Latin1),
            "UCS2" => Some(Charset::Ucs2),
            _ => None,
        }
    }

    /// Decodes a text-mode string argument or body (TS 27.005 §4.3: the body follows +CSCS).
    pub(super) fn decode(self, bytes: &[u8]) -> Option<String> {
        match self {
            Charset::Ucs2 => {
                let raw = hex::decode(bytes.trim_ascii()).ok()?;
                if raw.len() % 2 != 0 {
                    return None;
                }
                let units: Vec<u16> = raw
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16(&units).ok()
            }
            Charset::Gsm => {
                if bytes.iter().any(|&b| b > 0x7F) {
                    return None;
                }
                Some(crate::pdu::gsm7::decode(bytes))
            }
            Charset::Ira => {
                if bytes.iter().any(|&b| b > 0x7F) {
                    return None;
                }
                Some(bytes.iter().map(|&b| b as char).collect())
            }
            Charset::Latin1 => Some(bytes.iter().map(|&b| b as char).collect()),
        }
    }

    /// Encodes a string for an answer in this character set.
    pub(super) fn encode(self, s: &str) -> String {
        match self {
            Charset::Ucs2 => s
                .encode_utf16()
                .map(|u| format!("{u:04X}"))
                .collect::<String>(),
            _ => s.to_string(),
        }
    }
}
