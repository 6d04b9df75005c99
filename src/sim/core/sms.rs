//! Sending: the TS 27.005 settings clients make before a send (`+CMGF` §3.2.3, `+CSMS`
//! §3.2.1, `+CSCA` §3.3.1, `+CSMP` §3.3.2, `+CSDH` §3.3.3, `+CNMI` §3.4.1, `+CNMA` §3.4.4) and
//! `+CMGS` (§3.5.1 PDU mode, §4.3 text mode): the `> ` prompt, the body, the network's verdict
//! with the send faults (`--unplug-after`, `--reject`, `--error-rate`, `--send-delay`) and the
//! status report (`+CDS`, or stored for `+CDSI`).

use std::time::Duration;

use rand::RngExt;
use time::OffsetDateTime;

use super::storage::StoredReport;
use super::{
    AcceptedPart, Action, CmdResult, Core, Event, Final, Handler, MAX_LINE, Mode, PromptKind,
    cmdline, first_arg, num_arg,
};
use crate::sim::cmdline::Form;
use crate::sim::submit::{self, SubmitFacts};
use crate::sim::{ReportOutcome, ReportTarget};

/// Largest TPDU `AT+CMGS=<length>` accepts: a SUBMIT with the longest address and 140 octets
/// of user data.
const MAX_TPDU: usize = 164;
/// The service centre the SIM holds until `+CSCA` sets another.
pub(super) const DEFAULT_SMSC: &str = "+15550000000";

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("+CMGF", Core::cmgf),
    ("+CSMS", Core::csms),
    ("+CSCA", Core::csca),
    ("+CSMP", Core::csmp),
    ("+CSDH", Core::csdh),
    ("+CNMI", Core::cnmi),
    ("+CNMA", Core::cnma),
    ("+CMGS", Core::cmgs_command),
];

