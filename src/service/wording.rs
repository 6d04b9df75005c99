//! The wording of OTP texts: the masked text with holes where codes go (so a resend repeats the
//! first text with only the code changed), and which request field makes a text too long.
//!
//! **Invariant:** an added text keeps the first text's wording wherever it can be recovered
//! exactly; otherwise it falls back to the configured template.

use std::time::Duration;

use crate::model::{Message, Millis};
use crate::otp::{self, AppHash, CodeLength, Origin};
use crate::pdu;
use crate::store::OtpWording;

use super::{Service, ServiceError, invalid};

/// What an OTP text is made of, and which parts of it the request chose, to say which field
/// makes a text too long.
pub(super) struct TextInputs<'a> {
    pub(super) template: &'a str,
    pub(super) template_requested: bool,
    pub(super) len: CodeLength,
    pub(super) len_requested: bool,
    pub(super) ttl: Duration,
    pub(super) origin: Option<&'a Origin>,
    pub(super) app_hash: Option<&'a AppHash>,
    pub(super) app_hash_requested: bool,
}

/// An OTP text with holes where the code goes: `pieces[0] code pieces[1] code … pieces[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Wording {
    /// The literal text between the codes.
    pieces: Vec<String>,
    /// The code length the text was written for.
    len: CodeLength,
}

