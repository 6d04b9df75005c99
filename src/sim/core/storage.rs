//! The SIM's message storage (TS 27.005 §3.2.2 `+CPMS`, §3.4.2 `+CMGL`, §3.4.3 `+CMGR`,
//! §3.5.4 `+CMGD`): status reports kept for `+CNMI` <ds>=2 and the texts the network delivers
//! (`--incoming`), stored and announced with `+CMTI` or routed as `+CMT` (§3.4.1).

use std::time::Duration;

use super::{Action, CmdResult, Core, Final, Handler, cmdline, first_arg};
use crate::sim::cmdline::Form;
use crate::sim::inbound::{self, InboundPart};

/// Where a delivered text went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Handed over as `+CMT`, not stored.
    Cmt,
    /// Stored at this 1-based index; `announced` when `+CMTI` said so.
    Stored {
        /// The slot (`AT+CMGR=<index>`).
        index: u32,
        /// `+CMTI` was sent (<mt> other than 0).
        announced: bool,
    },
}

/// Number of message slots the simulated SIM storage reports (like a typical SIM).
pub(super) const STORAGE_SLOTS: u32 = 30;

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("+CPMS", Core::cpms),
    ("+CMGL", Core::cmgl),
    ("+CMGR", Core::cmgr),
    ("+CMGD", Core::cmgd),
];

/// A message kept in the simulated message storage: a status report (TS 27.005 §3.4.1,
/// <ds>=2) or a received text (`--incoming`, <mt>=1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReport {
    /// Whether `+CMGR`/`+CMGL` has shown it (stat 1 "REC READ"), else 0 "REC UNREAD".
    pub read: bool,
    /// TPDU length for PDU-mode listings.
    pub tpdu_len: usize,
    /// The SMS-STATUS-REPORT PDU, uppercase hex, for PDU mode.
    pub pdu_hex: String,
    /// The text-mode fields after <stat>: `6,<mr>,"<ra>",<tora>,"<scts>","<dt>",<st>` for a
    /// report; `"<oa>",,"<scts>"`, a line break and the text for a received text.
    pub text_fields: String,
}

impl Core {
    /// A status report for <ds>=2: stored and announced with `+CDSI`.
    pub(super) fn store_report(&mut self, report: StoredReport) {
        // A full storage drops the report, as a real modem does.
        self.tally.reports += 1;
        if let Some(i) = self.store.iter().position(Option::is_none) {
            self.store_rev += 1;
            self.store[i] = Some(report);
            self.urc(&format!("+CDSI: \"SR\",{}", i + 1));
        }
    }

    /// A text from the network (`--incoming`): one part, no class.
    pub(super) fn receive(&mut self, from: &str, text: &str) {
        let part = match inbound::single(from, text, self.wall) {
            Ok(p) => p,
            Err(e) => {
                self.out.push(Action::Notice(format!(
                    "sim: cannot deliver an incoming text: {e}"
                )));
                return;
            }
        };
        if let Err(e) = self.receive_part(&part) {
            self.out.push(Action::Notice(format!("sim: {e}")));
        }
    }

    /// One SMS-DELIVER from the network, routed as `+CNMI` <mt> says (TS 27.005 §3.4.1): 0
    /// stores it silently, 1 stores it and announces `+CMTI`, 2 hands it over as `+CMT`
    /// without storing it (class 2, the SIM's own, is still stored), 3 does that only for
    /// class 3. A full storage loses the text, as on a real SIM.
    pub(super) fn receive_part(&mut self, part: &InboundPart) -> Result<Routed, String> {
        let mt = self.settings.cnmi[1];
        let direct = match mt {
            2 => part.class != Some(2),
            3 => part.class == Some(3),
            _ => false,
        };
        self.tally.delivered += 1;
        if direct {
            let line = if self.settings.text_mode {
                format!("+CMT: {}", part.text_fields)
            } else {
                format!("+CMT: ,{}\r\n{}", part.tpdu_len, part.pdu_hex)
            };
            self.urc(&line);
            return Ok(Routed::Cmt);
        }
        let Some(i) = self.store.iter().position(Option::is_none) else {
            self.tally.delivered -= 1;
            return Err("message storage full; an incoming text was lost".into());
        };
        self.store_rev += 1;
        self.store[i] = Some(StoredReport {
            read: false,
            tpdu_len: part.tpdu_len,
            pdu_hex: part.pdu_hex.clone(),
            text_fields: part.text_fields.clone(),
        });
        if mt != 0 {
            self.urc(&format!("+CMTI: \"SM\",{}", i + 1));
        }
        Ok(Routed::Stored {
            index: i as u32 + 1,
            announced: mt != 0,
        })
    }

