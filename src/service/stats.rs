//! What the status page charts: the last 24 hours of the delivery log, per hour, and the
//! queue's oldest waiting message. Read-only; the shapes are ready to draw, so the HTTP layer
//! only renders.

use crate::model::{MessageStatus, Millis};
use crate::store::{HourCount, Latency};

use super::{Service, ServiceError, store_err};

const HOUR_MS: Millis = 3_600_000;

/// Hours the traffic summary covers.
pub const TRAFFIC_HOURS: usize = 24;

/// Messages of one hour by where they ended up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourOutcomes {
    /// Start of the hour, unix milliseconds.
    pub hour: Millis,
    /// Delivered (status report said so).
    pub delivered: u64,
    /// Sent, no delivery report (yet).
    pub sent: u64,
    /// Failed.
    pub failed: u64,
    /// Expired in the queue or canceled.
    pub expired: u64,
    /// Still queued or sending.
    pub waiting: u64,
}

impl HourOutcomes {
    /// Every message of the hour.
    pub fn total(&self) -> u64 {
        self.delivered + self.sent + self.failed + self.expired + self.waiting
    }
}

/// Delivery-latency percentiles (milliseconds from `sent` to `delivered`) of some messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// How many delivered messages they are computed from (0: the others are meaningless).
    pub samples: usize,
    /// Median.
    pub p50: Millis,
    /// 90th percentile.
    pub p90: Millis,
    /// 99th percentile.
    pub p99: Millis,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (sorted in place).
    pub fn of(values: &mut [Millis]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        values.sort_unstable();
        let rank = |p: usize| {
            // Nearest rank: the smallest value with at least p% of the values at or below it.
            let n = values.len();
            let r = (p * n).div_ceil(100).max(1);
            values[r - 1]
        };
        Percentiles {
            samples: values.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        }
    }
}

/// The last [`TRAFFIC_HOURS`] hours, oldest hour first; the last hour is the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// One entry per hour, including hours without messages.
    pub hours: Vec<HourOutcomes>,
    /// Delivery latency per hour, aligned with `hours`.
    pub latency: Vec<Percentiles>,
    /// Delivery latency over the whole window.
    pub overall: Percentiles,
}

/// The queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSummary {
    /// Messages waiting (`queued`).
    pub depth: u64,
    /// When the oldest of them was created.
    pub oldest: Option<Millis>,
}

/// Folds the store's per-hour counts and latencies into the window that ends with the hour of
/// `now`. Pure, so the bucketing is tested without a clock.
pub fn summarize(now: Millis, counts: &[HourCount], latencies: &[Latency]) -> Traffic {
    let last = (now / HOUR_MS) * HOUR_MS;
    let first = last - (TRAFFIC_HOURS as Millis - 1) * HOUR_MS;
    let slot = |t: Millis| -> Option<usize> {
        if t < first || t >= last + HOUR_MS {
            return None;
        }
        Some(((t - first) / HOUR_MS) as usize)
    };
    let mut hours: Vec<HourOutcomes> = (0..TRAFFIC_HOURS)
        .map(|i| HourOutcomes {
            hour: first + i as Millis * HOUR_MS,
            ..HourOutcomes::default()
        })
        .collect();
    for c in counts {
        let Some(i) = slot(c.hour) else { continue };
        let h = &mut hours[i];
        match c.status {
            MessageStatus::Delivered => h.delivered += c.count,
            MessageStatus::Sent => h.sent += c.count,
            MessageStatus::Failed => h.failed += c.count,
            MessageStatus::Expired | MessageStatus::Canceled => h.expired += c.count,
            MessageStatus::Queued | MessageStatus::Sending => h.waiting += c.count,
        }
    }
    let mut per_hour: Vec<Vec<Millis>> = vec![Vec::new(); TRAFFIC_HOURS];
    let mut all = Vec::with_capacity(latencies.len());
    for l in latencies {
        if let Some(i) = slot(l.created_at) {
            per_hour[i].push(l.millis);
            all.push(l.millis);
        }
    }
    Traffic {
        hours,
        latency: per_hour.iter_mut().map(|v| Percentiles::of(v)).collect(),
        overall: Percentiles::of(&mut all),
    }
}

impl Service {
    /// The last 24 hours of the delivery log, per hour.
    pub async fn traffic(&self) -> Result<Traffic, ServiceError> {
        let now = self.clock.now_ms();
        let since = (now / HOUR_MS) * HOUR_MS - (TRAFFIC_HOURS as Millis - 1) * HOUR_MS;
        let counts = self.store.hourly_outcomes(since).await.map_err(store_err)?;
        let latencies = self
            .store
            .delivery_latencies(since)
            .await
            .map_err(store_err)?;
        Ok(summarize(now, &counts, &latencies))
    }

    /// Depth of the queue and the creation time of its oldest message.
    pub async fn queue_summary(&self) -> Result<QueueSummary, ServiceError> {
        let depth = self.store.queue_depth().await.map_err(store_err)?;
        let oldest = self.store.oldest_queued().await.map_err(store_err)?;
        Ok(QueueSummary { depth, oldest })
    }

    /// The time the service reads (unix milliseconds), so pages show ages on the same clock.
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Millis> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.samples, p.p50, p.p90, p.p99), (100, 50, 90, 99));
        let p = Percentiles::of(&mut [7]);
        assert_eq!((p.p50, p.p90, p.p99), (7, 7, 7));
        assert_eq!(Percentiles::of(&mut []).samples, 0);
    }

    #[test]
    fn buckets_cover_24_hours_ending_with_the_current_one() {
        let now = 100 * HOUR_MS + 1234;
        let counts = [
            HourCount {
                hour: 100 * HOUR_MS,
                status: MessageStatus::Delivered,
                count: 3,
            },
            HourCount {
                hour: 100 * HOUR_MS,
                status: MessageStatus::Canceled,
                count: 1,
            },
            HourCount {
                hour: 77 * HOUR_MS,
                status: MessageStatus::Failed,
                count: 2,
            },
            // Outside the window: ignored rather than folded into an edge.
            HourCount {
                hour: 76 * HOUR_MS,
                status: MessageStatus::Failed,
                count: 9,
            },
        ];
        let lat = [
            Latency {
                created_at: 100 * HOUR_MS + 5,
                millis: 2000,
            },
            Latency {
                created_at: 100 * HOUR_MS + 6,
                millis: 4000,
            },
            Latency {
                created_at: 60 * HOUR_MS,
                millis: 1,
            },
        ];
        let t = summarize(now, &counts, &lat);
        assert_eq!(t.hours.len(), TRAFFIC_HOURS);
        assert_eq!(t.hours[0].hour, 77 * HOUR_MS);
        assert_eq!(t.hours[0].failed, 2);
        let last = t.hours[TRAFFIC_HOURS - 1];
        assert_eq!((last.delivered, last.expired, last.total()), (3, 1, 4));
        assert_eq!(t.latency[TRAFFIC_HOURS - 1].p50, 2000);
        assert_eq!(t.overall.samples, 2);
        assert_eq!(t.overall.p99, 4000);
    }
}
