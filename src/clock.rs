//! The one wall clock of the daemon: unix milliseconds, as the store's timestamps use them.
//!
//! The service stamps new messages and OTPs with it; the dispatcher, the inbound, OTP and
//! retention sweeps compare those stamps with it and turn them into tokio deadlines
//! ([`Clock::instant_at`]). One injected type, so a test can hand every part the same fake
//! time. Sleeps and rate limits stay on tokio's monotonic clock.
//!
//! The system clock is read every time rather than extrapolated from a start point: the
//! service stamps new messages with the system clock, and a dispatcher whose own idea of "now"
//! drifted behind it (monotonic clocks and NTP-disciplined wall clocks part by seconds a day)
//! would see fresh messages as not yet due.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::model::Millis;

/// Where the time comes from. Cheap to clone; every clone reads the same source.
#[derive(Clone)]
pub struct Clock {
    /// Unix milliseconds now.
    now: Arc<dyn Fn() -> Millis + Send + Sync>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock::from_fn(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        })
    }

    /// A clock that reads `now` (tests: a frozen or shifted time).
    pub fn from_fn(now: impl Fn() -> Millis + Send + Sync + 'static) -> Clock {
        Clock { now: Arc::new(now) }
    }

    /// A wall clock that reads `start` now and then moves with tokio's clock: under paused tokio
    /// time (`tokio::time::pause`, tests) it moves only when tokio's time does, so the store's
    /// timestamps and the tasks' sleeps agree on a time that costs no wall time to pass.
    pub fn following_tokio(start: Millis) -> Clock {
        let origin = Instant::now();
        Clock::from_fn(move || {
            start.saturating_add(i64::try_from(origin.elapsed().as_millis()).unwrap_or(i64::MAX))
        })
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> Millis {
        (self.now)()
    }

    /// The tokio instant at which this clock will read `ms` (now, if it already has).
    pub fn instant_at(&self, ms: Millis) -> Instant {
        let now = Instant::now();
        let delta = ms.saturating_sub(self.now_ms());
        if delta <= 0 {
            now
        } else {
            now + Duration::from_millis(delta as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let clock = Clock::following_tokio(1_000);
        assert_eq!(clock.now_ms(), 1_000);
        let at = clock.instant_at(61_000);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(clock.now_ms(), 61_000);
        assert_eq!(Instant::now(), at);
        assert_eq!(clock.instant_at(0), Instant::now());
    }

    #[test]
    fn the_system_clock_reads_unix_time() {
        // 2020-01-01 in unix milliseconds: any real clock is past it.
        assert!(Clock::system().now_ms() > 1_577_836_800_000);
    }
}
