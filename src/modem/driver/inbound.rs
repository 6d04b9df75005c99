//! What the driver does with what the modem sends unasked: status reports and texts routed to
//! it (`+CDS`/`+CMT`, acknowledged with `+CNMA` where the service needs it), stored-message
//! notices (`+CMTI`/`+CDSI`, read with `+CMGR`), registration changes.
//!
//! With `store_inbound`, a text is let go of only once its receiver says it is stored
//! ([`Custody`]): a stored text is deleted (`AT+CMGD`, TS 27.005 §3.5.4) after the commit, a
//! routed one (`+CMT`) is acknowledged (`AT+CNMA`, §3.4.4) after it, and the texts already in the
//! storage when the modem comes up are listed once (`AT+CMGL=4`, §3.4.2) and treated alike.
//! A crash between the commit and the delete (or the ack) shows the text again later, which the
//! store recognises as a redelivery.

use tokio::sync::oneshot;

use super::*;
use crate::modem::Custody;

/// How long the driver waits for its receiver to store a text before it counts as not stored.
/// The store syncs each commit (milliseconds); a modem waiting for `+CNMA` gives up after a
/// network timer of some seconds (TS 24.011 TR2M), so the wait must end before that.
const STORE_WAIT: Duration = Duration::from_secs(5);

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
                let (custody, receipt) = match self.cfg.store_inbound {
                    true => {
                        let (c, r) = Custody::new();
                        (Some(c), Some(r))
                    }
                    false => (None, None),
                };
                let split_units = split_units(&d);
                self.emit(ModemEvent::Incoming {
                    modem_id: self.cfg.id.clone(),
                    from: d.originator.to_string(),
                    text: d.text,
                    split_units,
                    sc_timestamp: d.sc_timestamp.to_rfc3339(),
                    concat: d.concat,
                    custody,
                });
                PduSeen::Text(receipt)
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
                let seen = self.deliver_pdu(&pdu, len);
                let stored = match seen {
                    PduSeen::Text(Some(receipt)) => Some(stored(receipt).await),
                    _ => None,
                };
                // TS 27.005 §3.4.4: with +CSMS service 1 the modem waits for +CNMA (and
                // tells the network the message was not received without it); with
                // service 0 +CNMA is an error.
                match (conn.csms_service, stored) {
                    (1, Some(false)) => {
                        // No +CNMA: the network keeps the text and delivers it again. The
                        // modem meanwhile turns routing off (§3.4.4), so it is turned back on.
                        tracing::error!(modem = %self.cfg.id, "incoming text not stored; not acknowledged, so the network delivers it again");
                        let t = self.cfg.command_timeout;
                        init::configure_notifications(
                            &mut conn.client,
                            self.cfg.delivery_reports,
                            t,
                        )
                        .await?;
                    }
                    (1, _) => ack(&mut conn.client, self.cfg.command_timeout).await?,
                    (_, Some(false)) => {
                        tracing::error!(modem = %self.cfg.id, "incoming text routed without acknowledgement (+CSMS service 0) could not be stored and is lost")
                    }
                    _ => {}
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

    /// Reads a stored message (`AT+CMGR`, TS 27.005 §3.4.3) and turns it into an event, then
    /// lets go of it ([`Driver::settle`]).
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
                self.settle(conn, index, seen).await
            }
            Err(e) => {
                tracing::warn!(modem = %self.cfg.id, index, error = %e, "cannot read stored message");
                Ok(())
            }
        }
    }

    /// Lists what the storage held before simgate was there (`AT+CMGL=4`, TS 27.005 §3.4.2: all
    /// messages, PDU mode) and treats each as if it had just been announced. Indexes are the
    /// modem's own, whether it counts from 0 or from 1.
    pub(super) async fn read_all_stored(&mut self, conn: &mut Conn) -> Result<(), AtError> {
        let t = self.cfg.command_timeout;
        let lines = match conn.client.command("AT+CMGL=4", t).await.refusal()? {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!(modem = %self.cfg.id, error = %e, "cannot list stored messages");
                return Ok(());
            }
        };
        let mut found = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if let Ok((index, len)) = cmd::parse_cmgl_header(line)
                && let Some(pdu) = lines.get(i + 1)
            {
                found.push((index, pdu.clone(), len));
            }
        }
        if !found.is_empty() {
            tracing::info!(modem = %self.cfg.id, messages = found.len(), "reading messages stored before start-up");
        }
        for (index, pdu, len) in found {
            let seen = self.deliver_pdu(&pdu, len);
            self.settle(conn, index, seen).await?;
        }
        Ok(())
    }

    /// Deletes a stored message (`AT+CMGD`, TS 27.005 §3.5.4) that simgate took charge of: a
    /// status report, which the dispatcher records, or a text its receiver said is stored.
    /// Anything else stays on the SIM for its owner rather than being destroyed unread.
    async fn settle(&mut self, conn: &mut Conn, index: u16, seen: PduSeen) -> Result<(), AtError> {
        match seen {
            PduSeen::StatusReport => {}
            PduSeen::Text(Some(receipt)) => {
                if !stored(receipt).await {
                    tracing::error!(modem = %self.cfg.id, index, "incoming text not stored; left on the SIM");
                    return Ok(());
                }
            }
            PduSeen::Text(None) => {
                tracing::info!(modem = %self.cfg.id, index, "incoming text left on the SIM: inbound storage is off ([inbound] enabled)");
                return Ok(());
            }
            PduSeen::Other => {
                tracing::debug!(modem = %self.cfg.id, index, "stored message left on the SIM");
                return Ok(());
            }
        }
        let t = self.cfg.command_timeout;
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

/// The UTF-16 units of a UCS-2 part (TS 23.038 §6.2.3) that does not decode on its own: senders
/// write UTF-16, and some split a surrogate pair between two parts. `None` for every other part,
/// whose text is exact.
fn split_units(d: &pdu::Deliver) -> Option<Vec<u16>> {
    if d.encoding != pdu::Encoding::Ucs2 {
        return None;
    }
    let units: Vec<u16> = d
        .user_data
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).is_err().then_some(units)
}

