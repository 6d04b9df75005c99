//! PostgreSQL: the dispatcher's side of the queue. The same operations as SQLite's
//! `ops/queue.rs` (claim and outcomes), `ops/reports.rs` (status reports), `ops/retention.rs`
//! (prune), `read.rs` (`next_due`, `next_expiry`) and `stats.rs`, with the same history rows
//! and outbox events, plus what several nodes on one queue need:
//!
//! - **One sender per message.** `claim_next` takes the oldest due message with `FOR UPDATE
//!   SKIP LOCKED`, so concurrent claims from any number of nodes each get a different row (or
//!   none) without waiting for each other, and stamps it with this node's id and a lease.
//!   A node that cannot renew its leases (`connected()` false) refuses to claim with an error,
//!   not `None`: `None` would send the dispatcher to sleep until `next_due`, which is already
//!   past for a due message, so it would spin; an error makes it log and pause.
//! - **A late outcome does not overwrite a newer owner.** Every outcome locks the message's row
//!   and is applied only while the claim it answers is still this node's (`sending` under this
//!   node's id; [`Held::answers_to`]). After this node's lease lapsed, another node may have
//!   recovered the message (queued again, or failed) and even be sending it: a late retry, not
//!   taken, unknown outcome, failure or expiry is then only noted in the history ("not
//!   applied: …"). The one exception is `mark_sent` (and the parts of `record_partial_send`):
//!   the network accepted the text, a fact no other node's state can undo, so a message not yet
//!   final becomes `sent` (a pending resend is thereby cancelled; a node sending it meanwhile
//!   finds its own outcome not applied), while a final message keeps its status and only gains
//!   the note, and parts of its own are never replaced. A message nobody ever claimed (queued,
//!   no node) takes any outcome, as on SQLite, where tools and tests record outcomes directly.
//! - **Recovery.** `recover_interrupted` (this node's start) applies the unknown-outcome rule to
//!   the messages this node left `sending`, and only those: other nodes' sends are alive.
//!   `recover_abandoned` (every node, periodically) applies it to any node's `sending` message
//!   whose lease ran out, with `SKIP LOCKED` so two survivors never recover one message twice.
//!   A live node's renewal task keeps its leases ahead of `now`, so they are never taken.
//! - **Status reports** match parts sent by this node only: modem ids and TP-MRs are per node.
//! - `next_due` looks at queued messages only, as on SQLite. Lapsed leases are left to the
//!   dispatcher's own recovery timer: a lease instant in `next_due` would wake every node at
//!   each renewal of a live node, and a lapsed one would stay in the past (so `claim_next`
//!   returning `None` and `next_due` answering "now" would spin) until somebody recovers it.

use deadpool_postgres::GenericClient;

use super::Postgres;
use super::common::{count, event, finish_seq, message_changed, message_status};
use crate::model::Msisdn;
use crate::store::ops::same_recipient;
use crate::store::*;

/// How long after a message's deadline its status report may still come (as SQLite's
/// `ops/reports.rs`: the relative validity period is rounded up, and the SMSC reports after it
/// gives up).
const REPORT_AFTER_DEADLINE_MS: Millis = 60 * 60 * 1000;

/// How long outbox events are kept at most (as SQLite's `ops/retention.rs`).
const EVENTS_KEPT_MS: Millis = 7 * DAY_MS;

/// Arbitrary, fixed: the advisory lock under which one node at a time prunes. Every node runs
/// retention; two prunes deleting the same rows in different orders could deadlock, and the
/// second finds nothing left anyway.
const PRUNE_LOCK: i64 = 0x5349_4d47_4154_4502;

const HOUR_MS: Millis = 3_600_000;

/// A message row locked for the rest of the transaction, with who holds it.
struct Held {
    seq: i64,
    status: MessageStatus,
    node_id: Option<String>,
    to: String,
}

impl Held {
    /// Whether an outcome from node `me` applies: its claim is still the current one, or
    /// nobody ever claimed the message.
    fn answers_to(&self, me: &str) -> bool {
        match self.status {
            MessageStatus::Sending => self.node_id.as_deref() == Some(me),
            MessageStatus::Queued => self.node_id.is_none(),
            _ => false,
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self.status, MessageStatus::Queued | MessageStatus::Sending)
    }

