//! The SIM's PIN lock (TS 27.007 §8.3 `+CPIN`): `--pin` starts it locked, three wrong PINs
//! block it, the PUK unblocks it and sets a new PIN. Commands that need the SIM answer
//! `+CME ERROR: 11/12` (TS 27.007 §9.2.1) or `+CMS ERROR: 311/316` (TS 27.005 §3.2.5) until
//! then, and `+CME ERROR: 10` / `+CMS ERROR: 310` ("SIM not inserted") while the control
//! socket has the SIM out of its holder. The control socket also locks, blocks and unlocks it
//! at run time ([`SimChange`]).

use std::time::Duration;

use super::{Action, CmdResult, Core, Event, Final, Handler, cmdline};
use crate::sim::Profile;
use crate::sim::cmdline::Form;

/// The PUK a `--pin` SIM accepts once the PIN is blocked (the value test SIMs often use).
pub const PUK: &str = "12345678";
/// Wrong PINs a SIM allows before it asks for the PUK (TS 31.102 default).
pub(super) const PIN_ATTEMPTS: u8 = 3;

pub(super) const COMMANDS: &[(&str, Handler)] = &[("+CPIN", Core::cpin_command)];

/// The SIM's lock state (TS 27.007 §8.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SimLock {
    Ready,
    Pin { attempts_left: u8 },
    Puk,
}

impl SimLock {
    /// The `+CPIN:` line for this state, as `AT+CPIN?` and the boot lines give it.
    pub(super) fn cpin_line(self) -> &'static str {
        match self {
            SimLock::Ready => "+CPIN: READY",
            SimLock::Pin { .. } => "+CPIN: SIM PIN",
            SimLock::Puk => "+CPIN: SIM PUK",
        }
    }
}

/// A run-time change of the SIM (the control socket's `sim` op).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimChange {
    /// Pulled out of its holder.
    Remove,
    /// Put back: locked if a PIN is set, blocked if it was blocked.
    Insert,
    /// PIN enabled (this PIN, else the one in force, else `0000`) and asked for: a fresh
    /// three attempts.
    Lock(Option<String>),
    /// PIN blocked: the SIM wants the PUK.
    Block,
    /// Unlocked, as if the client had entered the PIN.
    Unlock,
}

impl SimChange {
    /// The change as a setting for the next power-on, while the modem is unplugged.
    pub(crate) fn apply_to(&self, opts: &mut crate::sim::SimOptions) {
        match self {
            SimChange::Remove => opts.faults.sim_absent = true,
            SimChange::Insert => opts.faults.sim_absent = false,
            SimChange::Lock(pin) => {
                opts.pin = Some(lock_pin(pin.as_deref(), opts.pin.as_deref()));
                opts.faults.sim_blocked = false;
            }
            SimChange::Block => opts.faults.sim_blocked = true,
            // A power-on asks for an enabled PIN again; only the block goes.
            SimChange::Unlock => opts.faults.sim_blocked = false,
        }
    }
}

fn lock_pin(given: Option<&str>, current: Option<&str>) -> String {
    given.or(current).unwrap_or("0000").to_string()
}

impl Core {
    /// The SIM is in and unlocked.
    pub(super) fn sim_ready(&self) -> bool {
        self.sim == SimLock::Ready && !self.cfg.faults.sim_absent
    }

