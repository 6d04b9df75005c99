//! The network as the modem sees it: registration `+CREG` (TS 27.007 §7.2), `+CGREG`
//! (§10.1.20), `+CEREG` (§10.1.22) and their URCs, the operator `+COPS` (§7.3), signal `+CSQ`
//! (§8.5) and packet attach `+CGATT` (§10.1.9), shaped by `--no-network`, `--network-after`,
//! the SIM lock and `+CFUN`.

use std::time::Duration;

use super::identity::identity;
use super::sim_lock::SimLock;
use super::{CmdResult, Core, Final, Handler, cmdline, num_arg};
use crate::sim::cmdline::Form;

const OPERATOR_LONG: &str = "Simgate Mobile";
const OPERATOR_SHORT: &str = "Simgate";
const OPERATOR_NUMERIC: &str = "00101";

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("+CREG", Core::registration),
    ("+CGREG", Core::registration),
    ("+CEREG", Core::registration),
    ("+CGATT", Core::cgatt),
    ("+CSQ", Core::csq),
    ("+COPS", Core::cops),
];

impl Core {
    pub(super) fn reg_stat(&self, now: Duration) -> u8 {
        if self.cfun != 1 || self.sim != SimLock::Ready || self.cfg.faults.sim_absent {
            0
        } else if let Some(stat) = self.cfg.faults.registration {
            stat
        } else if self.cfg.faults.no_network
            || self.cfg.faults.network_after.is_some_and(|d| now < d)
        {
            2
        } else {
            1
        }
    }

    pub(super) fn reg_line(&self, name: &str, n: u8, stat: u8, read: bool) -> String {
        let prefix = if read {
            format!("{name}: {n},{stat}")
        } else {
            format!("{name}: {stat}")
        };
        if n >= 2 && (stat == 1 || stat == 5) {
            if name == "+CEREG" {
                format!("{prefix},\"00A1\",\"01A2B3C\",7")
            } else {
                format!("{prefix},\"00A1\",\"1A2B\"")
            }
        } else {
            prefix
        }
    }

    pub(super) fn registration_urcs(&mut self) {
        self.registration_urcs_with(1);
    }

    /// The `+CREG`/`+CGREG`/`+CEREG` URCs a registration change to `stat` causes, each only
    /// where its <n> enables it.
    pub(super) fn registration_urcs_with(&mut self, stat: u8) {
        let s = self.settings.clone();
        for (name, n) in [("+CREG", s.creg), ("+CGREG", s.cgreg), ("+CEREG", s.cereg)] {
            if n > 0 {
                let line = self.reg_line(name, n, stat, false);
                self.urc(&line);
            }
        }
    }

    /// Whether `stat` lets the modem send: home (1) or roaming (5).
    pub(super) fn registered(stat: u8) -> bool {
        stat == 1 || stat == 5
    }

    fn reg_setting(&mut self, name: &str) -> &mut u8 {
        match name {
            "+CGREG" => &mut self.settings.cgreg,
            "+CEREG" => &mut self.settings.cereg,
            _ => &mut self.settings.creg,
        }
    }

    fn registration(&mut self, name: &str, form: Form, now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                let n = num_arg(&a, 0, 0..=2, Some(0))?;
                *self.reg_setting(name) = n;
                Ok(vec![])
            }
            Form::Read => {
                let n = *self.reg_setting(name);
                let stat = self.reg_stat(now);
                Ok(vec![self.reg_line(name, n, stat, true)])
            }
            Form::Test => Ok(vec![format!("{name}: (0-2)")]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cgatt(&mut self, _name: &str, form: Form, now: Duration) -> CmdResult {
        match form {
            Form::Read => Ok(vec![format!(
                "+CGATT: {}",
                u8::from(Core::registered(self.reg_stat(now)))
            )]),
            Form::Set(a) => {
                num_arg(&a, 0, 0..=1, None)?;
                Ok(vec![])
            }
            Form::Test => Ok(vec!["+CGATT: (0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn csq(&mut self, _name: &str, form: Form, now: Duration) -> CmdResult {
        match form {
            Form::Exec => Ok(vec![if Core::registered(self.reg_stat(now)) {
                let (rssi, ber) = self.cfg.faults.signal;
                format!("+CSQ: {rssi},{ber}")
            } else {
                "+CSQ: 99,99".into()
            }]),
            Form::Test => Ok(vec!["+CSQ: (0-31,99),(0-7,99)".into()]),
            _ => Err(Final::Error),
        }
    }

    fn cops(&mut self, _name: &str, form: Form, now: Duration) -> CmdResult {
        let act = identity(self.cfg.profile).act;
        match form {
            Form::Read => {
                if !Core::registered(self.reg_stat(now)) {
                    return Ok(vec!["+COPS: 0".into()]);
                }
                let f = self.settings.cops_format;
                let oper = match &self.cfg.faults.operator {
                    Some(names) => names[usize::from(f.min(2))].as_str(),
                    None => match f {
                        0 => OPERATOR_LONG,
                        1 => OPERATOR_SHORT,
                        _ => OPERATOR_NUMERIC,
                    },
                };
                let cs = self.settings.cscs;
                Ok(vec![format!("+COPS: 0,{f},\"{}\",{act}", cs.encode(oper))])
            }
            Form::Set(a) => {
                let mode = num_arg(&a, 0, 0..=4, Some(0))?;
                let format = num_arg(&a, 1, 0..=2, Some(self.settings.cops_format))?;
                if mode == 3 || cmdline::args(&a).get(1).is_some_and(Option::is_some) {
                    self.settings.cops_format = format;
                }
                Ok(vec![])
            }
            Form::Test => {
                let [long, short, numeric] =
                    self.cfg.faults.operator.clone().unwrap_or_else(|| {
                        [OPERATOR_LONG, OPERATOR_SHORT, OPERATOR_NUMERIC].map(String::from)
                    });
                Ok(vec![format!(
                    "+COPS: (2,\"{long}\",\"{short}\",\"{numeric}\",{act}),,(0-4),(0-2)"
                )])
            }
            Form::Exec => Err(Final::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testkit::*;
    use super::super::{Action, Core, Event};
    use crate::sim::Faults;

    #[test]
    fn network_after_registers_at_its_time_with_urcs() {
        let mut c = Core::new(faulty(Faults {
            network_after: Some(Duration::from_secs(5)),
            ..Faults::default()
        }));
        let boot = c.boot(Duration::ZERO);
        assert!(boot.contains(&Action::Later {
            after: Duration::from_secs(5),
            event: Event::NetworkUp
        }));
        run(&mut c, "ATE0\r", 0);
        check(&mut c, "AT+CREG=1;+CGREG=1\r", "\r\nOK\r\n");
        assert_eq!(
            run(&mut c, "AT+CREG?\r", 1000),
            "\r\n+CREG: 1,2\r\n\r\nOK\r\n"
        );
        let urcs = writes(&c.fire(Event::NetworkUp, Duration::from_secs(5)));
        assert_eq!(urcs, "\r\n+CREG: 1\r\n\r\n+CGREG: 1\r\n");
        assert_eq!(
            run(&mut c, "AT+CREG?\r", 5000),
            "\r\n+CREG: 1,1\r\n\r\nOK\r\n"
        );
    }
}
