//! Aggregates over the delivery log for the status page (`http::ui`): sends per hour by
//! outcome, delivery latencies, and the age of the queue's oldest message.
//!
//! Each query walks only the window it is asked about through the `created_at` index (or the
//! queue's partial index), so the page's cost does not grow with the log's retention.

use rusqlite::{Connection, params};

use super::{MessageStatus, Millis, Sqlite, StoreError, read::message_status};

/// The most delivered messages [`Store::delivery_latencies`] returns, so a busy day costs a
/// bounded read; percentiles over this many samples are exact enough for a chart.
pub const MAX_LATENCY_SAMPLES: u32 = 50_000;

/// Messages created in one hour of the window, by their current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourCount {
    /// Start of the hour, unix milliseconds (a multiple of 3 600 000).
    pub hour: Millis,
    /// The messages' status now.
    pub status: MessageStatus,
    /// How many.
    pub count: u64,
}

/// One delivered message: when it was created and how long the network took to report it
/// delivered after the modem sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// `created_at`, unix milliseconds.
    pub created_at: Millis,
    /// `delivered_at - sent_at`, milliseconds (never negative).
    pub millis: Millis,
}

const HOUR_MS: Millis = 3_600_000;

fn hourly_outcomes(c: &Connection, since: Millis) -> Result<Vec<HourCount>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT (created_at / ?2) * ?2 AS hour, status, COUNT(*) FROM messages
         WHERE created_at >= ?1 GROUP BY hour, status ORDER BY hour",
    )?;
    let rows = stmt.query_map(params![since, HOUR_MS], |r| {
        Ok((
            r.get::<_, Millis>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hour, status, count) = row?;
        out.push(HourCount {
            hour,
            status: message_status(&status)?,
            count: count.max(0) as u64,
        });
    }
    Ok(out)
}

fn delivery_latencies(c: &Connection, since: Millis) -> Result<Vec<Latency>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT created_at, delivered_at - sent_at FROM messages
         WHERE created_at >= ?1 AND status = 'delivered'
           AND delivered_at IS NOT NULL AND sent_at IS NOT NULL
         ORDER BY created_at DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![since, MAX_LATENCY_SAMPLES], |r| {
        Ok(Latency {
            created_at: r.get(0)?,
            millis: r.get::<_, Millis>(1)?.max(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn oldest_queued(c: &Connection) -> Result<Option<Millis>, StoreError> {
    // The queue's partial index is in insertion order, which is creation order.
    let mut stmt = c.prepare_cached(
        "SELECT created_at FROM messages WHERE status = 'queued' ORDER BY seq LIMIT 1",
    )?;
    let mut rows = stmt.query([])?;
    Ok(match rows.next()? {
        Some(r) => Some(r.get(0)?),
        None => None,
    })
}

impl Sqlite {
    /// Messages created at or after `since`, counted per hour of creation and current status.
    pub async fn hourly_outcomes(&self, since: Millis) -> Result<Vec<HourCount>, StoreError> {
        self.read(move |c| hourly_outcomes(c, since)).await
    }

    /// Delivery latencies of the messages created at or after `since` that were delivered,
    /// newest first, at most [`MAX_LATENCY_SAMPLES`].
    pub async fn delivery_latencies(&self, since: Millis) -> Result<Vec<Latency>, StoreError> {
        self.read(move |c| delivery_latencies(c, since)).await
    }

    /// When the oldest message still waiting in the queue was created.
    pub async fn oldest_queued(&self) -> Result<Option<Millis>, StoreError> {
        self.read(oldest_queued).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::schema::migrate_to(&mut c, super::super::SCHEMA_VERSION).unwrap();
        c
    }

    fn insert(
        c: &Connection,
        seq: i64,
        status: &str,
        created: Millis,
        sent: Option<Millis>,
        delivered: Option<Millis>,
    ) {
        c.execute(
            "INSERT INTO messages (seq, id, to_number, kind, log_text, parts, status, created_at,
                 updated_at, sent_at, delivered_at, deadline, next_attempt_at)
             VALUES (?1, ?2, '+15550001', 'text', 'hi', 1, ?3, ?4, ?4, ?5, ?6, ?4 + 1000, ?4)",
            params![
                seq,
                format!("msg_{seq:032x}"),
                status,
                created,
                sent,
                delivered
            ],
        )
        .unwrap();
    }

    #[test]
    fn counts_per_hour_and_status_inside_the_window_only() {
        let c = db();
        let h = HOUR_MS;
        insert(
            &c,
            1,
            "delivered",
            10 * h + 5,
            Some(10 * h + 6),
            Some(10 * h + 906),
        );
        insert(
            &c,
            2,
            "delivered",
            10 * h + 50,
            Some(10 * h + 60),
            Some(10 * h + 160),
        );
        insert(&c, 3, "failed", 11 * h, None, None);
        insert(&c, 4, "queued", 11 * h + 7, None, None);
        insert(&c, 5, "delivered", 9 * h, Some(9 * h), Some(9 * h + 1));
        let got = hourly_outcomes(&c, 10 * h).unwrap();
        assert_eq!(
            got,
            vec![
                HourCount {
                    hour: 10 * h,
                    status: MessageStatus::Delivered,
                    count: 2
                },
                HourCount {
                    hour: 11 * h,
                    status: MessageStatus::Failed,
                    count: 1
                },
                HourCount {
                    hour: 11 * h,
                    status: MessageStatus::Queued,
                    count: 1
                },
            ]
        );
        let lat = delivery_latencies(&c, 10 * h).unwrap();
        assert_eq!(
            lat,
            vec![
                Latency {
                    created_at: 10 * h + 50,
                    millis: 100
                },
                Latency {
                    created_at: 10 * h + 5,
                    millis: 900
                },
            ]
        );
        assert_eq!(oldest_queued(&c).unwrap(), Some(11 * h + 7));
    }

    #[test]
    fn an_empty_queue_has_no_oldest() {
        assert_eq!(oldest_queued(&db()).unwrap(), None);
    }
}