    /// The `+CPIN:` line SIMCom and Quectel modules print at power-on and on SIM changes.
    pub(super) fn cpin_urc(&self) -> &'static str {
        if self.cfg.faults.sim_absent {
            "+CPIN: NOT INSERTED"
        } else {
            self.sim.cpin_line()
        }
    }

    /// The SIM state the control socket reports.
    pub fn sim_state(&self) -> &'static str {
        match self.sim {
            _ if self.cfg.faults.sim_absent => "removed",
            SimLock::Ready => "ready",
            SimLock::Pin { .. } => "pin",
            SimLock::Puk => "puk",
        }
    }

    /// Carries out a [`SimChange`] with the lines a real module prints for it, and the
    /// registration URCs when the change registers or deregisters the modem.
    pub(super) fn sim_change(&mut self, change: SimChange, now: Duration) {
        let before = self.reg_stat(now);
        let was_ready = self.sim_ready();
        match &change {
            SimChange::Remove => self.cfg.faults.sim_absent = true,
            SimChange::Insert => {
                if self.cfg.faults.sim_absent {
                    self.cfg.faults.sim_absent = false;
                    // A SIM put back is read afresh: an enabled PIN is asked for again.
                    self.sim = match &self.pin {
                        _ if self.cfg.faults.sim_blocked => SimLock::Puk,
                        Some(_) => SimLock::Pin {
                            attempts_left: PIN_ATTEMPTS,
                        },
                        None => SimLock::Ready,
                    };
                }
            }
            SimChange::Lock(pin) => {
                let pin = lock_pin(pin.as_deref(), self.pin.as_deref());
                self.pin = Some(pin.clone());
                self.cfg.pin = Some(pin);
                self.cfg.faults.sim_blocked = false;
                self.sim = SimLock::Pin {
                    attempts_left: PIN_ATTEMPTS,
                };
            }
            SimChange::Block => {
                self.cfg.faults.sim_blocked = true;
                self.sim = SimLock::Puk;
            }
            SimChange::Unlock => {
                self.cfg.faults.sim_blocked = false;
                self.sim = SimLock::Ready;
            }
        }
        if self.sim_ready() && !was_ready {
            // What SIMCom and Quectel say when the SIM becomes usable.
            self.unlocked_lines();
        } else if !self.sim_ready() {
            match self.cfg.profile {
                Profile::Simcom | Profile::Quectel => {
                    let line = self.cpin_urc();
                    self.urc(line);
                }
                Profile::Generic | Profile::Huawei => {}
            }
        }
        if self.cfg.profile == Profile::Huawei
            && self.settings.curc
            && matches!(change, SimChange::Remove | SimChange::Insert)
        {
            // Huawei's ^SIMST: 255 is "no card", 1 a valid one.
            let state = if self.cfg.faults.sim_absent { 255 } else { 1 };
            self.urc(&format!("^SIMST: {state}"));
        }
        let after = self.reg_stat(now);
        if after != before {
            self.registration_urcs_with(after);
        }
    }

    pub(super) fn cme_if_not_ready(&self) -> Result<(), Final> {
        if self.cfg.faults.sim_absent {
            return Err(Final::Cme(10));
        }
        match self.sim {
            SimLock::Ready => Ok(()),
            SimLock::Pin { .. } => Err(Final::Cme(11)),
            SimLock::Puk => Err(Final::Cme(12)),
        }
    }

    pub(super) fn cms_if_not_ready(&self) -> Result<(), Final> {
        if self.cfg.faults.sim_absent {
            return Err(Final::Cms(310));
        }
        match self.sim {
            SimLock::Ready => Ok(()),
            SimLock::Pin { .. } => Err(Final::Cms(311)),
            SimLock::Puk => Err(Final::Cms(316)),
        }
    }

    fn cpin_command(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        if self.cfg.faults.sim_absent && form != Form::Test {
            return Err(Final::Cme(10));
        }
        match form {
            Form::Read => Ok(vec![self.sim.cpin_line().into()]),
            Form::Test => Ok(vec![]),
            Form::Set(a) => self.cpin(&a),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cpin(&mut self, a: &str) -> CmdResult {
        let args = cmdline::args(a);
        let first = args.first().cloned().flatten().ok_or(Final::Cme(50))?;
        match self.sim {
            SimLock::Ready => Err(Final::Cme(3)),
            SimLock::Pin { attempts_left } => {
                if Some(&first) == self.pin.as_ref() {
                    self.sim = SimLock::Ready;
                    tracing::info!("sim: PIN accepted");
                    self.unlocked_lines_later();
                    Ok(vec![])
                } else {
                    self.pin_rejections += 1;
                    let left = attempts_left.saturating_sub(1);
                    self.sim = if left == 0 {
                        SimLock::Puk
                    } else {
                        SimLock::Pin {
                            attempts_left: left,
                        }
                    };
                    let notice = format!("sim: pin attempt {} rejected", self.pin_rejections);
                    tracing::warn!("{notice}");
                    self.out.push(Action::Notice(notice));
                    Err(Final::Cme(16))
                }
            }
            SimLock::Puk => {
                let new_pin = args.get(1).cloned().flatten().ok_or(Final::Cme(12))?;
                if first == PUK {
                    self.pin = Some(new_pin);
                    self.sim = SimLock::Ready;
                    self.unlocked_lines_later();
                    Ok(vec![])
                } else {
                    self.pin_rejections += 1;
                    let notice = format!(
                        "sim: puk attempt rejected ({} wrong codes)",
                        self.pin_rejections
                    );
                    self.out.push(Action::Notice(notice));
                    Err(Final::Cme(16))
                }
            }
        }
    }

    fn unlocked_lines_later(&mut self) {
        // The URCs follow the OK of the `+CPIN` command, as on the real modules; the runner
        // writes actions in order, so queue them after the answer via a zero-delay write.
        let saved = std::mem::take(&mut self.out);
        self.unlocked_lines();
        let lines = std::mem::replace(&mut self.out, saved);
        for a in lines {
            if let Action::Write(bytes) = a {
                self.out.push(Action::Later {
                    after: Duration::from_millis(50),
                    event: Event::Urc(bytes),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Action;
    use super::super::testkit::*;
    use super::PUK;
    use crate::sim::SimOptions;

    #[test]
    fn pin_attempts_are_counted_and_block_after_three() {
        let mut c = quiet(SimOptions {
            pin: Some("1234".into()),
            ..cfg()
        });
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,0\r\n\r\nOK\r\n");
        let (len, _) = pdu("+15551234567", "x", false);
        check(
            &mut c,
            &format!("AT+CMGS={len}\r"),
            "\r\n+CMS ERROR: 311\r\n",
        );
        let a = c.feed(b"AT+CPIN=\"9999\"\r", Duration::ZERO, WALL);
        assert!(a.contains(&Action::Notice("sim: pin attempt 1 rejected".into())));
        assert_eq!(writes(&a), "\r\n+CME ERROR: 16\r\n");
        check(&mut c, "AT+CPIN=\"9999\"\r", "\r\n+CME ERROR: 16\r\n");
        check(&mut c, "AT+CPIN=\"9999\"\r", "\r\n+CME ERROR: 16\r\n");
        assert_eq!(c.pin_rejections(), 3);
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: SIM PUK\r\n\r\nOK\r\n");
        check(&mut c, "AT+CPIN=\"1234\"\r", "\r\n+CME ERROR: 12\r\n");
        check(
            &mut c,
            &format!("AT+CPIN=\"{PUK}\",\"4321\"\r"),
            "\r\nOK\r\n",
        );
        check(&mut c, "AT+CPIN?\r", "\r\n+CPIN: READY\r\n\r\nOK\r\n");
    }
}