/// Whether the receiver stored the text within [`STORE_WAIT`].
async fn stored(receipt: oneshot::Receiver<bool>) -> bool {
    matches!(
        tokio::time::timeout(STORE_WAIT, receipt).await,
        Ok(Ok(true))
    )
}

/// What a PDU from the modem was, so that only what simgate took charge of is deleted.
#[derive(Debug)]
enum PduSeen {
    /// An SMS-STATUS-REPORT, handed to the dispatcher, which records it.
    StatusReport,
    /// An SMS-DELIVER: an inbound text, with the receipt to wait for when it is being stored.
    Text(Option<oneshot::Receiver<bool>>),
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

#[cfg(test)]
mod tests {
    use super::split_units;
    use crate::pdu::{Address, Deliver, Encoding, Timestamp};

    fn deliver(encoding: Encoding, text: &str, user_data: Vec<u8>) -> Deliver {
        Deliver {
            smsc: None,
            originator: Address::parse_destination("+15550001111").unwrap(),
            pid: 0,
            dcs: if encoding == Encoding::Ucs2 {
                0x08
            } else {
                0x00
            },
            encoding,
            sc_timestamp: Timestamp {
                year: 2026,
                month: 12,
                day: 4,
                hour: 10,
                minute: 0,
                second: 0,
                tz_quarter_hours: 0,
            },
            concat: None,
            text: text.into(),
            user_data,
            more_messages: false,
        }
    }

    #[test]
    fn only_a_ucs2_part_with_half_a_pair_keeps_its_units() {
        // "A" and the high half of 😀 (D83D DE00).
        let half = vec![0x00, 0x41, 0xD8, 0x3D];
        assert_eq!(
            split_units(&deliver(Encoding::Ucs2, "A\u{FFFD}", half)),
            Some(vec![0x0041, 0xD83D])
        );
        let whole = vec![0x00, 0x41, 0xD8, 0x3D, 0xDE, 0x00];
        assert_eq!(split_units(&deliver(Encoding::Ucs2, "A😀", whole)), None);
        assert_eq!(split_units(&deliver(Encoding::Gsm7, "A", vec![0x41])), None);
    }
}