    /// What became of the message since the claim of a node that no longer holds it, for the
    /// message's history.
    fn since(&self) -> String {
        match (self.status, &self.node_id) {
            (MessageStatus::Sending, Some(node)) => format!("node {node} is sending it"),
            (MessageStatus::Sending, None) => "another claim is sending it".to_owned(),
            (MessageStatus::Queued, _) => "it was queued again".to_owned(),
            (status, _) => format!("it is {} already", status.as_str()),
        }
    }
}

/// Locks message `id`; `Corrupt` if unknown (as SQLite's `message_row`: the dispatcher only
/// updates messages it claimed).
async fn held(c: &impl GenericClient, id: &str) -> Result<Held, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT seq, status, node_id, to_number FROM messages WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let row = c
        .query_opt(&stmt, &[&id])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no message {id:?}")))?;
    let status: String = row.try_get(1)?;
    Ok(Held {
        seq: row.try_get(0)?,
        status: message_status(&status)?,
        node_id: row.try_get(2)?,
        to: row.try_get(3)?,
    })
}

/// Notes in the history of a message this node no longer holds an outcome it did not apply.
async fn not_applied(
    c: &impl GenericClient,
    me: &str,
    id: &str,
    held: &Held,
    what: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let since = held.since();
    tracing::warn!(message = %id, node = %me,
        "late outcome not applied: this node no longer holds the message ({since})");
    let detail = format!("not applied: {what} (node {me} no longer holds the message; {since})");
    event(c, held.seq, now, held.status, Some(&detail)).await
}

fn mr_list(mrs: &[u8]) -> String {
    let refs: Vec<String> = mrs.iter().map(u8::to_string).collect();
    refs.join(",")
}

/// Records the parts a modem of this node accepted, numbered from 0. With `replace`, a resend
/// replaces the rows of an earlier partial send (same part numbers) as SQLite's `INSERT OR
/// REPLACE` does, so a status report matches the newest TP-MR of each part; without it (a late
/// send of a final message) existing parts stay, so the reports of the send that made the
/// message final still match.
async fn insert_parts(
    c: &impl GenericClient,
    h: &Held,
    node_id: &str,
    modem_id: &str,
    mrs: &[u8],
    now: Millis,
    replace: bool,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO message_parts
             (message_seq, part_no, node_id, modem_id, mr, recipient, status, sent_at)
         SELECT $1, p.part_no, $2, $3, p.mr, $4, 'sent', $5
         FROM unnest($6::BIGINT[], $7::BIGINT[]) AS p (part_no, mr)
         ON CONFLICT (message_seq, part_no) DO {}",
        if replace {
            "UPDATE SET node_id = EXCLUDED.node_id, modem_id = EXCLUDED.modem_id,
                 mr = EXCLUDED.mr, recipient = EXCLUDED.recipient, status = 'sent',
                 sent_at = EXCLUDED.sent_at, reported_at = NULL, detail = NULL"
        } else {
            "NOTHING"
        }
    );
    let stmt = c.prepare_cached(&sql).await?;
    let part_nos: Vec<i64> = (0..mrs.len() as i64).collect();
    let refs: Vec<i64> = mrs.iter().map(|&m| i64::from(m)).collect();
    c.execute(
        &stmt,
        &[&h.seq, &node_id, &modem_id, &h.to, &now, &part_nos, &refs],
    )
    .await?;
    Ok(())
}

/// Puts a message back in the queue (retry, not taken, resend after an unknown outcome); its
/// lease ends with the claim.
async fn requeue(
    c: &impl GenericClient,
    seq: i64,
    error: &str,
    next_attempt_at: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE messages SET status = 'queued', error = $2, next_attempt_at = $3,
                 updated_at = $4, lease_until = NULL
             WHERE seq = $1",
        )
        .await?;
    c.execute(&stmt, &[&seq, &error, &next_attempt_at, &now])
        .await?;
    Ok(())
}

