//! Status reports (TS 23.040 §9.2.2.3): match a report to the part it answers by TP-MR and
//! recipient, under one normalisation of the reported number, and apply its outcome.

use rusqlite::{Connection, params};

use super::{event, finish_seq};
use crate::store::read::message_status;
use crate::store::{
    MessageStatus, Millis, REPORT_WINDOW_MS, ReportEffect, ReportOutcome, StatusReport, StoreError,
};

/// A reported TP-RA (TS 23.040 §9.1.2.5) in the one form the store compares: the driver shows
/// an international number (TON 001) with a leading `+`, anything else as its bare digits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReportedNumber {
    /// Country code and subscriber number, as E.164 digits without the `+`: from `+…`, or
    /// from the `00` international prefix some networks put into a TON-unknown address.
    International(String),
    /// A national number with its trunk prefix `0` removed: the national significant number,
    /// which ends the E.164 number after a 1–3 digit country code (ITU-T E.164 §6.2).
    National(String),
    /// Anything else (alphanumeric, empty, odd digits): matches nothing.
    Unusable,
}

/// The single normalisation of a reported recipient; see [`ReportedNumber`].
fn normalise_reported(reported: &str) -> ReportedNumber {
    let digits_only = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if let Some(d) = reported.strip_prefix('+') {
        return if digits_only(d) {
            ReportedNumber::International(d.to_owned())
        } else {
            ReportedNumber::Unusable
        };
    }
    if !digits_only(reported) {
        return ReportedNumber::Unusable;
    }
    if let Some(d) = reported.strip_prefix("00") {
        ReportedNumber::International(d.to_owned())
    } else if let Some(d) = reported.strip_prefix('0') {
        ReportedNumber::National(d.to_owned())
    } else {
        // TON unknown without any prefix: networks put the international number here.
        ReportedNumber::International(reported.to_owned())
    }
}

/// Whether a reported TP-RA names `sent` (E.164 with `+`, as the store keeps it): the whole
/// number must be equal, never just its tail (a report for `+5112345678` is not one for
/// `+4915112345678`). A national-format report matches when its national significant number
/// is exactly what follows the country code in `sent`.
pub(crate) fn same_recipient(reported: &str, sent: &str) -> bool {
    let Some(sent) = sent.strip_prefix('+') else {
        return false;
    };
    match normalise_reported(reported) {
        ReportedNumber::International(d) => d == sent,
        ReportedNumber::National(nsn) => {
            sent.len() == country_code_len(sent) + nsn.len() && sent.ends_with(nsn.as_str())
        }
        ReportedNumber::Unusable => false,
    }
}

