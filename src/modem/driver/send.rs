//! `AT+CMGS` of prepared PDU parts (TS 27.005 §3.5.1), and what a failed send means for the
//! caller and for the link.

use super::*;
use crate::modem::SendReason;

impl Driver {
    /// Sends every part in order. Returns the result for the caller and, when the link needs
    /// recovery, what to do next.
    pub(super) async fn send(
        &mut self,
        conn: &mut Conn,
        parts: Vec<pdu::EncodedPart>,
    ) -> (Result<Vec<u8>, PartialSend>, Option<Next>) {
        if !state::accepts_send(&self.state()) {
            return (
                Err(PartialSend {
                    sent: Vec::new(),
                    error: SendError::NotReady,
                }),
                None,
            );
        }
        if parts.is_empty() {
            return (
                Err(PartialSend {
                    sent: Vec::new(),
                    error: SendError::Permanent("a message needs at least one part".into()),
                }),
                None,
            );
        }
        self.apply(Event::SendStarted);
        let mut sent = Vec::with_capacity(parts.len());
        let total = parts.len();
        let mut failure = None;
        for (i, part) in parts.iter().enumerate() {
            let Ok(len) = i32::try_from(part.tpdu_len) else {
                failure = Some((SendError::Permanent("TPDU too long".into()), None));
                break;
            };
            let command = match cmd::set("+CMGS", &[Param::Int(len)]) {
                Ok(c) => c,
                Err(e) => {
                    failure = Some((SendError::Permanent(e.to_string().into()), None));
                    break;
                }
            };
            let answer = conn
                .client
                .command_with_payload(&command, &part.to_hex(), self.cfg.send_timeout)
                .await;
            match answer {
                Ok(lines) => match lines.iter().find_map(|l| cmd::parse_cmgs(l).ok()) {
                    Some(mr) => {
                        tracing::debug!(modem = %self.cfg.id, part = i + 1, total, mr, "part sent");
                        sent.push(mr);
                    }
                    None => {
                        failure =
                            Some((SendError::OutcomeUnknown("OK without +CMGS".into()), None));
                        break;
                    }
                },
                Err(e) => {
                    failure = Some(classify_send_error(&e, self.cfg.send_timeout));
                    break;
                }
            }
        }
        self.apply(Event::SendFinished);
        match failure {
            None => {
                self.status.send_modify(|s| s.sent += 1);
                (Ok(sent), None)
            }
            Some((error, next)) => {
                tracing::warn!(modem = %self.cfg.id, parts_sent = sent.len(), total, %error, "send failed");
                self.status.send_modify(|s| s.failed += 1);
                (Err(PartialSend { sent, error }), next)
            }
        }
    }
}

/// Maps an AT failure of `AT+CMGS` to what the caller can do about it, and what the driver must
/// do to recover.
fn classify_send_error(e: &AtError, send_timeout: Duration) -> (SendError, Option<Next>) {
    match e {
        AtError::Cms(c) if c.is_temporary() => (SendError::Temporary(SendReason::Cms(*c)), None),
        AtError::Cms(c) => (SendError::Permanent(SendReason::Cms(*c)), None),
        AtError::Cme(c) => (SendError::Temporary(c.to_string().into()), None),
        AtError::Error => (SendError::Temporary("modem answered ERROR".into()), None),
        AtError::Unexpected(f) => (
            SendError::Temporary(format!("modem answered {f:?}").into()),
            None,
        ),
        AtError::Timeout {
            payload_written: true,
        } => (
            SendError::OutcomeUnknown(format!("PDU written, no +CMGS within {send_timeout:?}")),
            Some(Next::Reinit),
        ),
        AtError::Timeout {
            payload_written: false,
        } => (
            SendError::Temporary(format!("no prompt within {send_timeout:?}").into()),
            Some(Next::Reinit),
        ),
        // Nothing was written, so a retry cannot duplicate; the stray OK says the modem (or our
        // view of its answers) is out of step: re-sync.
        AtError::NoPrompt => (
            SendError::Temporary("modem answered OK without the > prompt; PDU not written".into()),
            Some(Next::Reinit),
        ),
        // A device that floods instead of answering is out of step like a garbled one: re-sync.
        AtError::Overflow {
            payload_written: true,
        } => (
            SendError::OutcomeUnknown("PDU written, then an answer too long to hold".into()),
            Some(Next::Reinit),
        ),
        AtError::Overflow {
            payload_written: false,
        } => (
            SendError::Temporary("answer too long to hold before the PDU was written".into()),
            Some(Next::Reinit),
        ),
        AtError::Closed {
            reason,
            payload_written: true,
        } => (
            SendError::OutcomeUnknown(format!("port lost after the PDU was written: {reason}")),
            Some(Next::Lost),
        ),
        AtError::Closed {
            reason,
            payload_written: false,
        } => (
            SendError::Temporary(format!("port lost before the PDU was written: {reason}").into()),
            Some(Next::Lost),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at::CmsError;

    #[test]
    fn a_cms_error_stays_typed_and_reads_as_before() {
        let t = Duration::from_secs(1);
        let (permanent, next) = classify_send_error(&AtError::Cms(CmsError::from_code(1)), t);
        assert_eq!(
            permanent,
            SendError::Permanent(SendReason::Cms(CmsError::from_code(1)))
        );
        assert!(next.is_none());
        assert_eq!(
            permanent.to_string(),
            format!("permanent failure: {}", CmsError::from_code(1))
        );
        let (temporary, _) = classify_send_error(&AtError::Cms(CmsError::from_code(38)), t);
        assert_eq!(
            temporary,
            SendError::Temporary(SendReason::Cms(CmsError::from_code(38)))
        );
        let (other, _) = classify_send_error(&AtError::Error, t);
        assert_eq!(
            other,
            SendError::Temporary(SendReason::Other("modem answered ERROR".into()))
        );
    }
}
