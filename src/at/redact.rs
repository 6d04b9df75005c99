//! What of the modem's traffic may reach the log: every run of [`MIN_HEX_RUN`] or more hex
//! digits, in either case, is replaced by a marker.
//!
//! An SMS-SUBMIT PDU carries the OTP text packed (TS 23.040 §9.2.2.2, TS 23.038 §6.1.2.1), so
//! anyone who reads the log could decode the code with `simgate pdu decode`. Redacting only the
//! payload we wrote is not enough: modems echo it back (some in lower case), a late echo arrives
//! as an unsolicited line, and incoming texts and status reports are PDUs too. No AT line
//! simgate needs to read in the log has a hex run this long except identities (IMEI, ICCID),
//! which are shown by `/v1/modems` and `simgate modem probe` instead.

use std::borrow::Cow;

/// The shortest run of hex digits that is redacted. Ten hex digits are five octets: fewer than a
/// 6-digit code needs in GSM 7-bit packing (6 septets = 5.25 octets), and far fewer than any PDU.
pub const MIN_HEX_RUN: usize = 10;

/// `line` with every hex run of [`MIN_HEX_RUN`] or more digits replaced by `<hex:N>` (N digits).
pub fn redact(line: &str) -> Cow<'_, str> {
    let bytes = line.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= MIN_HEX_RUN {
            let o = out.get_or_insert_with(|| String::with_capacity(line.len()));
            o.push_str(&line[copied..start]);
            o.push_str(&format!("<hex:{}>", i - start));
            copied = i;
        }
    }
    match out {
        None => Cow::Borrowed(line),
        Some(mut o) => {
            o.push_str(&line[copied..]);
            Cow::Owned(o)
        }
    }
}

/// [`redact`] over every line of an answer.
pub fn redact_all(lines: &[String]) -> Vec<Cow<'_, str>> {
    lines.iter().map(|l| redact(l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdus_are_redacted_in_any_case_and_short_answers_are_kept() {
        let pdu = "0011000B915155214365F70000AA0AB0986C46ABD96EB81C";
        for (line, want) in [
            (pdu.to_string(), "<hex:48>".to_string()),
            (pdu.to_ascii_lowercase(), "<hex:48>".to_string()),
            (format!("> {pdu}\u{1a}"), "> <hex:48>\u{1a}".to_string()),
            (
                format!("+CMT: ,24\t{}", &pdu[..20]),
                "+CMT: ,24\t<hex:20>".to_string(),
            ),
            ("+CSQ: 20,99".into(), "+CSQ: 20,99".into()),
            ("+CMGS: 42".into(), "+CMGS: 42".into()),
            ("AT+CMGS=23".into(), "AT+CMGS=23".into()),
            (
                "+COPS: 0,2,\"23410\",7".into(),
                "+COPS: 0,2,\"23410\",7".into(),
            ),
            ("abcdef123".into(), "abcdef123".into()),
            ("356938035643809".into(), "<hex:15>".into()),
        ] {
            assert_eq!(redact(&line), want, "{line:?}");
        }
    }
}
