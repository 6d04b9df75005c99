//! Run-time changes a test makes through the control socket (`simgate sim --control`), as
//! typed requests to the core, and what the core tells the runner about its activity.
//!
//! Settings that outlive a replug (network, faults, report rules) are changed in the core's
//! [`SimOptions`], the same place start-up flags put them, so [`apply_to_options`] can change
//! them while the modem is unplugged too; the rest (texts, hangs, URCs) needs a modem.

use std::time::Duration;

use time::OffsetDateTime;

use super::Routed;
use super::{Action, Core, Mode, SimChange};
use crate::sim::inbound::InboundPart;
use crate::sim::{ReportOutcome, ReportRule, ReportTarget, SimOptions};

/// One run-time change.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The network delivers these parts, in this order (TS 27.005 §3.4.1 routing).
    Deliver(Vec<InboundPart>),
    /// Answer the report of the part(s) matching `target`: the held ones now, else the next
    /// send that matches.
    Report {
        /// Which part.
        target: ReportTarget,
        /// What its report says.
        outcome: ReportOutcome,
    },
    /// The answer of parts no rule matches.
    ReportDefault(ReportOutcome),
    /// Forgets every per-message rule.
    ReportClear,
    /// Forces a registration stat (TS 27.007 §7.2); `None` goes back to the start-up flags.
    Registration(Option<u8>),
    /// `+CSQ` <rssi>, <ber>.
    Signal(u8, u8),
    /// The operator: long, short and numeric names.
    Operator([String; 3]),
    /// Share of sends that fail, and the `+CMS ERROR` codes they fail with.
    Errors {
        /// 0..=1.
        rate: f64,
        /// Drawn evenly.
        codes: Vec<u16>,
    },
    /// Network time per part before `+CMGS:`.
    SendDelay(Duration),
    /// Stop answering, for this long or until [`Control::Resume`].
    Hang(Option<Duration>),
    /// End a hang now.
    Resume,
    /// Vanish (the runner closes the pty and removes the link).
    Unplug,
    /// Write this line as a URC (`\r\n<line>\r\n`).
    Urc(String),
    /// The SIM is removed, inserted, locked, blocked or unlocked.
    Sim(SimChange),
    /// A voice call rings `rings` times, `interval` apart, from `from` (`None`: withheld).
    Call {
        /// The caller's number.
        from: Option<String>,
        /// How many rings before the caller gives up.
        rings: u32,
        /// Between two rings.
        interval: Duration,
    },
    /// The caller hangs up.
    Hangup,
}

/// A delivered part's concatenation element and its route, or why it was lost.
pub type PartRoute = (Option<(u16, u8, u8)>, Result<Routed, String>);

/// What a change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Applied.
    Done,
    /// Where each delivered part went, in delivery order: its concatenation element and its
    /// route, or why it was lost.
    Delivered(Vec<PartRoute>),
    /// Held reports answered now, and whether a rule for later sends was added.
    Reports {
        /// Reports that were held and are now scheduled (or dropped, for `never`).
        answered: usize,
        /// No held report matched: the rule waits for a send.
        rule_added: bool,
    },
}

/// What the core did since the runner last asked: the runner adds it to the totals the
/// control socket reads, so counts survive a replug's fresh core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Command lines received, from `AT` on (they carry no message text).
    pub commands: Vec<String>,
    /// SMS parts the network accepted.
    pub parts: u64,
    /// Sends answered with `+CMS ERROR` by a fault (network, reject, error rate).
    pub refused: u64,
    /// Status reports sent (`+CDS`) or stored (`+CDSI`).
    pub reports: u64,
    /// Incoming SMS parts handed to the client (`+CMT`) or stored.
    pub delivered: u64,
    /// Calls the client answered (`ATA`).
    pub answered: u64,
}

