//! What an unsolicited result code means, decided once from the line the digester framed, so
//! its consumers match on a type rather than split strings again.

use super::cmd;
use super::digest::UrcLine;

/// An unsolicited result code, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `+CDS: <length>` and its PDU line (TS 27.005 §3.4.1, PDU mode): an SMS-STATUS-REPORT
    /// routed straight to us (`+CNMI` `<ds>`=1).
    StatusReport {
        /// The TPDU length the header announced, in octets (without the SMSC address).
        len: usize,
        /// The PDU in hex, as the modem sent it.
        pdu: String,
    },
    /// `+CMT: [<alpha>],<length>` and its PDU line (TS 27.005 §3.4.1, PDU mode): an
    /// SMS-DELIVER routed straight to us (`+CNMI` `<mt>`=2).
    Deliver {
        /// The TPDU length the header announced, in octets.
        len: usize,
        /// The PDU in hex, as the modem sent it.
        pdu: String,
    },
    /// `+CMTI: <mem>,<index>` / `+CDSI: <mem>,<index>` (TS 27.005 §3.4.1): a message was stored
    /// and can be read with `+CMGR`.
    Stored {
        /// The storage it went to (`"SM"`, `"ME"`...).
        mem: String,
        /// Its index there.
        index: u16,
    },
    /// `+CREG` / `+CGREG` / `+CEREG` (TS 27.007 §7.2, §10.1.19, §10.1.22): registration changed.
    Registration {
        /// The `<stat>` it carried, where readable.
        stat: Option<u8>,
    },
    /// `+CPIN: READY` (TS 27.007 §8.3) or the vendor `SMS Ready`: the SIM can be used now.
    SimReady,
    /// The text-mode form of `+CDS`/`+CMT`, which carries no PDU; the line as received (log it
    /// redacted).
    TextMode(String),
    /// A `+CMTI`/`+CDSI` whose parameters are not readable: a stored message nobody will read.
    BadNotice {
        /// The line as received (log it redacted).
        line: String,
        /// What was wrong with it.
        error: String,
    },
    /// Anything else; the line as received (log it redacted).
    Other(String),
}

impl Urc {
    /// Decides what a framed URC is. A PDU line only comes with a header whose length the
    /// digester could read (it waits for the second line only then), so a PDU is never lost here.
    pub fn classify(raw: UrcLine) -> Urc {
        let UrcLine { line, pdu } = raw;
        let prefix = line.split(':').next().unwrap_or_default();
        match (prefix, pdu) {
            ("+CDS", Some(pdu)) => match cmd::parse_cds_len(&line) {
                Ok(Some(len)) => Urc::StatusReport { len, pdu },
                _ => Urc::Other(line),
            },
            ("+CMT", Some(pdu)) => match cmd::parse_cmt_len(&line) {
                Ok(Some(len)) => Urc::Deliver { len, pdu },
                _ => Urc::Other(line),
            },
            ("+CDS" | "+CMT", None) => Urc::TextMode(line),
            ("+CMTI" | "+CDSI", _) => {
                let notice = format!("{prefix}:");
                match cmd::parse_stored_notice(&line, &notice) {
                    Ok((mem, index)) => Urc::Stored { mem, index },
                    Err(e) => Urc::BadNotice {
                        error: e.to_string(),
                        line,
                    },
                }
            }
            ("+CREG" | "+CGREG" | "+CEREG", _) => {
                let notice = format!("{prefix}:");
                Urc::Registration {
                    stat: cmd::parse_reg_stat(&line, &notice).ok(),
                }
            }
            _ if line == "+CPIN: READY" || line == "SMS Ready" => Urc::SimReady,
            _ => Urc::Other(line),
        }
    }
}

impl From<UrcLine> for Urc {
    fn from(raw: UrcLine) -> Self {
        Urc::classify(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(line: &str, pdu: Option<&str>) -> Urc {
        Urc::classify(UrcLine {
            line: line.into(),
            pdu: pdu.map(Into::into),
        })
    }

    #[test]
    fn pdu_mode_reports_and_texts_carry_their_length_and_pdu() {
        assert_eq!(
            classify("+CDS: 25", Some("0006")),
            Urc::StatusReport {
                len: 25,
                pdu: "0006".into()
            }
        );
        assert_eq!(
            classify("+CMT: ,24", Some("07")),
            Urc::Deliver {
                len: 24,
                pdu: "07".into()
            }
        );
        assert_eq!(
            classify("+CMT: \"alpha\",24", Some("07")),
            Urc::Deliver {
                len: 24,
                pdu: "07".into()
            }
        );
    }

    #[test]
    fn text_mode_notices_are_told_apart() {
        assert_eq!(
            classify("+CDS: 6,1,\"+15551234567\",145", None),
            Urc::TextMode("+CDS: 6,1,\"+15551234567\",145".into())
        );
        assert_eq!(
            classify("+CMT: \"+15551234567\",,\"26/01/01\"", None),
            Urc::TextMode("+CMT: \"+15551234567\",,\"26/01/01\"".into())
        );
    }

    #[test]
    fn stored_notices_name_memory_and_index() {
        assert_eq!(
            classify("+CMTI: \"SM\",3", None),
            Urc::Stored {
                mem: "SM".into(),
                index: 3
            }
        );
        assert_eq!(
            classify("+CDSI: \"ME\",65535", None),
            Urc::Stored {
                mem: "ME".into(),
                index: 65535
            }
        );
        for garbled in ["+CMTI: \"SM\",70000", "+CMTI: garbage"] {
            assert!(
                matches!(classify(garbled, None), Urc::BadNotice { line, .. } if line == garbled),
                "{garbled}"
            );
        }
    }

    #[test]
    fn registration_changes_carry_their_stat() {
        assert_eq!(
            classify("+CREG: 5", None),
            Urc::Registration { stat: Some(5) }
        );
        assert_eq!(
            classify("+CEREG: 1,\"00A1\",\"1234ABCD\",7", None),
            Urc::Registration { stat: Some(1) }
        );
        assert_eq!(
            classify("+CGREG: x", None),
            Urc::Registration { stat: None }
        );
    }

    #[test]
    fn sim_ready_in_both_spellings_and_nothing_else() {
        assert_eq!(classify("+CPIN: READY", None), Urc::SimReady);
        assert_eq!(classify("SMS Ready", None), Urc::SimReady);
        assert_eq!(
            classify("+CPIN: SIM PIN", None),
            Urc::Other("+CPIN: SIM PIN".into())
        );
        assert_eq!(classify("RING", None), Urc::Other("RING".into()));
        assert_eq!(classify("^RSSI:14", None), Urc::Other("^RSSI:14".into()));
    }
}