/// The length of the country code that starts the E.164 digits `e164`. Country codes form a
/// prefix code (ITU-T E.164 §6.2.1), so the first digits decide: zones 1 and 7 are one-digit
/// codes, the two-digit codes are listed, and every other code is three digits long.
fn country_code_len(e164: &str) -> usize {
    const TWO_DIGIT: [&str; 44] = [
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if e164.starts_with(['1', '7']) {
        1
    } else if TWO_DIGIT.iter().any(|cc| e164.starts_with(cc)) {
        2
    } else {
        3
    }
}

/// How long after a message's deadline its status report may still come: the validity period
/// we send (the remaining lifetime, TS 23.040 §9.2.3.12) is rounded up to the relative format's
/// steps (up to 30 minutes below a day) and the SMSC reports after it gives up.
const REPORT_AFTER_DEADLINE_MS: Millis = 60 * 60 * 1000;

pub(crate) fn record_status_report(
    c: &Connection,
    report: &StatusReport,
) -> Result<Option<ReportEffect>, StoreError> {
    // Same modem (TP-MR is per modem), same TP-MR, and a plausible time: not before the send,
    // not after the SMSC must have given up on the message (and never beyond the window).
    let candidates: Vec<(i64, i64, String)> = c
        .prepare_cached(
            "SELECT p.message_seq, p.part_no, p.recipient
             FROM message_parts p JOIN messages m ON m.seq = p.message_seq
             WHERE p.modem_id = ?1 AND p.mr = ?2 AND p.sent_at >= ?3 AND p.sent_at <= ?4
               AND ?4 <= MAX(m.deadline, p.sent_at) + ?5
             ORDER BY p.sent_at DESC, p.message_seq DESC",
        )?
        .query_map(
            params![
                report.modem_id,
                report.message_reference,
                report.at - REPORT_WINDOW_MS,
                report.at,
                REPORT_AFTER_DEADLINE_MS
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    let Some((seq, part_no, _)) = candidates
        .into_iter()
        .find(|(_, _, to)| same_recipient(&report.recipient, to))
    else {
        return Ok(None);
    };
    let (id, status, parts): (String, String, i64) = c
        .prepare_cached("SELECT id, status, parts FROM messages WHERE seq = ?1")?
        .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut status = message_status(&status)?;
    let at = report.at;
    let part_label = format!("part {} of {parts}", part_no + 1);
    match &report.outcome {
        ReportOutcome::Pending(why) => {
            let detail = format!("{part_label}: still trying ({why})");
            event(c, seq, at, status, Some(&detail))?;
        }
        ReportOutcome::Delivered => {
            update_part(c, seq, part_no, "delivered", None, at)?;
            let undelivered: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM message_parts
                     WHERE message_seq = ?1 AND status <> 'delivered'",
                )?
                .query_row(params![seq], |r| r.get(0))?;
            if undelivered <= 0 && status == MessageStatus::Sent {
                c.prepare_cached(
                    "UPDATE messages SET status = 'delivered', delivered_at = ?2, updated_at = ?2
                     WHERE seq = ?1",
                )?
                .execute(params![seq, at])?;
                status = MessageStatus::Delivered;
                event(c, seq, at, status, None)?;
                crate::store::events::message_changed(c, seq, at)?;
            } else {
                let detail = format!("{part_label} delivered");
                event(c, seq, at, status, Some(&detail))?;
            }
        }
        ReportOutcome::Failed(why) => {
            update_part(c, seq, part_no, "failed", Some(why), at)?;
            let reason = format!("{part_label} not delivered: {why}");
            if status == MessageStatus::Sent || status == MessageStatus::Delivered {
                finish_seq(c, seq, MessageStatus::Failed, Some(&reason), at)?;
                status = MessageStatus::Failed;
            } else {
                event(c, seq, at, status, Some(&reason))?;
            }
        }
    }
    Ok(Some(ReportEffect {
        message_id: id,
        status,
    }))
}

fn update_part(
    c: &Connection,
    seq: i64,
    part_no: i64,
    status: &str,
    detail: Option<&str>,
    at: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE message_parts SET status = ?3, detail = ?4, reported_at = ?5
         WHERE message_seq = ?1 AND part_no = ?2",
    )?
    .execute(params![seq, part_no, status, detail, at])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::same_recipient;

    #[test]
    fn recipients_match_across_formats() {
        for (reported, sent, expect) in [
            ("+4915112345678", "+4915112345678", true),
            ("4915112345678", "+4915112345678", true),
            ("015112345678", "+4915112345678", true),
            ("004915112345678", "+4915112345678", true),
            ("+4915112345679", "+4915112345678", false),
            ("5678", "+4915112345678", false),
            ("", "+4915112345678", false),
            // A tail of the number is another number (issue 17.8).
            ("+5112345678", "+4915112345678", false),
            ("5112345678", "+4915112345678", false),
            ("0015112345678", "+4915112345678", false),
            ("+4915112345678", "+494915112345678", false),
            // National format: the rest must be a 1-3 digit country code.
            ("012345678", "+4915112345678", false),
            ("05112345678", "+4915112345678", false),
            ("0612345678", "+31612345678", true),
            ("012345678", "+31612345678", false),
            ("06123456789", "+31612345678", false),
            ("912345678", "+351912345678", false),
            ("351912345678", "+351912345678", true),
            ("+49151ABC", "+4915112345678", false),
            ("+4915112345678", "4915112345678", false),
        ] {
            assert_eq!(
                same_recipient(reported, sent),
                expect,
                "{reported} vs {sent}"
            );
        }
    }
}
