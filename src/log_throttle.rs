//! Rate limits for log lines that an outsider can trigger at will.
//!
//! A forged or broken status report, an undecodable PDU or a stray incoming text each cost one
//! log line. Anyone who can make a modem emit such URCs (a hostile SMSC, a faulty modem, a local
//! process writing to the serial port) could otherwise fill the journal: 200,000 forged reports
//! in 1.2 s once wrote 172,689 lines. A [`Throttle`] lets one line through per interval and
//! counts the rest, so the next line that does get through says how many were held back; the
//! full counts go to metrics, where they cost nothing per event.
//!
//! Time is an argument ([`Throttle::admit_at`]) so the policy is testable without sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One line per `every`, with a count of the lines suppressed in between.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    state: Mutex<State>,
    /// Every event offered, written or not, for a metric.
    seen: AtomicU64,
}

#[derive(Debug)]
struct State {
    /// When the last line was let through; `None` before the first.
    last: Option<Instant>,
    /// Lines held back since then.
    suppressed: u64,
}

impl Throttle {
    /// A throttle letting one line through per `every` (usable in a `static`).
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
            seen: AtomicU64::new(0),
        }
    }

    /// How many events were offered so far (lines written and held back together).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// `Some(suppressed)` if a line may be written now, with the number of lines held back
    /// since the previous one; `None` if this line is to be dropped (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`Throttle::admit`] at a given instant.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        let held: usize = (1..1000)
            .filter(|i| t.admit_at(t0 + Duration::from_millis(*i)).is_some())
            .count();
        assert_eq!(held, 0, "nothing more within the interval");
        assert_eq!(t.admit_at(t0 + Duration::from_secs(10)), Some(999));
        assert_eq!(t.admit_at(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.admit_at(t0 + Duration::from_secs(25)), Some(1));
        assert_eq!(t.seen(), 1003);
    }
}
