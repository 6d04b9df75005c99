//! Typed access to a request's fields and the parsers of the structured ones (`deliver`
//! parts, report outcomes, registration names), plus the answer shapes built from replies.
//! Pure: no runner, no socket, so each parser is tested on its own.

use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use crate::sim::ReportOutcome;
use crate::sim::core::Routed;
use crate::sim::core::control::PartRoute;
use crate::sim::inbound::{self, InboundPart, Reference};
pub(super) fn delivered_json(routes: Vec<PartRoute>) -> Map<String, Value> {
    let parts: Vec<Value> = routes
        .into_iter()
        .map(|(concat, route)| {
            let mut v = match route {
                Ok(Routed::Cmt) => json!({"routed": "cmt"}),
                Ok(Routed::Stored { index, announced }) => {
                    json!({"routed": if announced { "cmti" } else { "stored" }, "index": index})
                }
                Err(e) => json!({"routed": "lost", "error": e}),
            };
            if let Some((reference, total, seq)) = concat {
                v["ref"] = json!(reference);
                v["total"] = json!(total);
                v["seq"] = json!(seq);
            }
            v
        })
        .collect();
    fields(json!({"parts": parts}))
}

/// The parts a `deliver` request describes, in delivery order.
pub(super) fn deliver_parts(r: &Req<'_>) -> Result<Vec<InboundPart>, String> {
    let mut parts = if let Some(pdu) = r.0.get("pdu") {
        let list: Vec<&str> = match pdu {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or("\"pdu\" is a hex string or a list of them")?,
            _ => return Err("\"pdu\" is a hex string or a list of them".into()),
        };
        list.into_iter()
            .map(inbound::raw)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let from = r
            .str("from")?
            .ok_or("\"from\" is missing (or give \"pdu\")")?;
        let class = match r.u64("class")? {
            Some(c) if c <= 3 => Some(c as u8),
            Some(_) => return Err("\"class\" is 0 to 3".into()),
            None => None,
        };
        let bits = r.u64("ref_bits")?.unwrap_or(8);
        if bits != 8 && bits != 16 {
            return Err("\"ref_bits\" is 8 or 16".into());
        }
        let reference = match r.u64("ref")? {
            Some(v) => Some(Reference {
                value: u16::try_from(v).map_err(|_| "\"ref\" is at most 65535")?,
                sixteen_bit: bits == 16,
            }),
            None => None,
        };
        let wall = OffsetDateTime::now_utc();
        match (r.str("text")?, r.0.get("parts")) {
            (Some(text), None) => inbound::split(from, text, class, reference, wall)?,
            (None, Some(Value::Array(a))) => {
                let texts = a
                    .iter()
                    .map(|t| t.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("\"parts\" is a list of strings")?;
                let reference = reference.or(Some(Reference {
                    value: 0,
                    sixteen_bit: bits == 16,
                }));
                inbound::build(from, &texts, class, reference, wall)?
            }
            _ => return Err("give \"text\" or \"parts\" (a list of texts), not both".into()),
        }
    };
    if let Some(order) = r.0.get("order") {
        let order = order
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or("\"order\" is a list of part numbers such as [2, 1, 3]")?;
        let mut reordered = Vec::with_capacity(order.len());
        for seq in order {
            let part = parts
                .get((seq as usize).wrapping_sub(1))
                .ok_or_else(|| format!("\"order\" names part {seq} of {}", parts.len()))?;
            reordered.push(part.clone());
        }
        parts = reordered;
    }
    if let Some(omit) = r.0.get("omit") {
        let omit = omit
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or("\"omit\" is a list of part numbers")?;
        parts.retain(|p| !omit.contains(&u64::from(p.concat.map_or(1, |c| c.2))));
    }
    if parts.is_empty() {
        return Err("no part is left to deliver".into());
    }
    Ok(parts)
}

/// A report outcome from `outcome`, `status`, `delay_ms`, `then_status`, `then_delay_ms`.
pub(super) fn outcome(r: &Req<'_>) -> Result<ReportOutcome, String> {
    let name = r
        .str("outcome")?
        .ok_or("\"outcome\" is missing: delivered, failed, delayed, never or hold")?;
    let delay = Duration::from_millis(r.u64("delay_ms")?.unwrap_or(0));
    let status =
        |default: u8, range: std::ops::RangeInclusive<u8>, what: &str| match r.u64("status")? {
            None => Ok(default),
            Some(s) => u8::try_from(s)
                .ok()
                .filter(|s| range.contains(s))
                .ok_or_else(|| format!("a {what} TP-ST is {} to {}", range.start(), range.end())),
        };
    // TS 23.040 §9.2.3.15: 0..=2 completed, 0x20..=0x3F still trying, 0x40..=0x7F failed.
    Ok(match name {
        "delivered" => ReportOutcome::Status {
            status: status(0, 0..=2, "delivered")?,
            delay,
        },
        "failed" => ReportOutcome::Status {
            status: status(0x40, 0x40..=0x7F, "failed")?,
            delay,
        },
        "delayed" => ReportOutcome::Delayed {
            status: status(0x20, 0x20..=0x3F, "delayed")?,
            delay,
            then_status: match r.u64("then_status")? {
                None => 0,
                Some(s) => u8::try_from(s)
                    .ok()
                    .filter(|s| *s <= 2 || (0x40..=0x7F).contains(s))
                    .ok_or("\"then_status\" is a final TP-ST: 0 to 2 or 64 to 127")?,
            },
            then_delay: Duration::from_millis(r.u64("then_delay_ms")?.unwrap_or(1000)),
        },
        "never" => ReportOutcome::Never,
        "hold" => ReportOutcome::Hold,
        other => {
            return Err(format!(
                "outcome {other:?}: delivered, failed, delayed, never or hold"
            ));
        }
    })
}

/// TS 27.007 §7.2 <stat> by name.
pub(super) fn registration(name: &str) -> Result<u8, String> {
    Ok(match name {
        "none" | "not_searching" => 0,
        "home" | "registered" => 1,
        "searching" => 2,
        "denied" => 3,
        "unknown" => 4,
        "roaming" => 5,
        other => {
            return Err(format!(
                "registration {other:?}: home, roaming, searching, denied, unknown, none or auto"
            ));
        }
    })
}

pub(super) fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Typed access to a request's fields.
pub(super) struct Req<'a>(pub(super) &'a Map<String, Value>);