    /// The stored messages with their 1-based index, for the control socket.
    pub(super) fn storage_view(&self) -> Vec<(u32, StoredReport)> {
        self.store
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.clone().map(|r| (i as u32 + 1, r)))
            .collect()
    }

    pub(super) fn stored(&self) -> usize {
        self.store.iter().flatten().count()
    }

    /// `+CMGL` lines for stored reports whose read flag matches (`None`: all); listing marks
    /// them read, as TS 27.005 §3.4.2 says.
    pub(super) fn list(&mut self, wanted: Option<bool>) -> Vec<String> {
        let text_mode = self.settings.text_mode;
        let mut lines = Vec::new();
        for (i, slot) in self.store.iter_mut().enumerate() {
            let Some(r) = slot else { continue };
            if wanted.is_some_and(|w| w != r.read) {
                continue;
            }
            if text_mode {
                lines.push(format!(
                    "+CMGL: {},{},{}",
                    i + 1,
                    text_stat(r.read),
                    r.text_fields
                ));
            } else {
                lines.push(format!(
                    "+CMGL: {},{},,{}",
                    i + 1,
                    u8::from(r.read),
                    r.tpdu_len
                ));
                lines.push(r.pdu_hex.clone());
            }
            if !r.read {
                r.read = true;
                self.store_rev += 1;
            }
        }
        lines
    }

    fn cpms(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.cms_if_not_ready()?;
                // One memory, the SIM's ("SM"), which also keeps the status reports ("SR").
                // Offering "ME" as a second name for it made clients that read every memory
                // (gammu-smsd) see each text twice; a modem without phone memory refuses it.
                for m in cmdline::args(&a).into_iter().flatten() {
                    if !matches!(m.to_ascii_uppercase().as_str(), "SM" | "SR") {
                        return Err(Final::Cms(302));
                    }
                }
                let n = self.stored();
                Ok(vec![format!(
                    "+CPMS: {n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS},{n},{STORAGE_SLOTS}"
                )])
            }
            Form::Read => {
                self.cms_if_not_ready()?;
                let n = self.stored();
                Ok(vec![format!(
                    "+CPMS: \"SM\",{n},{STORAGE_SLOTS},\"SM\",{n},{STORAGE_SLOTS},\"SM\",{n},{STORAGE_SLOTS}"
                )])
            }
            Form::Test => Ok(vec!["+CPMS: (\"SM\",\"SR\"),(\"SM\"),(\"SM\")".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cmgl(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.cms_if_not_ready()?;
                let v = first_arg(&a, Final::Cms(302))?;
                let wanted = if self.settings.text_mode {
                    match v.to_ascii_uppercase().as_str() {
                        "REC UNREAD" => Some(false),
                        "REC READ" => Some(true),
                        "ALL" => None,
                        "STO UNSENT" | "STO SENT" => return Ok(vec![]),
                        _ => return Err(Final::Cms(302)),
                    }
                } else {
                    match v.as_str() {
                        "0" => Some(false),
                        "1" => Some(true),
                        "4" => None,
                        "2" | "3" => return Ok(vec![]),
                        _ => return Err(Final::Cms(302)),
                    }
                };
                Ok(self.list(wanted))
            }
            Form::Exec => {
                self.cms_if_not_ready()?;
                Ok(self.list(Some(false)))
            }
            Form::Test => Ok(vec![if self.settings.text_mode {
                "+CMGL: (\"REC UNREAD\",\"REC READ\",\"STO UNSENT\",\"STO SENT\",\"ALL\")".into()
            } else {
                "+CMGL: (0-4)".into()
            }]),
            Form::Read => Err(Final::Error),
        }
    }

    fn cmgr(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.cms_if_not_ready()?;
                let i = storage_index(&a)?;
                let text_mode = self.settings.text_mode;
                let slot = self.store.get_mut(i.wrapping_sub(1) as usize);
                let Some(Some(r)) = slot else {
                    return Err(Final::Cms(321));
                };
                let lines = if text_mode {
                    vec![format!("+CMGR: {},{}", text_stat(r.read), r.text_fields)]
                } else {
                    vec![
                        format!("+CMGR: {},,{}", u8::from(r.read), r.tpdu_len),
                        r.pdu_hex.clone(),
                    ]
                };
                r.read = true;
                self.store_rev += 1;
                Ok(lines)
            }
            Form::Test => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }

    fn cmgd(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.cms_if_not_ready()?;
                let flag = cmdline::args(&a).get(1).cloned().flatten();
                self.store_rev += 1;
                match flag.as_deref() {
                    None | Some("0") => {
                        let i = storage_index(&a)?;
                        if let Some(slot) = self.store.get_mut(i.wrapping_sub(1) as usize) {
                            *slot = None;
                        }
                    }
                    // 1: read ones; 2 and 3 also sent/unsent (never stored here); 4: all.
                    Some("1" | "2" | "3") => {
                        for slot in &mut self.store {
                            if slot.as_ref().is_some_and(|r| r.read) {
                                *slot = None;
                            }
                        }
                    }
                    Some("4") => self.store.iter_mut().for_each(|s| *s = None),
                    Some(_) => return Err(Final::Cms(302)),
                }
                Ok(vec![])
            }
            Form::Test => Ok(vec![format!("+CMGD: (1-{STORAGE_SLOTS}),(0-4)")]),
            _ => Err(Final::Error),
        }
    }
}

