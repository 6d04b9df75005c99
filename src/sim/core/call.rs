//! Incoming voice calls, as far as an SMS client meets them: the network rings (V.250 `RING`,
//! or `+CRING: VOICE` after `AT+CRC=1`, TS 27.007 §6.11), naming the caller in `+CLIP:` after
//! `AT+CLIP=1` (§7.6); `ATA` answers, `ATH` and `AT+CHUP` (§6.5) hang up, and a caller who
//! gives up or hangs up ends it with `NO CARRIER` (V.250 result code 3).

use std::time::Duration;

use super::{Action, CmdResult, Core, Event, Final, Handler};
use crate::sim::cmdline::Form;

pub(super) const COMMANDS: &[(&str, Handler)] = &[("+CHUP", Core::chup)];

/// A call from the network.
#[derive(Debug, Clone)]
pub(super) struct Call {
    /// Tells this call's ring timers from an earlier call's.
    id: u64,
    /// `+` and digits or national digits; `None` when the caller withholds the number.
    from: Option<String>,
    /// Rings still to come after the last one.
    rings_left: u32,
    interval: Duration,
    answered: bool,
}

impl Core {
    /// The network rings `rings` times, `interval` apart; unanswered, the caller gives up one
    /// interval after the last ring.
    pub(super) fn ring_in(
        &mut self,
        from: Option<String>,
        rings: u32,
        interval: Duration,
    ) -> Result<(), String> {
        if !self.sim_ready() {
            return Err(
                "the SIM is not ready: a modem that is not registered gets no calls".into(),
            );
        }
        if self.call.is_some() {
            return Err("a call is already in progress; send \"hangup\" first".into());
        }
        self.call_seq += 1;
        self.call = Some(Call {
            id: self.call_seq,
            from,
            rings_left: rings,
            interval,
            answered: false,
        });
        self.ring(self.call_seq);
        Ok(())
    }

    /// One ring of call `id`, if it is still ringing; after the last, the caller gives up.
    pub(super) fn ring(&mut self, id: u64) {
        let Some(call) = self.call.as_mut().filter(|c| c.id == id && !c.answered) else {
            return;
        };
        if call.rings_left == 0 {
            self.call = None;
            self.urc("NO CARRIER");
            return;
        }
        call.rings_left -= 1;
        let (from, interval) = (call.from.clone(), call.interval);
        let ring = if self.settings.crc == 1 {
            "+CRING: VOICE"
        } else {
            "RING"
        };
        self.urc(ring);
        if self.settings.clip == 1 {
            let line = match &from {
                // <type> 145: international (a leading +), 129: unknown/national (TS 24.008).
                Some(n) if n.starts_with('+') => format!("+CLIP: \"{n}\",145"),
                Some(n) => format!("+CLIP: \"{n}\",129"),
                // <CLI validity> 1: withheld by the caller.
                None => "+CLIP: \"\",128,,,,1".to_string(),
            };
            self.urc(&line);
        }
        self.out.push(Action::Later {
            after: interval,
            event: Event::Ring(id),
        });
    }

    /// The caller hangs up.
    pub(super) fn remote_hangup(&mut self) -> Result<(), String> {
        if self.call.take().is_none() {
            return Err("there is no call to hang up".into());
        }
        self.urc("NO CARRIER");
        Ok(())
    }

    /// `ATA`.
    pub(super) fn answer(&mut self) -> CmdResult {
        match self.call.as_mut() {
            Some(c) if !c.answered => {
                c.answered = true;
                self.tally.answered += 1;
                Ok(vec![])
            }
            _ => Err(Final::NoCarrier),
        }
    }

    /// `ATH`, `AT+CHUP`: ends a ringing or answered call; OK without one too.
    pub(super) fn hang_up(&mut self) -> CmdResult {
        self.call = None;
        Ok(vec![])
    }

    /// The call in progress, for the control socket: `ringing`, `answered` or `none`.
    pub fn call_state(&self) -> &'static str {
        match &self.call {
            None => "none",
            Some(c) if c.answered => "answered",
            Some(_) => "ringing",
        }
    }

    fn chup(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Exec => self.hang_up(),
            Form::Test => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }
}