/// Applies the changes that are settings to `opts`; `None` for those that need a running
/// modem (the caller says the modem is unplugged).
pub fn apply_to_options(c: &Control, opts: &mut SimOptions) -> Option<Reply> {
    let f = &mut opts.faults;
    match c {
        Control::Report { target, outcome } => {
            f.report_rules.push(ReportRule {
                target: target.clone(),
                outcome: outcome.clone(),
            });
            return Some(Reply::Reports {
                answered: 0,
                rule_added: true,
            });
        }
        Control::ReportDefault(o) => f.report_default = Some(o.clone()),
        Control::ReportClear => f.report_rules.clear(),
        Control::Registration(stat) => f.registration = *stat,
        Control::Signal(rssi, ber) => f.signal = (*rssi, *ber),
        Control::Operator(names) => f.operator = Some(names.clone()),
        Control::Errors { rate, codes } => {
            f.error_rate = *rate;
            f.error_codes = codes.clone();
        }
        Control::SendDelay(d) => f.send_delay = *d,
        Control::Sim(change) => change.apply_to(opts),
        Control::Deliver(_)
        | Control::Hang(_)
        | Control::Resume
        | Control::Unplug
        | Control::Call { .. }
        | Control::Hangup
        | Control::Urc(_) => return None,
    }
    Some(Reply::Done)
}

impl Core {
    /// Carries out a run-time change; the actions are the runner's as after [`Core::feed`].
    pub fn control(
        &mut self,
        c: Control,
        now: Duration,
        wall: OffsetDateTime,
    ) -> (Result<Reply, String>, Vec<Action>) {
        if self.gone {
            return (Err("the modem is unplugged".into()), Vec::new());
        }
        self.wall = wall;
        let reply = self.control_inner(c, now);
        (reply, std::mem::take(&mut self.out))
    }