/// Text-mode <stat> of a received message (TS 27.005 §3.1).
fn text_stat(read: bool) -> &'static str {
    if read {
        "\"REC READ\""
    } else {
        "\"REC UNREAD\""
    }
}

fn storage_index(a: &str) -> Result<u32, Final> {
    cmdline::args(a)
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|n| (1..=STORAGE_SLOTS).contains(n) || *n == 0)
        .ok_or(Final::Cms(321))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testkit::*;
    use super::super::{Action, Event};
    use crate::sim::SimOptions;

    /// The `Event::Incoming` timers an input scheduled.
    fn incoming(actions: &[Action]) -> Vec<Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Later {
                    event: e @ Event::Incoming { .. },
                    ..
                } => Some(e.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn incoming_texts_are_stored_and_announced_once_indications_are_on() {
        let mut c = quiet(SimOptions {
            incoming: vec![("+15550001111".into(), "Hi there".into())],
            ..cfg()
        });
        // <mt>=0: nothing is on its way yet.
        assert!(incoming(&c.feed(b"AT+CNMI=2,0,0,0,0\r", Duration::ZERO, WALL)).is_empty());
        let events = incoming(&c.feed(b"AT+CNMI=2,1,0,1,0\r", Duration::ZERO, WALL));
        assert_eq!(events.len(), 1);
        // Scheduled once per power-on.
        assert!(incoming(&c.feed(b"AT+CNMI=2,1,0,1,0\r", Duration::ZERO, WALL)).is_empty());
        let event = events.into_iter().next().unwrap();
        assert_eq!(
            writes(&c.fire(event, Duration::ZERO)),
            "\r\n+CMTI: \"SM\",1\r\n"
        );
        let read = run(&mut c, "AT+CMGR=1\r", 0);
        let lines: Vec<&str> = read.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert!(lines[0].starts_with("+CMGR: 0,,"), "{read:?}");
        match crate::pdu::decode_hex(lines[1]).unwrap() {
            crate::pdu::Pdu::Deliver(d) => {
                assert_eq!(d.originator.to_string(), "+15550001111");
                assert_eq!(d.text, "Hi there");
            }
            other => panic!("{other:?}"),
        }
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CMGL=\"ALL\"\r",
            "\r\n+CMGL: 1,\"REC READ\",\"+15550001111\",,\"26/11/22,10:00:00+00\"\r\nHi there\r\n\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGD=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGL=\"ALL\"\r", "\r\nOK\r\n");
    }

    #[test]
    fn mt_2_routes_an_incoming_text_without_storing_it() {
        let mut c = quiet(SimOptions {
            incoming: vec![("Bank".into(), "Hello".into())],
            ..cfg()
        });
        let event = incoming(&c.feed(b"AT+CNMI=2,2,0,0,0\r", Duration::ZERO, WALL)).remove(0);
        let urc = writes(&c.fire(event, Duration::ZERO));
        assert!(urc.starts_with("\r\n+CMT: ,"), "{urc:?}");
        check(&mut c, "AT+CMGL=4\r", "\r\nOK\r\n");
    }

    #[test]
    fn ds_2_stores_reports_for_cmgr_cmgl_and_cmgd() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CNMI=2,1,0,2,0\r", "\r\nOK\r\n");
        let (len, hex) = pdu("+15551234567", "hello", true);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let report = a
            .iter()
            .find_map(|x| match x {
                Action::Later {
                    event: e @ Event::StoreReport(_),
                    ..
                } => Some(e.clone()),
                _ => None,
            })
            .expect("a report to store");
        let Event::StoreReport(stored) = &report else {
            unreachable!()
        };
        let pdu_hex = stored.pdu_hex.clone();
        let len = stored.tpdu_len;
        assert_eq!(
            writes(&c.fire(report, Duration::ZERO)),
            "\r\n+CDSI: \"SR\",1\r\n"
        );
        check(
            &mut c,
            "AT+CPMS?\r",
            "\r\n+CPMS: \"SM\",1,30,\"SM\",1,30,\"SM\",1,30\r\n\r\nOK\r\n",
        );
        check(
            &mut c,
            "AT+CMGL=0\r",
            &format!("\r\n+CMGL: 1,0,,{len}\r\n\r\n{pdu_hex}\r\n\r\nOK\r\n"),
        );
        check(&mut c, "AT+CMGL=0\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CMGR=1\r",
            &format!("\r\n+CMGR: 1,,{len}\r\n\r\n{pdu_hex}\r\n\r\nOK\r\n"),
        );
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        let text = run(&mut c, "AT+CMGR=1\r", 0);
        assert!(text.starts_with("\r\n+CMGR: \"REC READ\",6,"), "{text:?}");
        assert!(
            text.contains(",\"+15551234567\",145,\"26/11/22,10:00:00+00\","),
            "{text:?}"
        );
        check(&mut c, "AT+CMGD=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGR=1\r", "\r\n+CMS ERROR: 321\r\n");
        check(&mut c, "AT+CMGL=\"ALL\"\r", "\r\nOK\r\n");
    }
}
