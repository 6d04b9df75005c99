//! What the driver does with what the modem sends unasked: status reports and texts routed to
//! it (`+CDS`/`+CMT`, acknowledged with `+CNMA` where the service needs it), stored-message
//! notices (`+CMTI`/`+CDSI`, read with `+CMGR`), registration changes.

use super::*;

impl Driver {
    /// Turns a PDU from a `+CDS`/`+CMT`/`+CMGR` into an event and says what it was. `tpdu_len`
    /// is the length the modem announced in the header line; a PDU that disagrees with it is not
    /// decoded.
    fn deliver_pdu(&self, hex: &str, tpdu_len: usize) -> PduSeen {
        let decoded = hex::decode(hex.trim())
            .map_err(|e| e.to_string())
            .and_then(|bytes| pdu::decode_announced(&bytes, tpdu_len).map_err(|e| e.to_string()));
        match decoded {
            Ok(Pdu::StatusReport(sr)) => {
                tracing::debug!(modem = %self.cfg.id, mr = sr.message_reference, status = sr.status, "status report");
                self.emit(ModemEvent::StatusReport {
                    modem_id: self.cfg.id.clone(),
                    message_reference: sr.message_reference,
                    recipient: sr.recipient.to_string(),
                    status: sr.status,
                    outcome: sr.outcome(),
                    discharge_time: Some(sr.discharge_time.to_rfc3339()),
                });
                PduSeen::StatusReport
            }
            Ok(Pdu::Deliver(d)) => {
                tracing::info!(modem = %self.cfg.id, "incoming text");
                self.emit(ModemEvent::Incoming {
                    modem_id: self.cfg.id.clone(),
                    from: d.originator.to_string(),
                    text: d.text,
                });
                PduSeen::Text
            }
            Ok(Pdu::Submit(_)) => {
                tracing::debug!(modem = %self.cfg.id, "ignoring an SMS-SUBMIT read from the SIM");
                PduSeen::Other
            }
            Err(e) => {
                if let Some(suppressed) = UNDECODABLE.admit() {
                    tracing::warn!(modem = %self.cfg.id, error = %e, suppressed, "undecodable PDU from the modem");
                }
                PduSeen::Other
            }
        }
    }

    pub(super) async fn on_urc(&mut self, conn: &mut Conn, urc: Urc) -> Result<(), AtError> {
        match urc {
            Urc::StatusReport { len, pdu } | Urc::Deliver { len, pdu } => {
                self.deliver_pdu(&pdu, len);
                // TS 27.005 §3.4.4: with +CSMS service 1 the modem waits for +CNMA (and
                // tells the network the message was not received without it); with
                // service 0 +CNMA is an error.
                if conn.csms_service == 1 {
                    ack(&mut conn.client, self.cfg.command_timeout).await?;
                }
            }
            Urc::Stored { index, .. } => self.read_stored(conn, index).await?,
            Urc::Registration { .. } => self.refresh_registration(conn).await?,
            Urc::SimReady => {
                tracing::trace!(modem = %self.cfg.id, "SIM ready notice while serving")
            }
            Urc::TextMode(line) => {
                tracing::debug!(modem = %self.cfg.id, line = %crate::at::redact::redact(&line), "text-mode notice ignored")
            }
            Urc::BadNotice { error, .. } => {
                tracing::warn!(modem = %self.cfg.id, %error, "bad stored-message notice")
            }
            Urc::Other(line) => {
                tracing::trace!(modem = %self.cfg.id, line = %crate::at::redact::redact(&line), "URC ignored")
            }
        }
        Ok(())
    }

    /// Reads a stored message (`AT+CMGR`, TS 27.005 §3.4.3) and turns it into an event. Only a
    /// status report, which the dispatcher records, is then deleted (`AT+CMGD`, §3.5.4) so the
    /// SIM does not fill up: simgate does not store inbound texts yet, so a text (or anything it
    /// cannot read) stays on the SIM for its owner rather than being destroyed unread.
    async fn read_stored(&mut self, conn: &mut Conn, index: u16) -> Result<(), AtError> {
        let t = self.cfg.command_timeout;
        let read = cmd::set("+CMGR", &[Param::Int(i32::from(index))])
            .unwrap_or_else(|e| unreachable!("+CMGR with an index: {e}"));
        match conn.client.command(&read, t).await.refusal()? {
            Ok(lines) => {
                let seen = match lines
                    .iter()
                    .enumerate()
                    .find_map(|(i, l)| cmd::parse_cmgr_len(l).ok().map(|len| (i, len)))
                {
                    Some((pos, len)) => lines
                        .get(pos + 1)
                        .map_or(PduSeen::Other, |pdu| self.deliver_pdu(pdu, len)),
                    None => PduSeen::Other,
                };
                match seen {
                    PduSeen::StatusReport => {}
                    PduSeen::Text => {
                        tracing::info!(modem = %self.cfg.id, index, "incoming text left on the SIM: simgate does not store inbound texts yet");
                        return Ok(());
                    }
                    PduSeen::Other => {
                        tracing::debug!(modem = %self.cfg.id, index, "stored message left on the SIM");
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(modem = %self.cfg.id, index, error = %e, "cannot read stored message");
                return Ok(());
            }
        }
        let delete = cmd::set("+CMGD", &[Param::Int(i32::from(index))])
            .unwrap_or_else(|e| unreachable!("+CMGD with an index: {e}"));
        match conn.client.command(&delete, t).await.refusal()? {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(modem = %self.cfg.id, index, error = %e, "cannot delete stored message");
                Ok(())
            }
        }
    }
}

/// What a PDU from the modem was, so that only what simgate took charge of is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PduSeen {
    /// An SMS-STATUS-REPORT, handed to the dispatcher, which records it.
    StatusReport,
    /// An SMS-DELIVER: an inbound text, which simgate does not store yet.
    Text,
    /// Anything else, or nothing readable.
    Other,
}

async fn ack(client: &mut AtClient, timeout: Duration) -> Result<(), AtError> {
    match client.command("AT+CNMA", timeout).await.refusal()? {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "AT+CNMA refused");
            Ok(())
        }
    }
}