/// SQLite's `unknown_outcome_seq`: counts and notes the unknown outcome, then fails the message
/// (policy `Fail`, or a cap reached) or requeues it after the rule's backoff.
async fn unknown_outcome_seq(
    c: &impl GenericClient,
    seq: i64,
    reason: &str,
    rule: &UnknownOutcomeRule,
    now: Millis,
) -> Result<MessageStatus, StoreError> {
    let note = format!("outcome unknown: {reason}");
    event(c, seq, now, MessageStatus::Sending, Some(&note)).await?;
    let stmt = c
        .prepare_cached(
            "UPDATE messages SET unknown_outcomes = unknown_outcomes + 1 WHERE seq = $1
             RETURNING unknown_outcomes, attempts",
        )
        .await?;
    let row = c.query_one(&stmt, &[&seq]).await?;
    let (unknown, attempts) = (count(row.try_get(0)?), count(row.try_get(1)?));
    let give_up = match rule.policy {
        UnknownOutcomePolicy::Fail => Some(note.clone()),
        UnknownOutcomePolicy::Resend if unknown >= rule.max_unknown => Some(format!(
            "{note} (outcome unknown {unknown} times: not resent again, each may have reached \
             the phone)"
        )),
        UnknownOutcomePolicy::Resend if rule.max_attempts > 0 && attempts >= rule.max_attempts => {
            Some(format!("gave up after {attempts} attempts; last: {note}"))
        }
        UnknownOutcomePolicy::Resend => None,
    };
    if let Some(why) = give_up {
        finish_seq(c, seq, MessageStatus::Failed, Some(&why), now).await?;
        return Ok(MessageStatus::Failed);
    }
    // As on SQLite: the backoff lets the other queued messages pass the one whose modem just
    // failed to answer for it.
    let delay = rule.resend_delay_ms(unknown);
    requeue(c, seq, &note, now + delay, now).await?;
    let detail = format!("resend after unknown outcome {unknown} in {delay} ms");
    event(c, seq, now, MessageStatus::Queued, Some(&detail)).await?;
    Ok(MessageStatus::Queued)
}

/// Expires every queued message whose deadline has passed that no other transaction holds
/// (another node's claim or expiry of it); returns how many.
async fn expire_overdue_in(c: &impl GenericClient, now: Millis) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT seq FROM messages WHERE status = 'queued' AND deadline <= $1
             ORDER BY seq FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let rows = c.query(&stmt, &[&now]).await?;
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        finish_seq(c, seq, MessageStatus::Expired, Some("deadline passed"), now).await?;
    }
    Ok(rows.len() as u64)
}

/// Applies the unknown-outcome rule to the `sending` messages `select` returns (`seq` and the
/// node that held each), in one transaction; returns how many.
async fn recover(
    c: &impl GenericClient,
    select: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    reason: impl Fn(&str) -> String,
    rule: &UnknownOutcomeRule,
    now: Millis,
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(select).await?;
    let rows = c.query(&stmt, params).await?;
    for row in &rows {
        let seq: i64 = row.try_get(0)?;
        let node: Option<String> = row.try_get(1)?;
        unknown_outcome_seq(c, seq, &reason(node.as_deref().unwrap_or("?")), rule, now).await?;
    }
    Ok(rows.len() as u64)
}

