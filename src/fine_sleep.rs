//! Sleeping to within a fraction of a millisecond.
//!
//! tokio's timer fires on the first 1 ms tick after a deadline, so a 1 ms pause lasts 1–2 ms
//! and a 250 ms one up to 251 ms. Where that error is the thing being measured (the pause
//! between AT commands, the simulator's network time per text), the last stretch before the
//! deadline is slept on a blocking thread instead, whose OS sleep has a high-resolution timer on
//! Linux. The stretch is short, so a long sleep still yields to cancellation at once and never
//! holds a blocking thread for long.

use std::time::Duration;

use tokio::time::Instant;

/// What is left to the OS sleep: two ticks of tokio's timer, so the coarse sleep before it can
/// never overshoot the deadline.
const FINE_STRETCH: Duration = Duration::from_millis(2);

/// Sleeps until `deadline`, overshooting by tens of microseconds rather than up to a
/// millisecond.
pub async fn sleep_until(deadline: Instant) {
    if deadline.saturating_duration_since(Instant::now()) > FINE_STRETCH {
        tokio::time::sleep_until(deadline - FINE_STRETCH).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if rest.is_zero() {
        return;
    }
    if tokio::task::spawn_blocking(move || std::thread::sleep(rest))
        .await
        .is_err()
    {
        // No blocking thread to be had (the runtime is shutting down): the coarse timer will do.
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_wakes_before_the_deadline() {
        for pause in [0, 1, 2, 3, 5] {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(pause);
            sleep_until(deadline).await;
            assert!(
                Instant::now() >= deadline,
                "woke before a {pause} ms deadline"
            );
        }
    }

    #[tokio::test]
    async fn a_past_deadline_returns_at_once() {
        let start = Instant::now();
        sleep_until(start.checked_sub(Duration::from_millis(5)).unwrap_or(start)).await;
        sleep_until(start).await;
    }
}
