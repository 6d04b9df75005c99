//! The recipient's number, validated once at the edge of every use case.
//!
//! **Invariant:** a [`Msisdn`] always holds strict E.164 (`+` and 8 to 15 digits, the first not
//! 0); every refusal says how to fix the number.

use std::fmt;

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0 (ITU-T E.164 §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

/// Fewest digits accepted. E.164 allows shorter numbers in a few small countries, but below 8
/// digits (country code included) a mobile number is almost surely missing its country code.
pub const MIN_E164_DIGITS: usize = 8;

/// Most digits E.164 allows (ITU-T E.164 §6.1).
pub const MAX_E164_DIGITS: usize = 15;

impl Msisdn {
    /// Parses strictly, and says how to fix what it refuses.
    pub fn parse(s: &str) -> Result<Msisdn, String> {
        const EXAMPLE: &str = "e.g. +15551234567";
        if s.is_empty() {
            return Err(format!(
                "is empty; give the number in E.164 form, {EXAMPLE}"
            ));
        }
        if s.trim() != s
            || s.chars()
                .any(|c| matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        {
            return Err(format!(
                "remove spaces, dashes, dots and brackets: E.164 is + followed by digits only, \
                 {EXAMPLE}"
            ));
        }
        let digits = match s.strip_prefix('+') {
            Some(d) => d,
            None if s.starts_with("00") && s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "replace the international prefix 00 with +, i.e. +{}",
                    &s[2..]
                ));
            }
            None if s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "add the country code with a leading +: E.164 numbers start with +, {EXAMPLE}"
                ));
            }
            None => {
                return Err(format!(
                    "is not a phone number: E.164 is + followed by digits only, {EXAMPLE}"
                ));
            }
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(if c == '+' {
                "has more than one +".to_owned()
            } else {
                format!("contains {c:?}; only digits may follow the +, {EXAMPLE}")
            });
        }
        if digits.starts_with('0') {
            return Err(
                "no country code starts with 0: drop the trunk prefix 0 and put the country \
                 code after the +"
                    .to_owned(),
            );
        }
        if digits.len() < MIN_E164_DIGITS {
            return Err(format!(
                "too short: {} digits, but an E.164 mobile number has at least {MIN_E164_DIGITS} \
                 including the country code",
                digits.len()
            ));
        }
        if digits.len() > MAX_E164_DIGITS {
            return Err(format!(
                "too long: {} digits, but E.164 numbers have at most {MAX_E164_DIGITS}",
                digits.len()
            ));
        }
        Ok(Msisdn(s.to_owned()))
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str, detail_has: Option<&str>) {
        match (Msisdn::parse(input), detail_has) {
            (Ok(m), None) => assert_eq!(m.as_str(), input),
            (Err(d), Some(want)) => assert!(d.contains(want), "{input:?}: {d:?} lacks {want:?}"),
            (r, want) => panic!("{input:?}: got {r:?}, wanted error containing {want:?}"),
        }
    }

    #[test]
    fn e164_validation_explains_itself() {
        e164("+15551234567", None);
        e164("+4915112345678", None);
        e164("+12345678", None);
        e164("+123456789012345", None);
        e164("", Some("empty"));
        e164("+1 555 123 4567", Some("remove spaces"));
        e164("+1-555-123-4567", Some("remove spaces"));
        e164(" +15551234567", Some("remove spaces"));
        e164("5551234567", Some("add the country code"));
        e164("0015551234567", Some("replace the international prefix 00"));
        e164("+05551234567", Some("starts with 0"));
        e164("+1234567", Some("too short"));
        e164(
            "+1234567890123456",
            Some("too long: 16 digits, but E.164 numbers have at most 15"),
        );
        e164("+1555abc4567", Some("only digits"));
        e164("++15551234567", Some("more than one +"));
        e164("hello", Some("not a phone number"));
    }
}
