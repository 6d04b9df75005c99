//! What differs between the profiles: the lines a modem prints at power-on and after a SIM
//! unlock (SIMCom `RDY`/`Call Ready`/`SMS Ready`, Quectel `+QIND: SMS DONE`), Huawei's
//! spontaneous `^RSSI`/`^MODE`/`^BOOT` lines and its `^CURC` (which mutes them) and `^PORTSEL`.

use std::time::Duration;

use rand::RngExt;

use super::{Action, CmdResult, Core, Event, Final, Handler, num_arg};
use crate::sim::Profile;
use crate::sim::cmdline::Form;

pub(super) const COMMANDS: &[(&str, Handler)] =
    &[("^CURC", Core::curc), ("^PORTSEL", Core::portsel)];

impl Core {
    pub(super) fn emit_boot_lines(&mut self) {
        let cpin = self.cpin_urc();
        match self.cfg.profile {
            Profile::Generic => {}
            Profile::Huawei => {
                let line = self.noise_boot();
                self.urc(&line);
            }
            Profile::Simcom => {
                self.urc("RDY");
                self.urc("+CFUN: 1");
                self.urc(cpin);
                if self.sim_ready() {
                    self.urc("Call Ready");
                    self.urc("SMS Ready");
                }
            }
            Profile::Quectel => {
                self.urc("RDY");
                self.urc("+CFUN: 1");
                self.urc(cpin);
                if self.sim_ready() {
                    self.urc("+QIND: SMS DONE");
                }
            }
        }
    }

    /// What a SIM800 / EC25 says once the SIM gets unlocked.
    pub(super) fn unlocked_lines(&mut self) {
        match self.cfg.profile {
            Profile::Simcom => {
                self.urc("+CPIN: READY");
                self.urc("Call Ready");
                self.urc("SMS Ready");
            }
            Profile::Quectel => {
                self.urc("+CPIN: READY");
                self.urc("+QIND: SMS DONE");
            }
            Profile::Generic | Profile::Huawei => {}
        }
    }

    pub(super) fn schedule_noise(&mut self) {
        let ms = self.rng.random_range(300..2000);
        self.out.push(Action::Later {
            after: Duration::from_millis(ms),
            event: Event::Noise,
        });
    }

    pub(super) fn noise_line(&mut self) -> String {
        match self.rng.random_range(0..3) {
            0 => format!("^RSSI:{}", self.rng.random_range(12..28)),
            1 => "^MODE:5,4".to_string(),
            _ => self.noise_boot(),
        }
    }

    pub(super) fn noise_boot(&mut self) -> String {
        format!(
            "^BOOT:{},0,0,0,72",
            self.rng.random_range(10_000_000..99_999_999)
        )
    }

    fn curc(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        if self.cfg.profile != Profile::Huawei {
            return Err(Final::Error);
        }
        match form {
            Form::Set(a) => {
                self.settings.curc = num_arg(&a, 0, 0..=1, None)? == 1;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!("^CURC: {}", u8::from(self.settings.curc))]),
            _ => Err(Final::Error),
        }
    }

    // Which port carries URCs on a multi-port stick; gammu sets it during its Huawei init and
    // gives up when it fails.
    fn portsel(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        if self.cfg.profile != Profile::Huawei {
            return Err(Final::Error);
        }
        match form {
            Form::Set(a) => {
                self.settings.portsel = num_arg(&a, 0, 0..=1, None)?;
                Ok(vec![])
            }
            Form::Read => Ok(vec![format!("^PORTSEL: {}", self.settings.portsel)]),
            Form::Test => Ok(vec!["^PORTSEL: (0,1)".into()]),
            Form::Exec => Err(Final::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testkit::*;
    use super::super::{Action, Core, Event};
    use crate::sim::Profile;
    use crate::sim::SimOptions;

    #[test]
    fn simcom_boot_lines_and_reset() {
        let mut c = Core::new(SimOptions {
            profile: Profile::Simcom,
            ..cfg()
        });
        assert_eq!(
            writes(&c.boot(Duration::ZERO)),
            "\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\nCall Ready\r\n\r\nSMS Ready\r\n"
        );
        let a = c.feed(b"AT+CFUN=1,1\r", Duration::ZERO, WALL);
        assert!(a.iter().any(|x| matches!(
            x,
            Action::Later {
                event: Event::Booted,
                ..
            }
        )));
        assert!(writes(&c.fire(Event::Booted, Duration::ZERO)).contains("SMS Ready"));
    }

    #[test]
    fn huawei_noise_is_muted_by_curc() {
        let mut c = quiet(SimOptions {
            profile: Profile::Huawei,
            ..cfg()
        });
        let noise: String = (0..20)
            .map(|_| writes(&c.fire(Event::Noise, Duration::ZERO)))
            .collect();
        assert!(noise.contains("\r\n^"), "{noise:?}");
        run(&mut c, "AT^CURC=0\r", 0);
        for _ in 0..20 {
            assert_eq!(writes(&c.fire(Event::Noise, Duration::ZERO)), "");
            check(&mut c, "AT+CSQ\r", "\r\n+CSQ: 21,99\r\n\r\nOK\r\n");
        }
    }
}