impl Req<'_> {
    pub(super) fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" is a string")),
        }
    }

    pub(super) fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("\"{key}\" is a whole number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_check_their_tp_st() {
        let req = |v: Value| outcome(&Req(v.as_object().unwrap()));
        assert_eq!(
            req(json!({"outcome": "failed", "status": 69})),
            Ok(ReportOutcome::Status {
                status: 69,
                delay: Duration::ZERO
            })
        );
        assert!(req(json!({"outcome": "failed", "status": 0})).is_err());
        assert!(req(json!({"outcome": "delayed", "status": 64})).is_err());
        assert!(req(json!({"outcome": "maybe"})).is_err());
        assert_eq!(req(json!({"outcome": "hold"})), Ok(ReportOutcome::Hold));
    }

    #[test]
    fn deliver_requests_reorder_and_omit_parts() {
        let req = json!({"from": "+15550001111", "text": "z".repeat(400), "ref": 9, "order": [3, 1, 2], "omit": [1]});
        let parts = deliver_parts(&Req(req.as_object().unwrap())).unwrap();
        let seqs: Vec<u8> = parts.iter().map(|p| p.concat.unwrap().2).collect();
        assert_eq!(seqs, vec![3, 2]);
        let bad = json!({"from": "+1555", "text": "x", "parts": ["a"]});
        assert!(deliver_parts(&Req(bad.as_object().unwrap())).is_err());
    }
}