impl Postgres {
    pub(crate) async fn claim_next(&self, now: Millis) -> Result<Option<Claimed>, StoreError> {
        if !self.connected() {
            return Err(StoreError::Postgres(format!(
                "node {} cannot renew its claims, so it takes none until the database answers",
                self.inner.node_id
            )));
        }
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let expired = expire_overdue_in(&tx, now).await?;
        // The queue's partial index is in `seq` order: the first due row not locked by another
        // node's claim is ours.
        let stmt = tx
            .prepare_cached(
                "SELECT seq, id, to_number, kind, body, sealed_body, deadline, attempts, parts,
                     created_at, unknown_outcomes, partial_sends
                 FROM messages
                 WHERE status = 'queued' AND next_attempt_at <= $1
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let Some(r) = tx.query_opt(&stmt, &[&now]).await? else {
            tx.commit().await?;
            if expired > 0 {
                self.committed();
            }
            return Ok(None);
        };
        let seq: i64 = r.try_get(0)?;
        let id: String = r.try_get(1)?;
        let kind: String = r.try_get(3)?;
        let kind = MessageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("kind {kind:?}")))?;
        let body = match (r.try_get::<_, Option<Vec<u8>>>(5)?, r.try_get(4)?) {
            (Some(s), _) => Body::Sealed(s),
            (None, Some(b)) => Body::Clear(b),
            (None, None) => return Err(StoreError::Corrupt(format!("message {id:?} has no body"))),
        };
        let to: String = r.try_get(2)?;
        // Written from a Msisdn and never masked while queued: a failure here is a corrupt row.
        let to = Msisdn::parse(&to)
            .map_err(|e| StoreError::Corrupt(format!("recipient of {id}: {e}")))?;
        let update = tx
            .prepare_cached(
                "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = $2,
                     node_id = $3, lease_until = $4
                 WHERE seq = $1",
            )
            .await?;
        tx.execute(
            &update,
            &[
                &seq,
                &now,
                &self.inner.node_id,
                &(now + self.inner.lease_ms),
            ],
        )
        .await?;
        event(&tx, seq, now, MessageStatus::Sending, None).await?;
        let claimed = Claimed {
            id,
            to,
            kind,
            body,
            deadline: r.try_get(6)?,
            attempts: count(r.try_get(7)?).saturating_add(1),
            parts: count(r.try_get(8)?),
            created_at: r.try_get(9)?,
            unknown_outcomes: count(r.try_get(10)?),
            partial_sends: count(r.try_get(11)?),
        };
        tx.commit().await?;
        if expired > 0 {
            self.committed();
        }
        Ok(Some(claimed))
    }

    pub(crate) async fn mark_sent(
        &self,
        id: &str,
        modem_id: &str,
        mrs: Vec<u8>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        let mut detail = format!("modem {modem_id}, TP-MR {}", mr_list(&mrs));
        if h.is_final() {
            insert_parts(&tx, &h, me, modem_id, &mrs, now, false).await?;
            let note = format!(
                "late send by node {me}, which no longer held the message ({}): {detail}; \
                 status unchanged",
                h.since()
            );
            tracing::warn!(message = %id, node = %me,
                "sent after this node no longer held the message ({})", h.since());
            event(&tx, h.seq, now, h.status, Some(&note)).await?;
            tx.commit().await?;
            return Ok(());
        }
        if !h.answers_to(me) {
            detail.push_str(&format!(
                "; sent by node {me}, which no longer held the message ({})",
                h.since()
            ));
        }
        // The body is no longer needed once the network has it: wipe the sealed code at once.
        // The encoder's part count is the truth; the caller's estimate at enqueue may differ.
        let stmt = tx
            .prepare_cached(
                "UPDATE messages SET status = 'sent', sent_at = $2, modem_id = $3, error = NULL,
                     sealed_body = NULL, updated_at = $2, parts = $4, node_id = $5,
                     lease_until = NULL
                 WHERE seq = $1",
            )
            .await?;
        tx.execute(&stmt, &[&h.seq, &now, &modem_id, &(mrs.len() as i64), &me])
            .await?;
        insert_parts(&tx, &h, me, modem_id, &mrs, now, true).await?;
        event(&tx, h.seq, now, MessageStatus::Sent, Some(&detail)).await?;
        message_changed(&tx, h.seq, now).await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    pub(crate) async fn mark_retry(
        &self,
        id: &str,
        reason: &str,
        next_attempt_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        let what = format!("retry: {reason}");
        if h.answers_to(me) {
            requeue(&tx, h.seq, reason, next_attempt_at, now).await?;
            event(&tx, h.seq, now, MessageStatus::Queued, Some(&what)).await?;
        } else {
            not_applied(&tx, me, id, &h, &what, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(crate) async fn mark_failed(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.finish(id, MessageStatus::Failed, reason, now).await
    }

    pub(crate) async fn mark_expired(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.finish(id, MessageStatus::Expired, reason, now).await
    }

    async fn finish(
        &self,
        id: &str,
        status: MessageStatus,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        let applied = h.answers_to(me);
        if applied {
            finish_seq(&tx, h.seq, status, Some(reason), now).await?;
        } else {
            let what = format!("{}: {reason}", status.as_str());
            not_applied(&tx, me, id, &h, &what, now).await?;
        }
        tx.commit().await?;
        if applied {
            self.committed();
        }
        Ok(())
    }

    /// Returns the message's status after the call: on a message this node no longer holds,
    /// the status the newer owner gave it.
    pub(crate) async fn mark_unknown_outcome(
        &self,
        id: &str,
        reason: &str,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<MessageStatus, StoreError> {
        let rule = rule.into();
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        if !h.answers_to(me) {
            let what = format!("outcome unknown: {reason}");
            not_applied(&tx, me, id, &h, &what, now).await?;
            tx.commit().await?;
            return Ok(h.status);
        }
        let status = unknown_outcome_seq(&tx, h.seq, reason, &rule, now).await?;
        tx.commit().await?;
        if status == MessageStatus::Failed {
            self.committed();
        }
        Ok(status)
    }

    pub(crate) async fn mark_not_taken(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        let what = format!("retry: {reason}");
        if h.answers_to(me) {
            let stmt = tx
                .prepare_cached(
                    "UPDATE messages SET status = 'queued', error = $2, next_attempt_at = $3,
                         updated_at = $3, attempts = GREATEST(attempts - 1, 0), lease_until = NULL
                     WHERE seq = $1",
                )
                .await?;
            tx.execute(&stmt, &[&h.seq, &reason, &now]).await?;
            event(&tx, h.seq, now, MessageStatus::Queued, Some(&what)).await?;
        } else {
            not_applied(&tx, me, id, &h, &what, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The accepted parts reached the network whoever holds the message now, so they are
    /// counted (the cap on whole resends is about duplicates the recipient got) and recorded
    /// (their reports still match) in any case; see the module docs.
    pub(crate) async fn record_partial_send(
        &self,
        id: &str,
        modem_id: &str,
        accepted: Vec<u8>,
        now: Millis,
    ) -> Result<u32, StoreError> {
        let me = self.inner.node_id.as_str();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let h = held(&tx, id).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE messages SET partial_sends = partial_sends + 1 WHERE seq = $1
                 RETURNING partial_sends",
            )
            .await?;
        let partials = count(tx.query_one(&stmt, &[&h.seq]).await?.try_get(0)?);
        insert_parts(&tx, &h, me, modem_id, &accepted, now, !h.is_final()).await?;
        let mut detail = format!(
            "partial send #{partials}: modem {modem_id} accepted part(s) 1..={} (TP-MR {})",
            accepted.len(),
            mr_list(&accepted)
        );
        let status = if h.answers_to(me) {
            MessageStatus::Sending
        } else {
            detail.push_str(&format!(
                "; by node {me}, which no longer held the message ({})",
                h.since()
            ));
            h.status
        };
        event(&tx, h.seq, now, status, Some(&detail)).await?;
        tx.commit().await?;
        Ok(partials)
    }

    pub(crate) async fn record_status_report(
        &self,
        report: StatusReport,
    ) -> Result<Option<ReportEffect>, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        // This node's modem (TP-MR is per modem, modem ids per node), same TP-MR, and a
        // plausible time: not before the send, not after the SMSC must have given up on the
        // message (and never beyond the window).
        let stmt = tx
            .prepare_cached(
                "SELECT p.message_seq, p.part_no, p.recipient
                 FROM message_parts p JOIN messages m ON m.seq = p.message_seq
                 WHERE p.node_id = $1 AND p.modem_id = $2 AND p.mr = $3
                   AND p.sent_at >= $4 AND p.sent_at <= $5
                   AND $5 <= GREATEST(m.deadline, p.sent_at) + $6
                 ORDER BY p.sent_at DESC, p.message_seq DESC",
            )
            .await?;
        let at = report.at;
        let candidates = tx
            .query(
                &stmt,
                &[
                    &self.inner.node_id,
                    &report.modem_id,
                    &i64::from(report.message_reference),
                    &(at - REPORT_WINDOW_MS),
                    &at,
                    &REPORT_AFTER_DEADLINE_MS,
                ],
            )
            .await?;
        let mut found = None;
        for row in &candidates {
            let recipient: String = row.try_get(2)?;
            if same_recipient(&report.recipient, &recipient) {
                found = Some((row.try_get::<_, i64>(0)?, row.try_get::<_, i64>(1)?));
                break;
            }
        }
        let Some((seq, part_no)) = found else {
            return Ok(None);
        };
        // Locked, so two reports of one message's parts count its undelivered parts in turn.
        let stmt = tx
            .prepare_cached("SELECT id, status, parts FROM messages WHERE seq = $1 FOR UPDATE")
            .await?;
        let row = tx.query_one(&stmt, &[&seq]).await?;
        let id: String = row.try_get(0)?;
        let mut status = message_status(&row.try_get::<_, String>(1)?)?;
        let parts: i64 = row.try_get(2)?;
        let part_label = format!("part {} of {parts}", part_no + 1);
        let mut events_written = false;
        match &report.outcome {
            ReportOutcome::Pending(why) => {
                let detail = format!("{part_label}: still trying ({why})");
                event(&tx, seq, at, status, Some(&detail)).await?;
            }
            ReportOutcome::Delivered => {
                update_part(&tx, seq, part_no, "delivered", None, at).await?;
                let stmt = tx
                    .prepare_cached(
                        "SELECT COUNT(*) FROM message_parts
                         WHERE message_seq = $1 AND status <> 'delivered'",
                    )
                    .await?;
                let undelivered: i64 = tx.query_one(&stmt, &[&seq]).await?.try_get(0)?;
                if undelivered <= 0 && status == MessageStatus::Sent {
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE messages SET status = 'delivered', delivered_at = $2,
                                 updated_at = $2
                             WHERE seq = $1",
                        )
                        .await?;
                    tx.execute(&stmt, &[&seq, &at]).await?;
                    status = MessageStatus::Delivered;
                    event(&tx, seq, at, status, None).await?;
                    message_changed(&tx, seq, at).await?;
                    events_written = true;
                } else {
                    let detail = format!("{part_label} delivered");
                    event(&tx, seq, at, status, Some(&detail)).await?;
                }
            }
            ReportOutcome::Failed(why) => {
                update_part(&tx, seq, part_no, "failed", Some(why), at).await?;
                let reason = format!("{part_label} not delivered: {why}");
                if status == MessageStatus::Sent || status == MessageStatus::Delivered {
                    finish_seq(&tx, seq, MessageStatus::Failed, Some(&reason), at).await?;
                    status = MessageStatus::Failed;
                    events_written = true;
                } else {
                    event(&tx, seq, at, status, Some(&reason)).await?;
                }
            }
        }
        tx.commit().await?;
        if events_written {
            self.committed();
        }
        Ok(Some(ReportEffect {
            message_id: id,
            status,
        }))
    }

    pub(crate) async fn recover_interrupted(
        &self,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let rule = rule.into();
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        // Only this node's: the other nodes' sends are alive, or `recover_abandoned`'s. Waits
        // for (rather than skips) a row another node is recovering right now, which then no
        // longer matches.
        let n = recover(
            &tx,
            "SELECT seq, node_id FROM messages WHERE status = 'sending' AND node_id = $1
             ORDER BY seq FOR UPDATE",
            &[&self.inner.node_id],
            |_| "interrupted by a restart while sending".to_owned(),
            &rule,
            now,
        )
        .await?;
        tx.commit().await?;
        if n > 0 {
            self.committed();
        }
        Ok(n)
    }

    pub(crate) async fn recover_abandoned(
        &self,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<u64, StoreError> {
        // No resend backoff: it keeps a modem that just failed to answer from being handed the
        // same text at once, but the survivor's modems are not the dead node's, and the lease
        // already made the message wait far longer. The caps still count the outcome.
        let rule = UnknownOutcomeRule {
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            ..rule.into()
        };
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        // `SKIP LOCKED`: a row another survivor is recovering, or its owner is renewing or
        // recording an outcome for, is theirs; the lease is re-checked on the row's newest
        // version, so a renewal that committed meanwhile keeps it. A `sending` row without a
        // lease is held by nobody.
        let n = recover(
            &tx,
            "SELECT seq, node_id FROM messages
             WHERE status = 'sending' AND (lease_until IS NULL OR lease_until < $1)
             ORDER BY seq FOR UPDATE SKIP LOCKED",
            &[&now],
            |node| format!("interrupted: node {node} stopped renewing its claim"),
            &rule,
            now,
        )
        .await?;
        tx.commit().await?;
        if n > 0 {
            self.committed();
            tracing::warn!(count = n, node = %self.inner.node_id,
                "recovered messages whose node stopped renewing its claims");
        }
        Ok(n)
    }

    pub(crate) async fn next_foreign_lease_expiry(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT MIN(lease_until) FROM messages
                 WHERE status = 'sending' AND node_id <> $1",
            )
            .await?;
        Ok(client
            .query_one(&stmt, &[&self.inner.node_id])
            .await?
            .try_get(0)?)
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        // Two subqueries so each MIN walks its own partial index instead of the whole queue.
        let stmt = client
            .prepare_cached(
                "SELECT LEAST(
                    (SELECT MIN(next_attempt_at) FROM messages WHERE status = 'queued'),
                    (SELECT MIN(deadline) FROM messages WHERE status = 'queued'))",
            )
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
    }

    pub(crate) async fn next_expiry(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT MIN(deadline) FROM messages WHERE status = 'queued'")
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
    }

    pub(crate) async fn expire_overdue(&self, now: Millis) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let n = expire_overdue_in(&tx, now).await?;
        tx.commit().await?;
        if n > 0 {
            self.committed();
        }
        Ok(n)
    }

    /// One counter row for the whole cluster: a hot row, but only multi-part texts draw from it.
    pub(crate) async fn next_concat_reference(&self) -> Result<u8, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE counters SET value = (value + 1) % 256 WHERE name = 'concat_ref'
                 RETURNING value",
            )
            .await?;
        let v: i64 = tx.query_one(&stmt, &[]).await?.try_get(0)?;
        tx.commit().await?;
        Ok(v as u8)
    }

    /// SQLite's `ops::prune`, events included (its `events::prune_events` rule on this
    /// schema's outbox). One node at a time ([`PRUNE_LOCK`]).
    pub(crate) async fn prune(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<PruneStats, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
            .await?;
        let (mut messages_deleted, mut otps_deleted) = (0, 0);
        if let Some(retention) = retention_ms {
            let cutoff = now - retention;
            // Only messages no longer in flight; parts, history and origin go with them
            // (ON DELETE CASCADE).
            messages_deleted = tx
                .execute(
                    "DELETE FROM messages
                     WHERE created_at < $1 AND status NOT IN ('queued', 'sending')",
                    &[&cutoff],
                )
                .await?;
            otps_deleted = tx
                .execute(
                    "DELETE FROM otps
                     WHERE created_at < $1 AND (status <> 'pending' OR expires_at < $2)",
                    &[&cutoff, &now],
                )
                .await?;
        }
        let mut numbers_masked = 0;
        if let Some(mask_after) = mask_after_ms {
            let mask_cutoff = now - mask_after;
            // `strpos(..., '*') = 0` skips rows masked by an earlier run; rows still in flight
            // keep their number because the modem still needs it.
            let messages = format!(
                "UPDATE messages SET to_number = {} WHERE created_at < $1
                   AND strpos(to_number, '*') = 0 AND status NOT IN ('queued', 'sending')",
                mask_sql("to_number")
            );
            numbers_masked += tx.execute(&messages, &[&mask_cutoff]).await?;
            let otps = format!(
                "UPDATE otps SET to_number = {} WHERE created_at < $1
                   AND strpos(to_number, '*') = 0 AND (status <> 'pending' OR expires_at < $2)",
                mask_sql("to_number")
            );
            numbers_masked += tx.execute(&otps, &[&mask_cutoff, &now]).await?;
            let parts = format!(
                "UPDATE message_parts SET recipient = {} WHERE sent_at < $1
                   AND strpos(recipient, '*') = 0",
                mask_sql("recipient")
            );
            numbers_masked += tx.execute(&parts, &[&mask_cutoff]).await?;
        }
        let idempotency_deleted = tx
            .execute(
                "DELETE FROM idempotency WHERE created_at <= $1",
                &[&(now - DAY_MS)],
            )
            .await?;
        // As on SQLite: the outbox carries recipients, so its rows go no later than the numbers
        // are masked or the messages deleted, and at most after a week; events an endpoint has
        // not yet had stay whatever their age.
        let events_kept_ms = [retention_ms, mask_after_ms, Some(EVENTS_KEPT_MS)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(EVENTS_KEPT_MS);
        let events_deleted = super::events::prune_outbox(&tx, now - events_kept_ms).await?;
        tx.commit().await?;
        Ok(PruneStats {
            messages_deleted,
            otps_deleted,
            numbers_masked,
            idempotency_deleted,
            events_deleted,
        })
    }

    pub(crate) async fn hourly_outcomes(
        &self,
        since: Millis,
    ) -> Result<Vec<HourCount>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT (created_at / $2) * $2 AS hour, status, COUNT(*) FROM messages
                 WHERE created_at >= $1 GROUP BY hour, status ORDER BY hour, status",
            )
            .await?;
        let rows = client.query(&stmt, &[&since, &HOUR_MS]).await?;
        rows.iter()
            .map(|r| {
                Ok(HourCount {
                    hour: r.try_get(0)?,
                    status: message_status(&r.try_get::<_, String>(1)?)?,
                    count: r.try_get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .collect()
    }

    pub(crate) async fn delivery_latencies(
        &self,
        since: Millis,
    ) -> Result<Vec<Latency>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT created_at, delivered_at - sent_at FROM messages
                 WHERE created_at >= $1 AND status = 'delivered'
                   AND delivered_at IS NOT NULL AND sent_at IS NOT NULL
                 ORDER BY created_at DESC, seq DESC LIMIT $2",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&since, &i64::from(MAX_LATENCY_SAMPLES)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Latency {
                    created_at: r.try_get(0)?,
                    millis: r.try_get::<_, Millis>(1)?.max(0),
                })
            })
            .collect()
    }

    pub(crate) async fn oldest_queued(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        // The queue's partial index is in insertion order, which is creation order.
        let stmt = client
            .prepare_cached(
                "SELECT created_at FROM messages WHERE status = 'queued' ORDER BY seq LIMIT 1",
            )
            .await?;
        Ok(match client.query_opt(&stmt, &[]).await? {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Extends the leases of this node's sends in flight and records that the node is alive.
    /// Only rows still `sending` under this node's id: a message another node recovered after
    /// this node's lease lapsed is no longer this node's to keep.
    pub(super) async fn renew_leases(&self, now: Millis) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let renew = tx
            .prepare_cached(
                "UPDATE messages SET lease_until = $2
                 WHERE status = 'sending' AND node_id = $1",
            )
            .await?;
        tx.execute(&renew, &[&self.inner.node_id, &(now + self.inner.lease_ms)])
            .await?;
        let alive = tx
            .prepare_cached(
                "INSERT INTO nodes (node_id, started_at, last_seen) VALUES ($1, $2, $2)
                 ON CONFLICT (node_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            )
            .await?;
        tx.execute(&alive, &[&self.inner.node_id, &now]).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn update_part(
    c: &impl GenericClient,
    seq: i64,
    part_no: i64,
    status: &str,
    detail: Option<&str>,
    at: Millis,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE message_parts SET status = $3, detail = $4, reported_at = $5
             WHERE message_seq = $1 AND part_no = $2",
        )
        .await?;
    c.execute(&stmt, &[&seq, &part_no, &status, &detail, &at])
        .await?;
    Ok(())
}

/// SQL masking a phone number column, as SQLite's `ops::mask_sql`: the `+`, the first two
/// digits and the last two.
fn mask_sql(col: &str) -> String {
    format!("substr({col}, 1, 3) || '*****' || right({col}, 2)")
}