impl Core {
    fn cmgf(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.settings.text_mode = num_arg(&a, 0, 0..=1, Some(0))? == 1;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!(
                "+CMGF: {}",
                u8::from(self.settings.text_mode)
            )]),
            Form::Test => Ok(vec!["+CMGF: (0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn csms(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.settings.csms = num_arg(&a, 0, 0..=1, None).map_err(|_| Final::Cms(302))?;
                Ok(vec!["+CSMS: 1,1,1".into()])
            }
            Form::Read => Ok(vec![format!("+CSMS: {},1,1,1", self.settings.csms)]),
            Form::Test => Ok(vec!["+CSMS: (0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn csca(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        let cs = self.settings.cscs;
        match form {
            Form::Read => {
                self.cms_if_not_ready()?;
                let toa = if self.smsc.starts_with('+') { 145 } else { 129 };
                Ok(vec![format!("+CSCA: \"{}\",{toa}", cs.encode(&self.smsc))])
            }
            Form::Set(a) => {
                self.cms_if_not_ready()?;
                let v = first_arg(&a, Final::Cms(304))?;
                let num = cs.decode(v.as_bytes()).ok_or(Final::Cms(304))?;
                self.smsc = num;
                Ok(vec![])
            }
            Form::Test => Ok(vec![]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn csmp(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                let args = cmdline::args(&a);
                for (i, slot) in self.settings.csmp.clone().iter().enumerate() {
                    let v = match args.get(i).cloned().flatten() {
                        Some(s) => s.parse::<u8>().map_err(|_| Final::Cms(305))?,
                        None => *slot,
                    };
                    self.settings.csmp[i] = v;
                }
                Ok(vec![])
            }
            Form::Read => {
                let [fo, vp, pid, dcs] = self.settings.csmp;
                Ok(vec![format!("+CSMP: {fo},{vp},{pid},{dcs}")])
            }
            Form::Test => Ok(vec![]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn csdh(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.settings.csdh = num_arg(&a, 0, 0..=1, Some(0))?;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!("+CSDH: {}", self.settings.csdh)]),
            Form::Test => Ok(vec!["+CSDH: (0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cnmi(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                let args = cmdline::args(&a);
                let limits = [2u8, 3, 3, 2, 1];
                let mut v = self.settings.cnmi;
                for (i, max) in limits.iter().enumerate() {
                    if let Some(Some(s)) = args.get(i) {
                        let n = s.parse::<u8>().map_err(|_| Final::Cms(303))?;
                        if n > *max {
                            return Err(Final::Cms(303));
                        }
                        v[i] = n;
                    }
                }
                if args.len() > 5 {
                    return Err(Final::Cms(303));
                }
                self.settings.cnmi = v;
                // The network's texts wait until the client can hear about them, so a test
                // knows they arrive after its client set up indications.
                if !self.incoming_scheduled && v[1] != 0 && !self.cfg.incoming.is_empty() {
                    self.incoming_scheduled = true;
                    for (from, text) in self.cfg.incoming.clone() {
                        self.out.push(Action::Later {
                            after: self.cfg.incoming_after,
                            event: Event::Incoming { from, text },
                        });
                    }
                }
                Ok(vec![])
            }
            Form::Read => {
                let [a, b, c, d, e] = self.settings.cnmi;
                Ok(vec![format!("+CNMI: {a},{b},{c},{d},{e}")])
            }
            Form::Test => Ok(vec!["+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cnma(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Exec => {
                if self.settings.csms == 1 {
                    Ok(vec![])
                } else {
                    Err(Final::Cms(340))
                }
            }
            _ => Err(Final::Error),
        }
    }

    fn cmgs_command(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => self.cmgs(&a),
            Form::Test => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }

    fn cmgs(&mut self, a: &str) -> CmdResult {
        self.cms_if_not_ready()?;
        let kind = if self.settings.text_mode {
            let args = cmdline::args(a);
            let raw = args.first().cloned().flatten().ok_or(Final::Cms(305))?;
            let to = self
                .settings
                .cscs
                .decode(raw.as_bytes())
                .ok_or(Final::Cms(305))?;
            let toa = match args.get(1).cloned().flatten() {
                Some(t) => t.parse::<u8>().map_err(|_| Final::Cms(305))?,
                None if to.starts_with('+') => 145,
                None => 129,
            };
            let digits = to.trim_start_matches('+');
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Final::Cms(305));
            }
            let to = if toa == 145 {
                format!("+{digits}")
            } else {
                digits.to_string()
            };
            PromptKind::Text { to }
        } else {
            let len = a.trim().parse::<usize>().map_err(|_| Final::Cms(304))?;
            if len == 0 || len > MAX_TPDU {
                return Err(Final::Cms(304));
            }
            PromptKind::Pdu { tpdu_len: len }
        };
        self.mode = Mode::Prompt {
            kind,
            body: Vec::new(),
        };
        Err(Final::Prompt)
    }

    pub(super) fn prompt_byte(&mut self, b: u8, now: Duration, wall: OffsetDateTime) {
        let Mode::Prompt { kind, body } = &mut self.mode else {
            return;
        };
        match b {
            0x1A => {
                let kind = kind.clone();
                let body = std::mem::take(body);
                self.mode = Mode::Command;
                if self.settings.echo {
                    self.write(&[b]);
                }
                self.submit(kind, &body, now, wall);
            }
            0x1B => {
                // ESC cancels the send; like SIM800 and Quectel modules we answer OK.
                self.mode = Mode::Command;
                tracing::debug!("sim: send canceled with ESC");
                self.finish(Vec::new(), Final::Ok);
            }
            b'\r' | b'\n' => {
                let text = matches!(kind, PromptKind::Text { .. });
                if text && b == b'\r' {
                    body.push(b'\n');
                    // Text mode: a new line inside the message gets a fresh prompt.
                    self.write(b"\r\n> ");
                }
            }
            0x08 => {
                body.pop();
            }
            _ => {
                if body.len() < MAX_LINE {
                    body.push(b);
                }
                if self.settings.echo {
                    self.write(&[b]);
                }
            }
        }
    }

    fn submit(&mut self, kind: PromptKind, body: &[u8], now: Duration, wall: OffsetDateTime) {
        let facts = match &kind {
            PromptKind::Pdu { tpdu_len } => {
                // The PDU holds the text (an OTP code): only its size reaches the log.
                tracing::trace!(bytes = body.len(), "sim: PDU received");
                match submit::parse(body, *tpdu_len) {
                    Ok(f) => f,
                    Err(why) => {
                        tracing::debug!("sim: rejected PDU: {why}");
                        return self.finish(Vec::new(), Final::Cms(304));
                    }
                }
            }
            PromptKind::Text { to } => {
                let Some(text) = self.settings.cscs.decode(body) else {
                    return self.finish(Vec::new(), Final::Cms(305));
                };
                SubmitFacts {
                    to: to.clone(),
                    text,
                    concat: None,
                    status_report: self.settings.csmp[0] & 0x20 != 0,
                    recipient: None,
                    pdu_hex: None,
                }
            }
        };
        if let Some(n) = self.cfg.faults.unplug_after
            && self.parts_accepted >= n
        {
            tracing::info!("sim: unplugging mid-send after {n} parts");
            self.gone = true;
            self.out
                .push(Action::Notice(format!("sim: unplugged after {n} parts")));
            self.out.push(Action::Unplug);
            return;
        }
        if !Core::registered(self.reg_stat(now)) {
            self.tally.refused += 1;
            return self.finish(Vec::new(), Final::Cms(331));
        }
        if !self.cfg.faults.send_delay.is_zero() {
            self.out.push(Action::Busy(self.cfg.faults.send_delay));
        }
        let digits = facts.to.trim_start_matches('+');
        if self
            .cfg
            .faults
            .reject_prefixes
            .iter()
            .any(|p| facts.to.starts_with(p.as_str()) || digits.starts_with(p.as_str()))
        {
            tracing::debug!("sim: destination rejected by --reject");
            self.tally.refused += 1;
            return self.finish(Vec::new(), Final::Cms(1));
        }
        if self.cfg.faults.error_rate > 0.0 && self.rng.random::<f64>() < self.cfg.faults.error_rate
        {
            let codes = &self.cfg.faults.error_codes;
            // Two codes keep the draw of earlier versions, so a `--seed` replays the same run.
            let code = match codes.len() {
                0 => 38,
                1 => codes[0],
                2 if self.rng.random_bool(0.5) => codes[0],
                2 => codes[1],
                n => codes[self.rng.random_range(0..n)],
            };
            tracing::debug!("sim: injected temporary error {code}");
            self.tally.refused += 1;
            return self.finish(Vec::new(), Final::Cms(code));
        }
        let mr = self.next_mr;
        self.next_mr = self.next_mr.wrapping_add(1);
        self.parts_accepted += 1;
        self.tally.parts += 1;
        // The network holds the part before the modem reports `+CMGS`: a daemon killed right
        // after reading the answer (and committing `sent`) must find the text in the log, or a
        // crash would look like a lost message. The opposite order's window, a kill after the
        // log line and before the answer, is an unknown outcome the daemon resends: a duplicate,
        // as with a real network.
        self.out.push(Action::Accepted(AcceptedPart {
            to: facts.to.clone(),
            text: facts.text.clone(),
            concat: facts.concat,
            pdu_hex: facts.pdu_hex.clone(),
        }));
        self.finish(vec![format!("+CMGS: {mr}")], Final::Ok);
        let ds = self.settings.cnmi[3];
        if facts.status_report && (ds == 1 || ds == 2) {
            let report = PendingReport {
                facts,
                mr,
                stored: ds == 2,
                text_mode: self.settings.text_mode,
                wall,
            };
            let outcome = self.report_outcome(mr, &report.facts.to);
            self.answer_report(report, outcome);
        }
    }

    /// The answer for a part's report: the first matching rule (a TP-MR rule is used up), else
    /// the default.
    fn report_outcome(&mut self, mr: u8, to: &str) -> ReportOutcome {
        let rules = &mut self.cfg.faults.report_rules;
        if let Some(i) = rules.iter().position(|r| match &r.target {
            ReportTarget::Mr(m) => *m == mr,
            ReportTarget::To(t) => t == to,
        }) {
            let rule = if matches!(rules[i].target, ReportTarget::Mr(_)) {
                rules.remove(i)
            } else {
                rules[i].clone()
            };
            return rule.outcome;
        }
        self.cfg
            .faults
            .report_default
            .clone()
            .unwrap_or(ReportOutcome::Status {
                status: self.cfg.faults.report_status,
                delay: self.cfg.faults.report_delay,
            })
    }

    /// Schedules (or holds, or drops) the report of one part as `outcome` says.
    pub(super) fn answer_report(&mut self, report: PendingReport, outcome: ReportOutcome) {
        match outcome {
            ReportOutcome::Never => {}
            ReportOutcome::Hold => self.held.push(report),
            ReportOutcome::Status { status, delay } => {
                let event = report.event(status, report.wall);
                self.out.push(Action::Later {
                    after: delay,
                    event,
                });
            }
            ReportOutcome::Delayed {
                status,
                delay,
                then_status,
                then_delay,
            } => {
                let first = report.event(status, report.wall);
                let last = report.event(then_status, report.wall);
                self.out.push(Action::Later {
                    after: delay,
                    event: first,
                });
                self.out.push(Action::Later {
                    after: delay + then_delay,
                    event: last,
                });
            }
        }
    }
}

/// A status report the network owes for one accepted part, with what shapes its URC: the
/// client's `+CNMI` <ds> and `+CMGF` at the time of the send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PendingReport {
    /// The part as submitted.
    pub facts: SubmitFacts,
    /// Its TP-MR.
    pub mr: u8,
    /// <ds>=2: stored and announced with `+CDSI`, else routed as `+CDS`.
    pub stored: bool,
    /// Text-mode `+CDS` fields instead of a PDU.
    pub text_mode: bool,
    /// When it was sent: both report timestamps.
    pub wall: OffsetDateTime,
}

impl PendingReport {
    /// The timer event that delivers this report with TP-ST `status`.
    fn event(&self, status: u8, wall: OffsetDateTime) -> Event {
        let facts = &self.facts;
        let mr = self.mr;
        let ts = text_timestamp(wall);
        let toa = if facts.to.starts_with('+') { 145 } else { 129 };
        let text_fields = format!("6,{mr},\"{}\",{toa},\"{ts}\",\"{ts}\",{status}", facts.to);
        let (tpdu_len, pdu_hex) = submit::status_report(facts, mr, status, wall);
        if self.stored {
            Event::StoreReport(StoredReport {
                read: false,
                tpdu_len,
                pdu_hex,
                text_fields,
            })
        } else if self.text_mode {
            Event::Cds(format!("\r\n+CDS: {text_fields}\r\n").into_bytes())
        } else {
            Event::Cds(format!("\r\n+CDS: {tpdu_len}\r\n{pdu_hex}\r\n").into_bytes())
        }
    }
}

/// `yy/MM/dd,hh:mm:ss±zz` of TS 27.005 §3.3.2 text-mode timestamps.
pub(super) fn text_timestamp(t: OffsetDateTime) -> String {
    format!(
        "{:02}/{:02}/{:02},{:02}:{:02}:{:02}+00",
        t.year() % 100,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testkit::*;
    use super::super::{AcceptedPart, Action, Event};
    use crate::sim::Faults;

    #[test]
    fn pdu_send_answers_a_rotating_reference_and_reports_the_part() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", false);
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let actions = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let first = writes(&actions);
        assert!(first.starts_with("\r\n+CMGS: ") && first.ends_with("\r\n\r\nOK\r\n"));
        let accepted: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Accepted(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            accepted,
            vec![AcceptedPart {
                to: "+15551234567".into(),
                text: "hello".into(),
                concat: None,
                pdu_hex: Some(hex.clone()),
            }]
        );
        // Logged before answered: a daemon killed after reading `+CMGS` finds the text sent.
        let position = |want: fn(&Action) -> bool| actions.iter().position(want).unwrap();
        assert!(
            position(|a| matches!(a, Action::Accepted(_)))
                < position(
                    |a| matches!(a, Action::Write(b) if b.windows(5).any(|w| w == b"+CMGS"))
                )
        );
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let second = run(&mut c, &format!("{hex}\x1a"), 0);
        let mr = |s: &str| s[9..s.find("\r\n\r\n").unwrap()].parse::<u8>().unwrap();
        assert_eq!(mr(&second), mr(&first).wrapping_add(1));
    }

    #[test]
    fn invalid_pdus_answer_304() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", false);
        for (l, body) in [
            (len - 1, hex.clone()),
            (len, hex[..hex.len() - 2].to_string()),
            (2, "00ZZXX".to_string()),
            (1, "0000".to_string()),
        ] {
            check(&mut c, &format!("AT+CMGS={l}\r"), "\r\n> ");
            check(&mut c, &format!("{body}\x1a"), "\r\n+CMS ERROR: 304\r\n");
        }
        check(&mut c, "AT+CMGS=0\r", "\r\n+CMS ERROR: 304\r\n");
        check(&mut c, "AT+CMGS=abc\r", "\r\n+CMS ERROR: 304\r\n");
    }

    #[test]
    fn status_report_is_scheduled_only_with_srr_and_ds_1() {
        let mut c = quiet(cfg());
        let (len, hex) = pdu("+15551234567", "hello", true);
        let later = |actions: &[Action]| {
            actions.iter().find_map(|a| match a {
                Action::Later {
                    after,
                    event: Event::Cds(b),
                } => Some((*after, String::from_utf8_lossy(b).into_owned())),
                _ => None,
            })
        };
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(later(&a), None, "<ds> is 0 by default");
        check(&mut c, "AT+CNMI=2,1,0,1,0\r", "\r\nOK\r\n");
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        let (after, urc) = later(&a).expect("a status report");
        assert_eq!(after, Duration::from_secs(1));
        assert!(urc.starts_with("\r\n+CDS: "), "{urc:?}");
        let (plain_len, plain) = pdu("+15551234567", "hello", false);
        run(&mut c, &format!("AT+CMGS={plain_len}\r"), 0);
        let a = c.feed(format!("{plain}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(later(&a), None, "no TP-SRR, no report");
    }

    #[test]
    fn text_mode_status_report_urc() {
        let mut c = quiet(cfg());
        check(
            &mut c,
            "AT+CMGF=1;+CNMI=2,1,0,1,0;+CSMP=49,167,0,0\r",
            "\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGS=\"+15551234567\"\r", "\r\n> ");
        let a = c.feed(b"hi\x1a", Duration::ZERO, WALL);
        let urc = a.iter().find_map(|x| match x {
            Action::Later {
                event: Event::Cds(b),
                ..
            } => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        });
        let w = writes(&a);
        let mr = &w[9..w.find("\r\n\r\n").unwrap()];
        assert_eq!(
            urc.as_deref(),
            Some(
                format!(
                    "\r\n+CDS: 6,{mr},\"+15551234567\",145,\"26/11/22,10:00:00+00\",\"26/11/22,10:00:00+00\",0\r\n"
                )
                .as_str()
            )
        );
    }

    #[test]
    fn text_mode_send_in_ucs2() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CSCS=\"UCS2\"\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CSCS?\r",
            "\r\n+CSCS: \"0055004300530032\"\r\n\r\nOK\r\n",
        );
        check(&mut c, "AT+CMGS=\"002B0031003200330034\"\r", "\r\n> ");
        let a = c.feed(b"00480069\x1a", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(x, Action::Accepted(p)
            if p.to == "+1234" && p.text == "Hi" && p.pdu_hex.is_none())));
    }

    #[test]
    fn text_mode_line_breaks_get_a_new_prompt() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGF=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CMGS=\"5551234\"\r", "\r\n> ");
        check(&mut c, "line1\r", "\r\n> ");
        let a = c.feed(b"line2\x1a", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(x, Action::Accepted(p)
            if p.to == "5551234" && p.text == "line1\nline2")));
    }

    #[test]
    fn faults_reject_no_network_and_error_rate() {
        let mut c = quiet(faulty(Faults {
            reject_prefixes: vec!["+1555".into()],
            ..Faults::default()
        }));
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 1\r\n");

        let mut c = quiet(faulty(Faults {
            no_network: true,
            ..Faults::default()
        }));
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,2\r\n\r\nOK\r\n");
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 331\r\n");

        let mut c = quiet(faulty(Faults {
            error_rate: 1.0,
            send_delay: Duration::from_millis(250),
            ..Faults::default()
        }));
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert!(a.contains(&Action::Busy(Duration::from_millis(250))));
        let w = writes(&a);
        assert!(
            w == "\r\n+CMS ERROR: 38\r\n" || w == "\r\n+CMS ERROR: 42\r\n",
            "{w:?}"
        );
    }

    #[test]
    fn unplug_after_vanishes_at_the_next_send() {
        let mut c = quiet(faulty(Faults {
            unplug_after: Some(1),
            ..Faults::default()
        }));
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        assert!(run(&mut c, &format!("{hex}\x1a"), 0).contains("+CMGS"));
        check(&mut c, &format!("AT+CMGS={len}\r"), "\r\n> ");
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert_eq!(a.last(), Some(&Action::Unplug));
        assert_eq!(writes(&a), "");
        assert!(
            c.feed(b"AT\r", Duration::ZERO, WALL).is_empty(),
            "gone for good"
        );
    }

    #[test]
    fn escape_cancels_the_prompt() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CMGS=10\r", "\r\n> ");
        check(&mut c, "0011\x1b", "\r\nOK\r\n");
        check(&mut c, "AT\r", "\r\nOK\r\n");
    }
}