impl Wording {
    /// Splits a masked log text at its runs of exactly one code length of `*`.
    fn from_masked(masked: &str) -> Option<Wording> {
        // Find runs of '*' and take the code length from them; every run must have that length,
        // or the text has literal stars we cannot tell from the code.
        let mut runs = Vec::new();
        let mut start = None;
        for (i, c) in masked
            .char_indices()
            .chain(std::iter::once((masked.len(), '\n')))
        {
            match (c == '*', start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        let first = runs.first()?;
        let n = first.1 - first.0;
        if runs.iter().any(|(s, e)| e - s != n) {
            return None;
        }
        let len = otp::validate_code_length(n).ok()?;
        let mut pieces = Vec::new();
        let mut at = 0;
        for (s, e) in &runs {
            pieces.push(masked[at..*s].to_owned());
            at = *e;
        }
        pieces.push(masked[at..].to_owned());
        Some(Wording { pieces, len })
    }

    /// Splits a masked log text at the offsets the store recorded for its code; `None` when
    /// they do not point at masks of the recorded length (a text from elsewhere).
    fn from_offsets(masked: &str, w: &OtpWording) -> Option<Wording> {
        let len = otp::validate_code_length(w.code_length as usize).ok()?;
        let mut pieces = Vec::new();
        let mut at = 0;
        for &o in &w.code_offsets {
            let end = o.checked_add(len.get())?;
            let mask = masked.get(o..end)?;
            if o < at || !mask.bytes().all(|b| b == b'*') {
                return None;
            }
            pieces.push(masked[at..o].to_owned());
            at = end;
        }
        pieces.push(masked.get(at..)?.to_owned());
        (pieces.len() >= 2).then_some(Wording { pieces, len })
    }

    /// Splits a rendered text at a placeholder code.
    fn split(text: &str, placeholder: &str, len: CodeLength) -> Option<Wording> {
        let pieces: Vec<String> = text.split(placeholder).map(str::to_owned).collect();
        (pieces.len() >= 2).then_some(Wording { pieces, len })
    }

    pub(super) fn replace_code(&self, code: &str) -> String {
        self.pieces.join(code)
    }

    fn masked(&self) -> String {
        self.replace_code(&"*".repeat(self.len.get()))
    }
}

impl Service {
    /// The wording of an added text: the first text with its codes where the store recorded
    /// them; for OTPs from before that record, the first text's masked form when it has exactly
    /// the mask of one code length; else the configured template for the remaining lifetime.
    pub(super) fn reword(
        &self,
        first: Option<&Message>,
        recorded: Option<OtpWording>,
        remaining_ms: Millis,
    ) -> (Wording, String, CodeLength) {
        if let Some(m) = first {
            let exact = recorded.and_then(|r| Wording::from_offsets(&m.log_text, &r));
            if let Some(w) = exact.or_else(|| Wording::from_masked(&m.log_text)) {
                let masked = w.masked();
                let len = w.len;
                return (w, masked, len);
            }
        }
        let len = self.settings.code_length;
        let secs = u64::try_from(remaining_ms.max(1000) / 1000).unwrap_or(1);
        let placeholder = "\u{0}".repeat(len.get());
        let w = otp::render(
            &self.settings.template,
            &placeholder,
            Duration::from_secs(secs),
            None,
            None,
        )
        .ok()
        .and_then(|r| Wording::split(&r.text, &placeholder, len))
        .unwrap_or_else(|| Wording {
            pieces: vec![String::new(), String::new()],
            len,
        });
        let masked = w.masked();
        (w, masked, len)
    }

    /// The request field to blame when a text cannot fit a limit: the one whose default would
    /// shorten it most.
    pub(super) fn blame(&self, t: &TextInputs<'_>) -> &'static str {
        self.shortest_without(t).map_or("template", |(f, _)| f)
    }

    /// Of the fields the request chose, the one whose removal (or default) gives the fewest
    /// parts, with that count.
    fn shortest_without(&self, t: &TextInputs<'_>) -> Option<(&'static str, usize)> {
        let parts = |template: &str,
                     len: CodeLength,
                     origin: Option<&Origin>,
                     app_hash: Option<&AppHash>| {
            let mask = "*".repeat(len.get());
            otp::render(template, &mask, t.ttl, origin, app_hash)
                .map(|r| pdu::plan(&r.masked).parts)
                .unwrap_or(usize::MAX)
        };
        let mut candidates = Vec::new();
        if t.template_requested {
            candidates.push((
                "template",
                parts(&self.settings.template, t.len, t.origin, t.app_hash),
            ));
        }
        if t.origin.is_some() {
            candidates.push(("origin", parts(t.template, t.len, None, t.app_hash)));
        }
        if t.app_hash_requested {
            candidates.push(("app_hash", parts(t.template, t.len, t.origin, None)));
        }
        if t.len_requested {
            candidates.push((
                "code_length",
                parts(t.template, self.settings.code_length, t.origin, t.app_hash),
            ));
        }
        // The first of equals wins: the template is what usually makes a text long.
        candidates
            .into_iter()
            .reduce(|best, c| if c.1 < best.1 { c } else { best })
    }

    /// 422 for an OTP text over `otp.max_parts`, naming the field that made it long and why.
    pub(super) fn too_many_parts(
        &self,
        parts: usize,
        masked: &str,
        t: &TextInputs<'_>,
    ) -> ServiceError {
        let plan = pdu::plan(masked);
        let chars = masked.chars().count();
        let mut detail = format!(
            "the OTP text would need {parts} SMS parts ({chars} characters), more than \
             otp.max_parts = {}",
            self.settings.max_otp_parts
        );
        if plan.encoding == pdu::Encoding::Ucs2
            && let Some(c) = masked
                .chars()
                .find(|c| pdu::gsm7::char_septets(*c).is_none())
        {
            detail.push_str(&format!(
                "; {c:?} is outside the GSM 7-bit alphabet, so the whole text goes as UCS-2: 70 \
                 characters in one SMS, 67 per part when split, instead of 160 and 153"
            ));
        }
        let (field, hint) = match self.shortest_without(t) {
            Some((field, without)) => {
                let what = match field {
                    "template" => "the configured template instead of this one".to_owned(),
                    "origin" => format!(
                        "the origin line (\"@{} #<code>\", {} characters)",
                        t.origin.map_or("", |o| o.as_str()),
                        t.origin.map_or(0, |o| o.as_str().chars().count()) + t.len.get() + 4,
                    ),
                    "app_hash" => "the app hash line".to_owned(),
                    _ => format!(
                        "{} codes instead of {}",
                        otp::count_noun(self.settings.code_length.get() as u64, "digit"),
                        otp::count_noun(t.len.get() as u64, "digit"),
                    ),
                };
                (
                    field,
                    format!(
                        "; {field} makes it long: with {what} it needs {}",
                        otp::count_noun(without as u64, "part")
                    ),
                )
            }
            None => (
                "template",
                "; the configured template (otp.template) makes it long".to_owned(),
            ),
        };
        detail.push_str(&hint);
        invalid(field, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_from_masked_text() {
        let w = Wording::from_masked("Votre code : ******.\n\n@example.com #******").unwrap();
        assert_eq!(w.len.get(), 6);
        assert_eq!(
            w.replace_code("123456"),
            "Votre code : 123456.\n\n@example.com #123456"
        );
        assert_eq!(w.masked(), "Votre code : ******.\n\n@example.com #******");
        // Literal stars of another length make the mask ambiguous: fall back.
        assert!(Wording::from_masked("** code ******").is_none());
        assert!(Wording::from_masked("no code here").is_none());
    }

    #[test]
    fn wording_from_recorded_offsets_survives_literal_stars() {
        // "*{code}" masks to seven stars: the mask alone would make a 7-digit code of it.
        assert_eq!(Wording::from_masked("*******").unwrap().len.get(), 7);
        let w = Wording::from_offsets(
            "*******",
            &OtpWording {
                code_length: 6,
                code_offsets: vec![1],
            },
        )
        .unwrap();
        assert_eq!(w.len.get(), 6);
        assert_eq!(w.replace_code("123456"), "*123456");
        // Offsets that do not point at a mask of the recorded length are not trusted.
        let bad = |offsets: Vec<usize>, len| {
            Wording::from_offsets(
                "Code ****",
                &OtpWording {
                    code_length: len,
                    code_offsets: offsets,
                },
            )
        };
        assert!(bad(vec![0], 4).is_none());
        assert!(bad(vec![6], 4).is_none());
        assert!(bad(vec![5], 6).is_none());
        assert!(bad(vec![], 4).is_none());
        assert_eq!(bad(vec![5], 4).unwrap().replace_code("9876"), "Code 9876");
    }
}
