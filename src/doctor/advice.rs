//! The words for a port or a SIM that cannot be used, and how to fix it. `simgate doctor` and
//! `simgate modem probe` both use these, so a user reads one explanation, not two that drift
//! apart. Pure: the facts come in, a problem and a fix go out.

use std::path::Path;

use super::OpenOutcome;
use crate::modem::init::SimState;

/// How to give simgate the SIM PIN, in the form README's set-up uses: a file owned by the
/// service user (a root-owned 0600 file is one the service cannot read) or `SIMGATE_PIN`.
pub const PIN_FIX: &str = "give simgate the PIN in a file only the service user can read: sudo \
     install -o simgate -g simgate -m 0600 /dev/null /etc/simgate/pin; echo <PIN> | sudo tee \
     /etc/simgate/pin >/dev/null; then set pin_file = \"/etc/simgate/pin\" under [[modem]] in \
     /etc/simgate/simgate.toml. Or set SIMGATE_PIN for the service (SIMGATE_PIN=<PIN> in \
     /etc/simgate/simgate.env, mode 0600); from a terminal, SIMGATE_PIN=<PIN> simgate modem \
     probe tries it once. simgate sends a PIN only once, so a wrong one cannot block the SIM";

/// Why `name` could not be opened, and the fix; `None` for outcomes that are not a failure to
/// open (opened, or deliberately not opened: in use by a terminal, the console). `who` names
/// the holder of a busy port when the caller knows it (" by minicom (pid 7)"), else "".
pub fn open_failure(
    name: &str,
    path: &Path,
    outcome: &OpenOutcome,
    who: &str,
) -> Option<(String, String)> {
    let (problem, fix) = match outcome {
        OpenOutcome::Opened | OpenOutcome::InUse | OpenOutcome::Console => return None,
        OpenOutcome::NotFound => {
            let fix = if path.to_string_lossy().starts_with("/dev/simgate") {
                "the udev rule that creates this link did not match: install \
                 udev/60-simgate-modems.rules as /lib/udev/rules.d/60-simgate-modems.rules (add \
                 the modem's USB ids if its vendor is not listed), run sudo udevadm control \
                 --reload && sudo udevadm trigger, and replug the modem; or name the port \
                 directly: simgate doctor without --device lists them"
            } else {
                "check the path (simgate doctor without --device lists the serial ports); a USB \
                 modem that was unplugged or re-enumerated gets a new ttyUSB number, so put a \
                 /dev/serial/by-id/ link in the config instead"
            };
            (format!("{name} does not exist"), fix.to_string())
        }
        OpenOutcome::PermissionDenied { group } => {
            let group = group.as_deref().unwrap_or("dialout");
            (
                format!("permission denied opening {name} (the device belongs to group {group})"),
                format!(
                    "add yourself to the {group} group: sudo usermod -aG {group} $USER, then log \
                     in again"
                ),
            )
        }
        OpenOutcome::Busy => (
            format!("{name} is busy: it is held open exclusively{who}"),
            "stop the program holding it (another simgate, minicom, screen, gammu, \
             ModemManager) and try again; `sudo fuser -v` on the device names the holder, and \
             simgate doctor names it too when it can"
                .to_string(),
        ),
        OpenOutcome::NotASerialPort => (
            format!("{name} is not a serial port, so it cannot be a modem"),
            "point --device (or device = in [[modem]]) at the modem's tty: simgate doctor \
             without --device lists them"
                .to_string(),
        ),
        OpenOutcome::Failed(reason) => (
            format!("{name} cannot be opened: {reason}"),
            "replug the modem and check `dmesg` for USB or driver errors".to_string(),
        ),
    };
    Some((problem, fix))
}

