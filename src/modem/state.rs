//! Pure state transitions of a modem: `step(state, event) -> state`, tested without a port.
//!
//! The driver reports what happened ([`Event`]); this module alone decides what the published
//! [`ModemState`] becomes, so the rules ("a send only starts from ready", "losing the network
//! while sending does not abort the send") live in one place.

use super::ModemState;

/// Something the driver observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The port was opened; initialisation starts.
    PortOpened,
    /// The port is gone (EOF, I/O error, unplug) or closed on purpose.
    PortClosed,
    /// A command timed out; the driver re-synchronises and re-initialises.
    CommandTimeout,
    /// Initialisation finished; `registered` says whether the network is there.
    InitDone {
        /// Whether +CREG/+CGREG/+CEREG said 1 (home) or 5 (roaming).
        registered: bool,
    },
    /// Initialisation cannot finish without a human (SIM missing, PIN rejected, PUK).
    InitFailed(String),
    /// A registration poll or `+CREG` URC.
    Registration {
        /// As for `InitDone`.
        registered: bool,
    },
    /// A send is starting.
    SendStarted,
    /// The send in progress finished (either way).
    SendFinished,
}

/// The state after `event` in `state`.
pub fn step(state: &ModemState, event: &Event) -> ModemState {
    use ModemState as S;
    match (state, event) {
        (_, Event::PortClosed) => S::Disconnected,
        (_, Event::PortOpened) => S::Initializing,
        (S::Disconnected, _) => S::Disconnected,
        (_, Event::CommandTimeout) => S::Initializing,
        (_, Event::InitFailed(reason)) => S::Failed(reason.clone()),
        (S::Initializing, Event::InitDone { registered: true }) => S::Ready,
        (S::Initializing, Event::InitDone { registered: false }) => S::WaitingForNetwork,
        (S::Ready, Event::Registration { registered: false }) => S::WaitingForNetwork,
        (S::WaitingForNetwork, Event::Registration { registered: true }) => S::Ready,
        (S::Ready, Event::SendStarted) => S::Sending,
        (S::Sending, Event::SendFinished) => S::Ready,
        (current, _) => current.clone(),
    }
}

/// Whether a send may start in `state`.
pub fn accepts_send(state: &ModemState) -> bool {
    matches!(state, ModemState::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ModemState as S;

    fn check(state: S, event: Event, expect: S) {
        assert_eq!(step(&state, &event), expect, "{state:?} + {event:?}");
    }

    #[test]
    fn transitions() {
        check(S::Disconnected, Event::PortOpened, S::Initializing);
        check(
            S::Initializing,
            Event::InitDone { registered: true },
            S::Ready,
        );
        check(
            S::Initializing,
            Event::InitDone { registered: false },
            S::WaitingForNetwork,
        );
        check(
            S::WaitingForNetwork,
            Event::Registration { registered: true },
            S::Ready,
        );
        check(
            S::Ready,
            Event::Registration { registered: false },
            S::WaitingForNetwork,
        );
        check(S::Ready, Event::SendStarted, S::Sending);
        check(S::Sending, Event::SendFinished, S::Ready);
        // Losing the network mid-send does not pretend the send stopped.
        check(
            S::Sending,
            Event::Registration { registered: false },
            S::Sending,
        );
        // A send cannot start unless ready.
        check(
            S::WaitingForNetwork,
            Event::SendStarted,
            S::WaitingForNetwork,
        );
        check(S::Initializing, Event::SendStarted, S::Initializing);
        check(S::Sending, Event::CommandTimeout, S::Initializing);
        check(S::Ready, Event::PortClosed, S::Disconnected);
        check(S::Sending, Event::PortClosed, S::Disconnected);
        check(
            S::Initializing,
            Event::InitFailed("SIM PUK required".into()),
            S::Failed("SIM PUK required".into()),
        );
        check(
            S::Failed("x".into()),
            Event::Registration { registered: true },
            S::Failed("x".into()),
        );
        check(S::Failed("x".into()), Event::PortOpened, S::Initializing);
        check(
            S::Disconnected,
            Event::Registration { registered: true },
            S::Disconnected,
        );
        check(S::Disconnected, Event::CommandTimeout, S::Disconnected);
    }

    #[test]
    fn only_ready_accepts_sends() {
        assert!(accepts_send(&S::Ready));
        for s in [
            S::Disconnected,
            S::Initializing,
            S::WaitingForNetwork,
            S::Sending,
            S::Failed("x".into()),
        ] {
            assert!(!accepts_send(&s));
        }
    }
}
