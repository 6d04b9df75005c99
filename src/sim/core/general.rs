//! V.250 basic commands (`E`, `V`, `Z`, `&F`, `I`, `S<n>`...), the error form `+CMEE`
//! (TS 27.007 §9.1), the character set `+CSCS` (§5.5), power `+CFUN` (§8.2) and the call
//! settings clients switch off (`+CLIP`, `+CRC`, `+CVHU`).

use std::time::Duration;

use super::Action;
use super::identity::identity;
use super::sim_lock::{PIN_ATTEMPTS, SimLock};
use super::{Charset, CmdResult, Core, Event, Final, Handler, first_arg, num_arg};
use crate::sim::cmdline::Form;

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("+CMEE", Core::cmee),
    ("+CSCS", Core::cscs),
    ("+CFUN", Core::cfun),
    ("+CLIP", Core::call_setting),
    ("+CRC", Core::call_setting),
    ("+CVHU", Core::call_setting),
];

impl Core {
    pub(super) fn basic(&mut self, name: &str, value: Option<&str>, read: bool) -> CmdResult {
        let num = value
            .map(|v| v.parse::<u32>().map_err(|_| Final::Error))
            .transpose()?;
        match name {
            "E" => {
                self.settings.echo = flag(num)?;
                Ok(vec![])
            }
            "V" => {
                self.settings.verbose = flag(num)?;
                Ok(vec![])
            }
            "Z" | "&F" => {
                self.reset_settings();
                Ok(vec![])
            }
            "I" => {
                let id = identity(self.cfg.profile);
                let imei = self.cfg.imei.as_deref().unwrap_or(id.imei);
                // ATI repeats the IMEI on profiles that show it; keep it consistent with +CGSN.
                Ok(id.ati.iter().map(|s| s.replace(id.imei, imei)).collect())
            }
            "Q" if num.unwrap_or(0) == 0 => Ok(vec![]),
            "A" => self.answer(),
            "H" if num.unwrap_or(0) == 0 => self.hang_up(),
            "&C" | "&D" | "&K" | "&W" | "X" | "L" | "M" => Ok(vec![]),
            s if s.starts_with('S') => {
                if read {
                    Ok(vec![format!(
                        "{:03}",
                        match s {
                            "S3" => 13,
                            "S4" => 10,
                            "S5" => 8,
                            _ => 0,
                        }
                    )])
                } else {
                    Ok(vec![])
                }
            }
            _ => Err(Final::Error),
        }
    }

    fn cmee(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Set(a) => {
                self.settings.cmee = num_arg(&a, 0, 0..=2, Some(0))?;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!("+CMEE: {}", self.settings.cmee)]),
            Form::Test => Ok(vec!["+CMEE: (0-2)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cscs(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        let cs = self.settings.cscs;
        match form {
            Form::Set(a) => {
                let v = first_arg(&a, Final::Cme(50))?;
                // In UCS2 the argument itself may arrive hex-coded (TS 27.007 §5.5).
                let parsed = Charset::parse(&v)
                    .or_else(|| cs.decode(v.as_bytes()).and_then(|s| Charset::parse(&s)));
                self.settings.cscs = parsed.ok_or(Final::Cme(50))?;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!("+CSCS: \"{}\"", cs.encode(cs.name()))]),
            Form::Test => Ok(vec!["+CSCS: (\"GSM\",\"IRA\",\"8859-1\",\"UCS2\")".into()]),
            Form::Exec => Err(Final::Error),
        }
    }

    fn cfun(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Read => Ok(vec![format!("+CFUN: {}", self.cfun)]),
            Form::Test => Ok(vec!["+CFUN: (0,1,4),(0,1)".into()]),
            Form::Set(a) => {
                let fun = num_arg(&a, 0, 0..=4, None)?;
                let rst = num_arg(&a, 1, 0..=1, Some(0))?;
                if fun == 2 || fun == 3 {
                    return Err(Final::Cme(4));
                }
                self.cfun = fun;
                if rst == 1 {
                    // A reset reboots the modem: settings back to defaults, SIM locked again,
                    // boot lines a moment later.
                    self.cfun = 1;
                    self.reset_settings();
                    if self.pin.is_some() && self.sim == SimLock::Ready {
                        self.sim = SimLock::Pin {
                            attempts_left: PIN_ATTEMPTS,
                        };
                    }
                    self.out.push(Action::Later {
                        after: Duration::from_millis(200),
                        event: Event::Booted,
                    });
                }
                Ok(vec![])
            }
            Form::Exec => Err(Final::Error),
        }
    }

    /// `+CLIP`, `+CRC`, `+CVHU`: accepted so call-oriented clients get through their set-up.
    fn call_setting(&mut self, name: &str, form: Form, _now: Duration) -> CmdResult {
        match (name, form) {
            (_, Form::Set(a)) => {
                let n = num_arg(&a, 0, 0..=1, Some(0))?;
                match name {
                    "+CLIP" => self.settings.clip = n,
                    "+CRC" => self.settings.crc = n,
                    _ => {}
                }
                Ok(vec![])
            }
            ("+CLIP", Form::Read) => Ok(vec![format!("+CLIP: {},1", self.settings.clip)]),
            ("+CRC", Form::Read) => Ok(vec![format!("+CRC: {}", self.settings.crc)]),
            _ => Err(Final::Error),
        }
    }
}

fn flag(v: Option<u32>) -> Result<bool, Final> {
    match v.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Final::Error),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Core;
    use super::super::testkit::*;

    #[test]
    fn echo_repeats_input_and_reset_restores_it() {
        let mut c = Core::new(cfg());
        assert_eq!(run(&mut c, "AT\r", 0), "AT\r\r\nOK\r\n");
        assert_eq!(run(&mut c, "ATE0\r", 0), "ATE0\r\r\nOK\r\n");
        assert_eq!(run(&mut c, "ATZ\r", 0), "\r\nOK\r\n");
        assert_eq!(run(&mut c, "AT\r", 0), "AT\r\r\nOK\r\n");
    }

    #[test]
    fn cmee_selects_the_error_form() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CPIN=\"1\"\r", "\r\n+CME ERROR: 3\r\n");
        check(&mut c, "AT+CMEE=2\r", "\r\nOK\r\n");
        check(
            &mut c,
            "AT+CPIN=\"1\"\r",
            "\r\n+CME ERROR: operation not allowed\r\n",
        );
        check(&mut c, "AT+CMEE=0\r", "\r\nOK\r\n");
        check(&mut c, "AT+CPIN=\"1\"\r", "\r\nERROR\r\n");
    }

    #[test]
    fn radio_off_deregisters_and_numeric_results_follow_atv0() {
        let mut c = quiet(cfg());
        check(&mut c, "AT+CFUN=0\r", "\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,0\r\n\r\nOK\r\n");
        let (len, hex) = pdu("+15551234567", "x", false);
        run(&mut c, &format!("AT+CMGS={len}\r"), 0);
        check(&mut c, &format!("{hex}\x1a"), "\r\n+CMS ERROR: 331\r\n");
        check(&mut c, "AT+CFUN=1\r", "\r\nOK\r\n");
        check(&mut c, "AT+CREG?\r", "\r\n+CREG: 0,1\r\n\r\nOK\r\n");
        check(&mut c, "ATV0\r", "0\r");
        check(&mut c, "AT+CSQ\r", "+CSQ: 21,99\r\n0\r");
        check(&mut c, "AT+BOGUS\r", "4\r");
        check(&mut c, "AT+CMGR=1\r", "+CMS ERROR: 321\r\n");
    }
}