/// What is wrong with the SIM in `name`, and the fix; `None` when it is ready.
pub fn sim_problem(name: &str, sim: &SimState) -> Option<(String, String)> {
    let (problem, fix) = match sim {
        SimState::Ready => return None,
        SimState::PinRequired => (
            format!("the SIM in {name} wants its PIN before it can send"),
            format!("{PIN_FIX}; or remove the PIN lock once in a phone"),
        ),
        SimState::PukRequired => (
            format!("the SIM in {name} is blocked after wrong PINs and wants its PUK"),
            "put the SIM in a phone and unblock it with the PUK from the SIM's card or the \
             carrier (simgate never sends a PUK), then set the right PIN in pin_file"
                .to_string(),
        ),
        SimState::NotInserted => (
            format!("no SIM card in {name}"),
            "unplug the modem, insert the SIM (contacts down, notch as drawn on the slot; a \
             nano-SIM in an adapter often loses contact), and plug it back in"
                .to_string(),
        ),
        SimState::Busy => (
            format!("the SIM in {name} is still starting up"),
            "wait ten seconds and try again".to_string(),
        ),
        SimState::Other(state) => (
            format!("the SIM in {name} is not usable: +CPIN says {state:?}"),
            "PH-SIM PIN or PH-NET PIN means the modem is locked to another carrier (ask the \
             seller for the unlock code); SIM PIN2/PUK2 need a phone; SIM failure means \
             reseat or replace the SIM"
                .to_string(),
        ),
    };
    Some((problem, fix))
}

/// A PIN that was sent once and refused; `sim` is what `+CPIN?` said afterwards.
pub fn pin_rejected(name: &str, sim: &SimState) -> (String, String) {
    let after = match sim {
        SimState::PukRequired => "; that was the last try: the SIM now wants its PUK",
        _ => "",
    };
    (
        format!("the SIM in {name} rejected the PIN; it will not be sent again{after}"),
        format!(
            "check the PIN (three wrong PINs block the SIM, and each rejected try counts, also \
             across restarts), then {}",
            PIN_FIX.trim_start_matches("give simgate the PIN ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_to_open_has_words_and_a_fix() {
        let path = Path::new("/dev/ttyUSB9");
        for outcome in [
            OpenOutcome::NotFound,
            OpenOutcome::PermissionDenied { group: None },
            OpenOutcome::Busy,
            OpenOutcome::NotASerialPort,
            OpenOutcome::Failed("EIO".into()),
        ] {
            let (problem, fix) = open_failure("/dev/ttyUSB9", path, &outcome, "").unwrap();
            assert!(problem.contains("/dev/ttyUSB9"), "{problem}");
            assert!(!fix.is_empty());
            // The system's terse words never stand alone.
            assert!(!problem.contains("typewriter") && !problem.contains("no such device"));
        }
        for outcome in [
            OpenOutcome::Opened,
            OpenOutcome::InUse,
            OpenOutcome::Console,
        ] {
            assert_eq!(open_failure("x", path, &outcome, ""), None);
        }
        let (_, fix) = open_failure(
            "/dev/simgate-modem",
            Path::new("/dev/simgate-modem"),
            &OpenOutcome::NotFound,
            "",
        )
        .unwrap();
        assert!(fix.contains("udev"), "{fix}");
    }

    #[test]
    fn pin_advice_makes_a_file_the_service_user_can_read() {
        let (_, fix) = sim_problem("/dev/ttyUSB2", &SimState::PinRequired).unwrap();
        assert!(
            fix.contains("install -o simgate -g simgate -m 0600"),
            "{fix}"
        );
        assert!(
            fix.contains("SIMGATE_PIN") && fix.contains("pin_file"),
            "{fix}"
        );
        assert!(!fix.contains("umask"), "a root-owned file: {fix}");
        let (problem, fix) = pin_rejected("/dev/ttyUSB2", &SimState::PukRequired);
        assert!(problem.contains("PUK"), "{problem}");
        assert!(fix.contains("install -o simgate"), "{fix}");
        assert_eq!(sim_problem("x", &SimState::Ready), None);
    }
}