    fn control_inner(&mut self, c: Control, now: Duration) -> Result<Reply, String> {
        match c {
            Control::Deliver(parts) => {
                if !self.sim_ready() {
                    return Err(format!(
                        "the SIM is {}: a modem that is not registered receives no texts",
                        match self.sim_state() {
                            "removed" => "removed",
                            "pin" => "waiting for its PIN",
                            _ => "blocked (waiting for its PUK)",
                        }
                    ));
                }
                let routes = parts
                    .iter()
                    .map(|p| (p.concat, self.receive_part(p)))
                    .collect();
                Ok(Reply::Delivered(routes))
            }
            Control::Report { target, outcome } => {
                let (matching, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
                    .into_iter()
                    .partition(|r| match &target {
                        ReportTarget::Mr(mr) => r.mr == *mr,
                        ReportTarget::To(to) => r.facts.to == *to,
                    });
                self.held = kept;
                let answered = matching.len();
                for report in matching {
                    self.answer_report(report, outcome.clone());
                }
                if answered > 0 {
                    return Ok(Reply::Reports {
                        answered,
                        rule_added: false,
                    });
                }
                apply_to_options(&Control::Report { target, outcome }, &mut self.cfg)
                    .ok_or_else(|| "report rule not applied".to_string())
            }
            Control::Registration(stat) => {
                let before = self.reg_stat(now);
                self.cfg.faults.registration = stat;
                let after = self.reg_stat(now);
                if after != before {
                    self.registration_urcs_with(after);
                }
                Ok(Reply::Done)
            }
            Control::Call {
                from,
                rings,
                interval,
            } => {
                if matches!(self.mode, Mode::Prompt { .. }) {
                    return Err("the client is typing a message body; try again".into());
                }
                self.ring_in(from, rings, interval)?;
                Ok(Reply::Done)
            }
            Control::Hangup => {
                self.remote_hangup()?;
                Ok(Reply::Done)
            }
            Control::Sim(change) => {
                if matches!(self.mode, Mode::Prompt { .. }) {
                    return Err("the client is typing a message body; try again".into());
                }
                self.sim_change(change, now);
                Ok(Reply::Done)
            }
            Control::Hang(d) => {
                self.hung_since = Some(now);
                self.hang_until = d.map(|d| now + d);
                Ok(Reply::Done)
            }
            Control::Resume => {
                if self.hung_since.take().is_some() {
                    self.hang_until = None;
                    self.line.clear();
                }
                Ok(Reply::Done)
            }
            Control::Unplug => {
                self.gone = true;
                self.out.push(Action::Unplug);
                Ok(Reply::Done)
            }
            Control::Urc(line) => {
                // Between a command and its answer a URC would split the answer; real modems
                // hold them back (TS 27.007 §5.7) until the final result, and so do we by
                // refusing while a message body is being typed.
                if matches!(self.mode, Mode::Prompt { .. }) {
                    return Err("the client is typing a message body; try again".into());
                }
                self.urc(&line);
                Ok(Reply::Done)
            }
            other => apply_to_options(&other, &mut self.cfg).ok_or_else(|| "not a setting".into()),
        }
    }

    /// What happened since the last call.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// The storage's revision and, when it differs from `seen`, its messages with their
    /// 1-based indexes.
    pub fn storage_if_changed(&self, seen: u64) -> Option<(u64, Vec<(u32, super::StoredReport)>)> {
        (self.store_rev != seen).then(|| (self.store_rev, self.storage_view()))
    }

    /// The options as changed at run time, for the next power-on after a replug.
    pub fn options(&self) -> &SimOptions {
        &self.cfg
    }

    /// Reports held for the control socket: (TP-MR, recipient).
    pub fn held_reports(&self) -> Vec<(u8, String)> {
        self.held
            .iter()
            .map(|r| (r.mr, r.facts.to.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::sim::inbound;

    fn set(c: &mut Core, op: Control) {
        let (r, _) = c.control(op, Duration::ZERO, WALL);
        assert!(r.is_ok(), "{r:?}");
    }

    fn ctl(c: &mut Core, op: Control) -> (Result<Reply, String>, String) {
        let (r, a) = c.control(op, Duration::ZERO, WALL);
        (r, writes(&a))
    }

    #[test]
    fn delivered_parts_follow_cnmi() {
        let mut c = quiet(cfg());
        let parts = inbound::split("+15550001111", &"y".repeat(170), None, None, WALL).unwrap();
        check(&mut c, "AT+CNMI=2,1,0,0,0\r", "\r\nOK\r\n");
        let (r, w) = ctl(
            &mut c,
            Control::Deliver(vec![parts[1].clone(), parts[0].clone()]),
        );
        assert_eq!(w, "\r\n+CMTI: \"SM\",1\r\n\r\n+CMTI: \"SM\",2\r\n");
        let Ok(Reply::Delivered(routes)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(routes[0].0, Some((0, 2, 2)));
        check(&mut c, "AT+CNMI=2,2,0,0,0\r", "\r\nOK\r\n");
        let class2 = inbound::split("Bank", "sim", Some(2), None, WALL).unwrap();
        let (_, w) = ctl(&mut c, Control::Deliver(class2));
        assert_eq!(
            w, "\r\n+CMTI: \"SM\",3\r\n",
            "class 2 is stored even with <mt>=2"
        );
        let (_, w) = ctl(&mut c, Control::Deliver(parts[..1].to_vec()));
        assert!(w.starts_with("\r\n+CMT: ,"), "{w:?}");
        assert_eq!(c.take_tally().delivered, 4);
    }

    #[test]
    fn held_reports_are_answered_on_request() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CNMI=2,1,0,1,0\r", "\r\nOK\r\n");
        set(&mut c, Control::ReportDefault(ReportOutcome::Hold));
        let (len, hex) = pdu("+15551234567", "hello", true);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert!(!a.iter().any(|x| matches!(x, Action::Later { .. })));
        let mr = c.held_reports()[0].0;
        let (r, a) = c.control(
            Control::Report {
                target: ReportTarget::Mr(mr),
                outcome: ReportOutcome::Status {
                    status: 0x45,
                    delay: Duration::ZERO,
                },
            },
            Duration::ZERO,
            WALL,
        );
        assert_eq!(
            r,
            Ok(Reply::Reports {
                answered: 1,
                rule_added: false
            })
        );
        let Some(Action::Later { event, .. }) = a.first().cloned() else {
            panic!("{a:?}")
        };
        let urc = writes(&c.fire(event, Duration::ZERO));
        let hex = urc.split("\r\n").nth(2).unwrap();
        match crate::pdu::decode_hex(hex).unwrap() {
            crate::pdu::Pdu::StatusReport(s) => {
                assert_eq!((s.message_reference, s.status), (mr, 0x45))
            }
            other => panic!("{other:?}"),
        }
        // Nothing held for that recipient now: the rule waits for the next send to it.
        let (r, _) = ctl(
            &mut c,
            Control::Report {
                target: ReportTarget::To("+15551234567".into()),
                outcome: ReportOutcome::Never,
            },
        );
        assert_eq!(
            r,
            Ok(Reply::Reports {
                answered: 0,
                rule_added: true
            })
        );
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        let a = c.feed(format!("{hex}\x1a").as_bytes(), Duration::ZERO, WALL);
        assert!(!a.iter().any(|x| matches!(x, Action::Later { .. })));
        assert!(c.held_reports().is_empty());
    }

    #[test]
    fn registration_changes_send_urcs_and_gate_sends() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CREG=2;+CGREG=1\r", "\r\nOK\r\n");
        let (_, w) = ctl(&mut c, Control::Registration(Some(3)));
        assert_eq!(w, "\r\n+CREG: 3\r\n\r\n+CGREG: 3\r\n");
        check(&mut c, "AT+CSQ\r", "\r\n+CSQ: 99,99\r\n\r\nOK\r\n");
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 331\r\n");
        let (_, w) = ctl(&mut c, Control::Registration(Some(5)));
        assert_eq!(w, "\r\n+CREG: 5,\"00A1\",\"1A2B\"\r\n\r\n+CGREG: 5\r\n");
        set(&mut c, Control::Signal(7, 3));
        check(&mut c, "AT+CSQ\r", "\r\n+CSQ: 7,3\r\n\r\nOK\r\n");
        set(
            &mut c,
            Control::Operator(["Other Net".into(), "Other".into(), "99999".into()]),
        );
        check(
            &mut c,
            "AT+COPS?\r",
            "\r\n+COPS: 0,0,\"Other Net\",7\r\n\r\nOK\r\n",
        );
        set(
            &mut c,
            Control::Errors {
                rate: 1.0,
                codes: vec![500],
            },
        );
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 500\r\n");
        assert_eq!(c.take_tally().refused, 2);
    }

    #[test]
    fn the_sim_is_removed_inserted_locked_blocked_and_unlocked() {
        use crate::sim::{Profile, SimOptions};
        let mut c = quiet(SimOptions {
            profile: Profile::Simcom,
            ..cfg()
        });
        check(&mut c, "AT+CREG=1\r", "\r\nOK\r\n");
        let (_, w) = ctl(&mut c, Control::Sim(SimChange::Remove));
        assert_eq!(w, "\r\n+CPIN: NOT INSERTED\r\n\r\n+CREG: 0\r\n");
        assert_eq!(c.sim_state(), "removed");
        // TS 27.007 §9.2.1 / TS 27.005 §3.2.5: "SIM not inserted".
        check(&mut c, "AT+CPIN?\r", "\r\n+CME ERROR: 10\r\n");
        check(&mut c, "AT+CIMI\r", "\r\n+CME ERROR: 10\r\n");
        check(&mut c, "AT+CCID\r", "\r\n+CME ERROR: 10\r\n");
        check(&mut c, "AT+CMGL=4\r", "\r\n+CMS ERROR: 310\r\n");
        let (len, _) = pdu("+15551234567", "x", false);
        check(
            &mut c,
            &format!("AT+CMGS={len}\r"),
            "\r\n+CMS ERROR: 310\r\n",
        );
        let parts = inbound::split("+15550001111", "hi", None, None, WALL).unwrap();
        assert!(ctl(&mut c, Control::Deliver(parts.clone())).0.is_err());
        let (_, w) = ctl(&mut c, Control::Sim(SimChange::Insert));
        assert_eq!(
            w,
            "\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n\r\n+CREG: 1\r\n"
        );
        let (_, w) = ctl(&mut c, Control::Sim(SimChange::Lock(Some("4321".into()))));
        assert_eq!(w, "\r\n+CPIN: SIM PIN\r\n\r\n+CREG: 0\r\n");
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n");
        check(&mut c, "AT+CPIN=\"4321\"\r", "\r\nOK\r\n");
        assert_eq!(c.sim_state(), "ready");
        let (_, w) = ctl(&mut c, Control::Sim(SimChange::Block));
        assert!(w.starts_with("\r\n+CPIN: SIM PUK\r\n"), "{w:?}");
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PUK\r\n\r\nOK\r\n");
        // Blocked survives a power cycle; an enabled PIN is asked for again.
        let mut next = Core::new(c.options().clone());
        assert_eq!(next.sim_state(), "puk");
        let (_, w) = ctl(&mut c, Control::Sim(SimChange::Unlock));
        assert!(w.contains("SMS Ready"), "{w:?}");
        next = Core::new(c.options().clone());
        assert_eq!(next.sim_state(), "pin");
        let mut opts = c.options().clone();
        assert!(apply_to_options(&Control::Sim(SimChange::Remove), &mut opts).is_some());
        next = Core::new(opts);
        assert_eq!(next.sim_state(), "removed");
        let boot = writes(&next.boot(Duration::ZERO));
        assert_eq!(
            boot,
            "\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: NOT INSERTED\r\n"
        );
    }

    #[test]
    fn calls_ring_name_the_caller_and_end() {
        let mut c = quiet(cfg());
        let call = |from: Option<&str>, rings| Control::Call {
            from: from.map(String::from),
            rings,
            interval: Duration::from_millis(100),
        };
        let (r, a) = c.control(call(Some("+15550001111"), 2), Duration::ZERO, WALL);
        assert!(r.is_ok());
        assert_eq!(writes(&a), "\r\nRING\r\n");
        let Some(Action::Later { event, .. }) = a.last().cloned() else {
            panic!("{a:?}")
        };
        check(&mut c, "AT+CLIP=1;+CRC=1\r", "\r\nOK\r\n");
        let a = c.fire(event, Duration::ZERO);
        assert_eq!(
            writes(&a),
            "\r\n+CRING: VOICE\r\n\r\n+CLIP: \"+15550001111\",145\r\n"
        );
        let Some(Action::Later { event, .. }) = a.last().cloned() else {
            panic!("{a:?}")
        };
        // Nobody answered the last ring: the caller gives up.
        assert_eq!(writes(&c.fire(event, Duration::ZERO)), "\r\nNO CARRIER\r\n");
        assert_eq!(c.call_state(), "none");
        check(&mut c, "ATA\r", "\r\nNO CARRIER\r\n");
        let (_, w) = ctl(&mut c, call(None, 3));
        assert_eq!(w, "\r\n+CRING: VOICE\r\n\r\n+CLIP: \"\",128,,,,1\r\n");
        assert!(ctl(&mut c, call(None, 3)).0.is_err(), "one call at a time");
        check(&mut c, "ATA\r", "\r\nOK\r\n");
        assert_eq!(c.call_state(), "answered");
        let (_, w) = ctl(&mut c, Control::Hangup);
        assert_eq!(w, "\r\nNO CARRIER\r\n");
        assert!(ctl(&mut c, call(Some("5550002222"), 3)).0.is_ok());
        check(&mut c, "AT+CHUP\r", "\r\nOK\r\n");
        assert_eq!(c.call_state(), "none");
        assert!(ctl(&mut c, Control::Hangup).0.is_err());
        assert_eq!(c.take_tally().answered, 1);
    }

    #[test]
    fn hang_resume_urc_and_unplug() {
        let mut c = quiet(cfg());
        set(&mut c, Control::Hang(None));
        check(&mut c, "AT\r", "");
        set(&mut c, Control::Resume);
        check(&mut c, "AT\r", "\r\nOK\r\n");
        set(&mut c, Control::Hang(Some(Duration::from_millis(100))));
        assert_eq!(run(&mut c, "AT\r", 50), "");
        assert_eq!(run(&mut c, "AT\r", 150), "\r\nOK\r\n");
        let (_, w) = ctl(&mut c, Control::Urc("RING".into()));
        assert_eq!(w, "\r\nRING\r\n");
        let (r, a) = c.control(Control::Unplug, Duration::ZERO, WALL);
        assert_eq!((r, a), (Ok(Reply::Done), vec![Action::Unplug]));
        assert!(ctl(&mut c, Control::Resume).0.is_err());
    }
}
