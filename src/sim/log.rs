//! The simulator's log (SPEC.md "The simulator's log"): one JSON line per accepted message,
//! written when its last part arrives. Parts of a concatenated message are reassembled by
//! (destination, concatenation reference) in sequence order (TS 23.040 §9.2.3.24.1).
//!
//! Reassembly is pure; writing the line is the runner's job. The reassembler outlives a
//! simulated unplug: what the network already accepted stays accepted.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::core::AcceptedPart;

/// A whole message, ready to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    /// Destination as in the PDU (`+` for international numbers).
    pub to: String,
    /// The texts of all parts joined in sequence order.
    pub text: String,
    /// How many parts made the message.
    pub parts: usize,
    /// Uppercase hex of each part's PDU in sequence order; empty for text-mode sends.
    pub pdus: Vec<String>,
}

impl LoggedMessage {
    /// The JSON line (without the newline), stamped with `at`.
    pub fn to_json_line(&self, at: OffsetDateTime) -> String {
        let at = at
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default();
        // Built by hand to keep SPEC.md's field order (serde_json's map would sort the keys).
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let pdus: Vec<String> = self.pdus.iter().map(|p| quote(p)).collect();
        format!(
            "{{\"at\":{},\"to\":{},\"text\":{},\"parts\":{},\"pdu\":[{}]}}",
            quote(&at),
            quote(&self.to),
            quote(&self.text),
            self.parts,
            pdus.join(",")
        )
    }
}

/// Collects parts of concatenated messages until each is complete.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// Parts seen so far, keyed by (destination, reference), each by sequence number.
    pending: BTreeMap<(String, u16), BTreeMap<u8, AcceptedPart>>,
}

impl Reassembler {
    /// Adds a part; returns the message when this part completes it.
    pub fn push(&mut self, part: AcceptedPart) -> Option<LoggedMessage> {
        let Some((reference, total, seq)) = part.concat.filter(|c| c.1 > 1) else {
            return Some(LoggedMessage {
                to: part.to,
                text: part.text,
                parts: 1,
                pdus: part.pdu_hex.into_iter().collect(),
            });
        };
        let key = (part.to.clone(), reference);
        let parts = self.pending.entry(key.clone()).or_default();
        // A repeated sequence number is a client's retry of that part: the newest one wins.
        parts.insert(seq, part);
        if parts.len() < usize::from(total) || !(1..=total).all(|s| parts.contains_key(&s)) {
            return None;
        }
        let parts = self.pending.remove(&key)?;
        let mut msg = LoggedMessage {
            to: key.0,
            text: String::new(),
            parts: parts.len(),
            pdus: Vec::new(),
        };
        for (_, p) in parts {
            msg.text.push_str(&p.text);
            msg.pdus.extend(p.pdu_hex);
        }
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(to: &str, text: &str, concat: Option<(u16, u8, u8)>) -> AcceptedPart {
        AcceptedPart {
            to: to.into(),
            text: text.into(),
            concat,
            pdu_hex: Some(format!("PDU-{text}")),
        }
    }

    #[test]
    fn single_parts_are_logged_at_once() {
        let mut r = Reassembler::default();
        let m = r.push(part("+1555", "hi", None)).unwrap();
        assert_eq!((m.text.as_str(), m.parts), ("hi", 1));
        assert_eq!(m.pdus, vec!["PDU-hi".to_string()]);
    }

    #[test]
    fn parts_are_joined_in_sequence_order_per_destination_and_reference() {
        let mut r = Reassembler::default();
        assert_eq!(r.push(part("+1", "c", Some((9, 3, 3)))), None);
        assert_eq!(r.push(part("+2", "X", Some((9, 2, 1)))), None);
        assert_eq!(r.push(part("+1", "a", Some((9, 3, 1)))), None);
        let m = r.push(part("+1", "b", Some((9, 3, 2)))).unwrap();
        assert_eq!(m.text, "abc");
        assert_eq!(m.parts, 3);
        assert_eq!(m.pdus, vec!["PDU-a", "PDU-b", "PDU-c"]);
        let m = r.push(part("+2", "Y", Some((9, 2, 2)))).unwrap();
        assert_eq!(m.text, "XY");
    }

    #[test]
    fn json_line_has_the_spec_fields() {
        let m = LoggedMessage {
            to: "+1555".into(),
            text: "hé".into(),
            parts: 1,
            pdus: vec![],
        };
        let line = m.to_json_line(time::macros::datetime!(2026-11-22 10:00:00 UTC));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["at"], "2026-11-22T10:00:00Z");
        assert_eq!(v["to"], "+1555");
        assert_eq!(v["text"], "hé");
        assert_eq!(v["parts"], 1);
        assert_eq!(v["pdu"], serde_json::json!([]));
        assert!(
            line.starts_with("{\"at\":\"2026-11-22T10:00:00Z\",\"to\":"),
            "{line}"
        );
        let two = LoggedMessage {
            pdus: vec!["00AB".into(), "00CD".into()],
            text: "quote \" and \\ and \n".into(),
            ..m
        };
        let v: serde_json::Value = serde_json::from_str(
            &two.to_json_line(time::macros::datetime!(2026-11-22 10:00:00 UTC)),
        )
        .unwrap();
        assert_eq!(v["pdu"], serde_json::json!(["00AB", "00CD"]));
        assert_eq!(v["text"], "quote \" and \\ and \n");
    }
}
