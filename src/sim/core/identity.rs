//! Who the modem is: manufacturer, model, revision and IMEI (TS 27.007 §5.1-§5.4, V.250
//! `+GMI`...), `ATI`'s lines, the capabilities `+GCAP`, the IMSI `+CIMI` (§5.6) and the SIM's
//! ICCID, per profile.

use std::time::Duration;

use super::{CmdResult, Core, Final, Handler};
use crate::sim::Profile;
use crate::sim::cmdline::Form;

/// The IMSI of the simulated SIM: MCC 001 / MNC 01 is the test network of TS 23.003.
const IMSI: &str = "001010123456789";

pub(super) const COMMANDS: &[(&str, Handler)] = &[
    ("+CGMI", Core::identification),
    ("+GMI", Core::identification),
    ("+CGMM", Core::identification),
    ("+GMM", Core::identification),
    ("+CGMR", Core::identification),
    ("+GMR", Core::identification),
    ("+CGSN", Core::identification),
    ("+GSN", Core::identification),
    ("+CCID", Core::iccid_command),
    ("+ICCID", Core::iccid_command),
    ("^ICCID", Core::iccid_command),
    ("+CIMI", Core::imsi),
    ("+GCAP", Core::capabilities),
];

/// Identity strings of a profile (TS 27.007 §5).
pub(super) struct Identity {
    pub(super) manufacturer: &'static str,
    pub(super) model: &'static str,
    pub(super) revision: &'static str,
    pub(super) imei: &'static str,
    pub(super) ati: &'static [&'static str],
    pub(super) act: u8,
}

pub(super) fn identity(p: Profile) -> Identity {
    match p {
        Profile::Generic => Identity {
            manufacturer: "simgate",
            model: "simgate-sim",
            revision: concat!("simgate-sim ", env!("CARGO_PKG_VERSION")),
            imei: "356938035643809",
            ati: &[
                "Manufacturer: simgate",
                "Model: simgate-sim",
                concat!("Revision: simgate-sim ", env!("CARGO_PKG_VERSION")),
                "IMEI: 356938035643809",
                "+GCAP: +CGSM",
            ],
            act: 7,
        },
        Profile::Huawei => Identity {
            manufacturer: "huawei",
            model: "E3372",
            revision: "22.328.62.00.00",
            imei: "867223021234563",
            ati: &[
                "Manufacturer: huawei",
                "Model: E3372",
                "Revision: 22.328.62.00.00",
                "IMEI: 867223021234563",
                "+GCAP: +CGSM,+DS,+ES",
            ],
            act: 7,
        },
        Profile::Simcom => Identity {
            manufacturer: "SIMCOM_Ltd",
            model: "SIMCOM_SIM800L",
            revision: "Revision:1418B04SIM800L24",
            imei: "865067021234564",
            ati: &["SIM800 R14.18"],
            act: 0,
        },
        Profile::Quectel => Identity {
            manufacturer: "Quectel",
            model: "EC25",
            revision: "EC25EFAR06A06M4G",
            imei: "866758041234561",
            ati: &["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"],
            act: 7,
        },
    }
}

impl Core {
    /// The IMEI `+CGSN` answers: `--imei`, else the profile's.
    pub(super) fn imei(&self) -> &str {
        self.cfg
            .imei
            .as_deref()
            .unwrap_or(identity(self.cfg.profile).imei)
    }

    pub(super) fn iccid(&self) -> &str {
        self.cfg
            .iccid
            .as_deref()
            .unwrap_or(crate::sim::DEFAULT_ICCID)
    }

    /// `+CGMI`, `+CGMM`, `+CGMR`, `+CGSN` and their V.250 twins.
    fn identification(&mut self, name: &str, form: Form, _now: Duration) -> CmdResult {
        let id = identity(self.cfg.profile);
        let answer = match name {
            "+CGMI" | "+GMI" => id.manufacturer,
            "+CGMM" | "+GMM" => id.model,
            "+CGMR" | "+GMR" => id.revision,
            _ => self.imei(),
        };
        match form {
            Form::Exec => Ok(vec![answer.into()]),
            Form::Test => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }

    // The ICCID (EF_ICCID, readable without the PIN on real SIMs). Vendors disagree on the
    // command: `+CCID` (SIMCom, Quectel, many generic), `+ICCID` and Huawei's `^ICCID?`; all
    // answer here so every client's fallback finds it.
    fn iccid_command(&mut self, name: &str, form: Form, _now: Duration) -> CmdResult {
        if self.cfg.faults.sim_absent && form != Form::Test {
            return Err(Final::Cme(10));
        }
        match (name, form) {
            ("+CCID" | "+ICCID", Form::Exec | Form::Read) => {
                Ok(vec![format!("{name}: {}", self.iccid())])
            }
            ("^ICCID", Form::Read) => Ok(vec![format!("^ICCID: {}", self.iccid())]),
            (_, Form::Test) => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }

    fn imsi(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Exec => {
                self.cme_if_not_ready()?;
                Ok(vec![IMSI.into()])
            }
            Form::Test => Ok(vec![]),
            _ => Err(Final::Error),
        }
    }

    fn capabilities(&mut self, _name: &str, form: Form, _now: Duration) -> CmdResult {
        match form {
            Form::Exec => Ok(vec!["+GCAP: +CGSM".into()]),
            _ => Err(Final::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::sim::SimOptions;

    #[test]
    fn identity_options_change_cgsn_and_ccid_even_when_locked() {
        let mut c = quiet(SimOptions {
            imei: Some("490154203237518".into()),
            iccid: Some("8944500102198304826".into()),
            pin: Some("1234".into()),
            ..cfg()
        });
        check(&mut c, "AT+CGSN\r", "\r\n490154203237518\r\n\r\nOK\r\n");
        check(
            &mut c,
            "AT+CCID\r",
            "\r\n+CCID: 8944500102198304826\r\n\r\nOK\r\n",
        );
        check(
            &mut c,
            "AT^ICCID?\r",
            "\r\n^ICCID: 8944500102198304826\r\n\r\nOK\r\n",
        );
        assert!(run(&mut c, "ATI\r", 0).contains("IMEI: 490154203237518"));
        let mut d = quiet(cfg());
        check(&mut d, "AT+CGSN\r", "\r\n356938035643809\r\n\r\nOK\r\n");
        check(
            &mut d,
            "AT+ICCID\r",
            &format!("\r\n+ICCID: {}\r\n\r\nOK\r\n", crate::sim::DEFAULT_ICCID),
        );
    }
}
