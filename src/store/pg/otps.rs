//! PostgreSQL: OTPs. Create (plain or worded), add a text, resend, verify, cancel, read back
//! and expire, as `ops/otps.rs` and `read.rs` do on SQLite: the same outcomes, history rows and
//! events, in the same places.
//!
//! Across nodes, three kinds of lock keep SQLite's single-writer answers:
//!
//! - everything counted per phone number (its pending OTP that a create supersedes or, with
//!   [`OnPending::Keep`], names; its texts in the daily window) is read under the number's
//!   advisory lock, taken first in the transaction, so two nodes creating for one number
//!   queue up instead of both finding "no pending OTP" or both fitting under the cap;
//! - an OTP's own transitions (verify, cancel, resend, added text, expiry) lock its row
//!   (`FOR UPDATE`), so concurrent verifies count every wrong code and approve once;
//! - a pending OTP's queued texts are locked before they are cancelled, so a text a dispatcher
//!   claimed meanwhile is left to run its course, as on SQLite.
//!
//! Locks are taken in one order: the number, the idempotency key, then the OTP's row (an added
//! text, a resend) or the number's pending OTPs and their queued texts (a create superseding
//! them), and last the queue bound, in the statement that inserts (`messages::insert`), which
//! the COMMIT follows at once: a holder of the queue bound waits for nothing but its commit.
//! A create and an added text or resend never wait for each other's OTP rows,
//! because each holds the number's lock first (the service queues an OTP's texts to the OTP's
//! own number). A verify, a cancel and the expiry sweep take no number and no queue lock.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::Postgres;
use super::common::{self, Tx, count};
use super::messages::{Claim, Insert, Inserted, claim_key, insert, unclaim_key};
use crate::store::*;

/// Moves a pending OTP to `status` and records `otp.<status>`; false if it was not pending
/// (`WHERE status = 'pending'` makes every transition out of pending happen at most once).
async fn set_otp_status(
    c: &impl GenericClient,
    otp_id: &str,
    status: OtpStatus,
    now: Millis,
) -> Result<bool, StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE otps SET status = $2, updated_at = $3 WHERE id = $1 AND status = 'pending'",
        )
        .await?;
    let n = c.execute(&stmt, &[&otp_id, &status.as_str(), &now]).await?;
    if n == 1 {
        common::otp_changed(c, otp_id, now).await?;
    }
    Ok(n == 1)
}

/// Cancels the still-queued texts of one OTP; texts already handed to a modem run their course.
/// The lock waits out a dispatcher claiming one of them right now, and the re-check of
/// `status` then skips it.
async fn cancel_queued_texts(
    c: &impl GenericClient,
    otp_id: &str,
    now: Millis,
    why: &str,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT seq FROM messages WHERE otp_id = $1 AND status = 'queued'
             ORDER BY seq FOR UPDATE",
        )
        .await?;
    for r in c.query(&stmt, &[&otp_id]).await? {
        common::finish_seq(c, r.try_get(0)?, MessageStatus::Canceled, Some(why), now).await?;
    }
    Ok(())
}

/// Status, attempts, max attempts and expiry of an OTP.
struct OtpRow {
    status: OtpStatus,
    attempts: u32,
    max_attempts: u32,
    expires_at: Millis,
}

impl OtpRow {
    fn from_row(r: &Row) -> Result<OtpRow, StoreError> {
        let status: String = r.try_get(0)?;
        Ok(OtpRow {
            status: common::otp_status(&status)?,
            attempts: count(r.try_get(1)?),
            max_attempts: count(r.try_get(2)?),
            expires_at: r.try_get(3)?,
        })
    }
}

/// The OTP's row, locked for the rest of the transaction when `lock`.
async fn otp_row(
    c: &impl GenericClient,
    id: &str,
    lock: bool,
) -> Result<Option<OtpRow>, StoreError> {
    let sql = if lock {
        "SELECT status, attempts, max_attempts, expires_at FROM otps WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT status, attempts, max_attempts, expires_at FROM otps WHERE id = $1"
    };
    let stmt = c.prepare_cached(sql).await?;
    c.query_opt(&stmt, &[&id])
        .await?
        .as_ref()
        .map(OtpRow::from_row)
        .transpose()
}

/// The OTP's row, locked, and how many texts (codes) it has. The count is read in the
/// statement's snapshot, taken after the caller acquired the number's lock: every text an
/// earlier holder added is in it, and only a holder of that lock adds one.
async fn otp_row_and_texts(
    c: &impl GenericClient,
    id: &str,
) -> Result<Option<(OtpRow, u32)>, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT status, attempts, max_attempts, expires_at,
                 (SELECT count(*) FROM otp_codes WHERE otp_id = $1)
             FROM otps WHERE id = $1 FOR UPDATE",
        )
        .await?;
    c.query_opt(&stmt, &[&id])
        .await?
        .map(|r| Ok((OtpRow::from_row(&r)?, count(r.try_get(4)?))))
        .transpose()
}

/// Moves a pending OTP past its expiry to `expired`; returns the status it has now.
async fn settle_expiry(
    c: &impl GenericClient,
    id: &str,
    row: &OtpRow,
    now: Millis,
) -> Result<OtpStatus, StoreError> {
    if row.status == OtpStatus::Pending && now >= row.expires_at {
        set_otp_status(c, id, OtpStatus::Expired, now).await?;
        return Ok(OtpStatus::Expired);
    }
    Ok(row.status)
}

/// Supersedes a number's pending OTPs (`ids`, locked by this transaction), and their texts
/// that have not left yet. SPEC: "a new OTP for a number cancels that number's pending one".
async fn supersede(tx: &Tx<'_>, ids: &[String], now: Millis) -> Result<(), StoreError> {
    for old in ids {
        set_otp_status(tx, old, OtpStatus::Canceled, now).await?;
        cancel_queued_texts(tx, old, now, "replaced by a newer OTP").await?;
    }
    Ok(())
}

const OTP_COLUMNS: &str = "id, to_number, status, attempts, max_attempts, expires_at, created_at";

/// An OTP from a row of [`OTP_COLUMNS`], with its codes and messages in insertion order.
async fn otp_from(c: &impl GenericClient, row: Option<Row>) -> Result<Option<Otp>, StoreError> {
    let Some(r) = row else { return Ok(None) };
    let id: String = r.try_get(0)?;
    let status: String = r.try_get(2)?;
    let stmt = c
        .prepare_cached("SELECT code_hmac, message_id FROM otp_codes WHERE otp_id = $1 ORDER BY id")
        .await?;
    let mut code_hmacs = Vec::new();
    let mut message_ids = Vec::new();
    for code in c.query(&stmt, &[&id]).await? {
        code_hmacs.push(code.try_get(0)?);
        message_ids.push(code.try_get(1)?);
    }
    Ok(Some(Otp {
        to: r.try_get(1)?,
        status: common::otp_status(&status)?,
        code_hmacs,
        attempts: count(r.try_get(3)?),
        max_attempts: count(r.try_get(4)?),
        expires_at: r.try_get(5)?,
        created_at: r.try_get(6)?,
        message_ids,
        id,
    }))
}

impl Postgres {
    /// Ends a transaction whose request was refused: committed when it still moved an OTP to
    /// `expired` on the way (SQLite keeps that too), the claimed key given back first; rolled
    /// back, key and all, when it wrote nothing else.
    async fn refuse(
        &self,
        tx: Tx<'_>,
        idem: Option<&Idempotency>,
        claim: Claim,
        settled: bool,
    ) -> Result<(), StoreError> {
        if settled {
            unclaim_key(&tx, idem, claim).await?;
            self.commit_events(tx).await
        } else {
            Ok(tx.rollback().await?)
        }
    }

    /// BEGIN, the number's lock, the key, the write (which checks Keep's pending OTP, the
    /// daily cap and the queue bound first), COMMIT. A number with a pending OTP to supersede
    /// takes a second write, after the cancels.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        otp: &NewOtp,
        msg: &NewMessage,
        wording: Option<&OtpWording>,
        on_pending: OnPending,
        idem: Option<&Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOtpOutcome, StoreError> {
        let now = msg.created_at;
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        common::lock_number(&tx, otp.to.as_str()).await?;
        if let Err(seen) = claim_key(&tx, idem, now).await? {
            tx.rollback().await?;
            return Ok(CreateOtpOutcome::Done(seen));
        }
        let write = Insert {
            msg,
            otp_id: Some(&otp.id),
            otp: Some(otp),
            code_hmac: Some(&otp.code_hmac),
            wording,
            origin: None,
            daily_cap,
            queue_max,
            pending: Some(on_pending),
        };
        let mut superseded = false;
        let outcome = loop {
            match insert(&tx, &write).await? {
                Inserted::Created => {
                    self.commit_events(tx).await?;
                    return Ok(CreateOtpOutcome::Done(CreateOutcome::Created));
                }
                Inserted::DailyLimit { retry_after_ms } => {
                    break CreateOtpOutcome::Done(CreateOutcome::DailyLimit { retry_after_ms });
                }
                Inserted::QueueFull => break CreateOtpOutcome::Done(CreateOutcome::QueueFull),
                Inserted::Pending {
                    unexpired: Some(otp_id),
                    ..
                } if on_pending == OnPending::Keep => {
                    break CreateOtpOutcome::PendingExists { otp_id };
                }
                // Under the number's lock no other create can add one meanwhile, so the second
                // write finds none.
                Inserted::Pending { ids, .. } if !superseded => {
                    supersede(&tx, &ids, now).await?;
                    superseded = true;
                }
                Inserted::Pending { ids, .. } => {
                    return Err(StoreError::Corrupt(format!(
                        "OTPs {ids:?} still pending after superseding them"
                    )));
                }
            }
        };
        tx.rollback().await?;
        Ok(outcome)
    }

    pub(crate) async fn create_otp(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        match self
            .create(
                &otp,
                &msg,
                None,
                OnPending::Supersede,
                idem.as_ref(),
                daily_cap,
                queue_max,
            )
            .await?
        {
            CreateOtpOutcome::Done(outcome) => Ok(outcome),
            CreateOtpOutcome::PendingExists { otp_id } => Err(StoreError::Corrupt(format!(
                "superseding create found {otp_id} kept"
            ))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn create_otp_worded(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        wording: OtpWording,
        on_pending: OnPending,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOtpOutcome, StoreError> {
        self.create(
            &otp,
            &msg,
            Some(&wording),
            on_pending,
            idem.as_ref(),
            daily_cap,
            queue_max,
        )
        .await
    }

    /// BEGIN, the number's lock, the key, the OTP's row with its text count, the write,
    /// COMMIT.
    pub(crate) async fn add_otp_text(&self, t: NewOtpText) -> Result<AddTextOutcome, StoreError> {
        let now = t.msg.created_at;
        let idem = t.idem.as_ref();
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        common::lock_number(&tx, t.msg.to.as_str()).await?;
        let claim = match claim_key(&tx, idem, now).await? {
            Ok(claim) => claim,
            Err(seen) => {
                tx.rollback().await?;
                return Ok(match seen {
                    CreateOutcome::Replay(r) => AddTextOutcome::Replay(r),
                    _ => AddTextOutcome::IdempotencyConflict,
                });
            }
        };
        let Some((row, texts)) = otp_row_and_texts(&tx, &t.otp_id).await? else {
            tx.rollback().await?;
            return Ok(AddTextOutcome::NotFound);
        };
        let status = settle_expiry(&tx, &t.otp_id, &row, now).await?;
        if status != OtpStatus::Pending {
            self.refuse(tx, idem, claim, status != row.status).await?;
            return Ok(AddTextOutcome::NotPending(status));
        }
        if t.max_texts > 0 && texts >= t.max_texts {
            tx.rollback().await?;
            return Ok(AddTextOutcome::TextCap { texts });
        }
        let write = Insert {
            msg: &t.msg,
            otp_id: Some(&t.otp_id),
            otp: None,
            code_hmac: Some(&t.code_hmac),
            wording: None,
            origin: None,
            daily_cap: t.daily_cap,
            queue_max: t.queue_max,
            pending: None,
        };
        let outcome = match insert(&tx, &write).await? {
            Inserted::Created => {
                self.commit_events(tx).await?;
                return Ok(AddTextOutcome::Added);
            }
            Inserted::DailyLimit { retry_after_ms } => {
                AddTextOutcome::DailyLimit { retry_after_ms }
            }
            Inserted::QueueFull => AddTextOutcome::QueueFull,
            Inserted::Pending { .. } => {
                return Err(StoreError::Corrupt(
                    "an added text checked pending OTPs".into(),
                ));
            }
        };
        tx.rollback().await?;
        Ok(outcome)
    }

    pub(crate) async fn otp_wording(&self, otp_id: &str) -> Result<Option<OtpWording>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT code_length, code_offsets FROM otp_wordings WHERE otp_id = $1")
            .await?;
        let Some(r) = client.query_opt(&stmt, &[&otp_id]).await? else {
            return Ok(None);
        };
        let offsets: String = r.try_get(1)?;
        let code_offsets = offsets
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| {
                o.parse()
                    .map_err(|_| StoreError::Corrupt(format!("code offset {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(OtpWording {
            code_length: count(r.try_get(0)?),
            code_offsets,
        }))
    }

    /// BEGIN, the number's lock, the OTP's row, the write, COMMIT.
    pub(crate) async fn resend_otp(
        &self,
        otp_id: &str,
        code_hmac: Vec<u8>,
        msg: NewMessage,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<ResendOutcome, StoreError> {
        let now = msg.created_at;
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        common::lock_number(&tx, msg.to.as_str()).await?;
        let Some(row) = otp_row(&tx, otp_id, true).await? else {
            tx.rollback().await?;
            return Ok(ResendOutcome::NotFound);
        };
        let status = settle_expiry(&tx, otp_id, &row, now).await?;
        if status != OtpStatus::Pending {
            self.refuse(tx, None, Claim::Unkeyed, status != row.status)
                .await?;
            return Ok(ResendOutcome::NotPending(status));
        }
        let write = Insert {
            msg: &msg,
            otp_id: Some(otp_id),
            otp: None,
            code_hmac: Some(&code_hmac),
            wording: None,
            origin: None,
            daily_cap,
            queue_max,
            pending: None,
        };
        let outcome = match insert(&tx, &write).await? {
            Inserted::Created => {
                self.commit_events(tx).await?;
                return Ok(ResendOutcome::Created);
            }
            Inserted::DailyLimit { retry_after_ms } => ResendOutcome::DailyLimit { retry_after_ms },
            Inserted::QueueFull => ResendOutcome::QueueFull,
            Inserted::Pending { .. } => {
                return Err(StoreError::Corrupt("a resend checked pending OTPs".into()));
            }
        };
        tx.rollback().await?;
        Ok(outcome)
    }

    pub(crate) async fn record_verify(
        &self,
        otp_id: &str,
        matched: bool,
        now: Millis,
    ) -> Result<Option<VerifyResult>, StoreError> {
        let remaining = |row: &OtpRow, used: u32| row.max_attempts.saturating_sub(used);
        let mut client = self.client().await?;
        // A status other than pending is final: an attempt on it changes nothing, so it is
        // answered without the row lock. A flood of guesses at a locked-out OTP then costs one
        // read each instead of queueing on its row.
        let Some(row) = otp_row(&client, otp_id, false).await? else {
            return Ok(None);
        };
        if row.status != OtpStatus::Pending {
            return Ok(Some(VerifyResult {
                status: row.status,
                verified: false,
                attempts_remaining: remaining(&row, row.attempts),
            }));
        }
        let tx = self.begin_client(&mut client).await?;
        // Concurrent attempts on every node queue here, so each sees the previous one's count
        // and status: wrong codes are counted up to `max_attempts`, a right one approves once.
        let Some(row) = otp_row(&tx, otp_id, true).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let status = settle_expiry(&tx, otp_id, &row, now).await?;
        if status != OtpStatus::Pending {
            self.refuse(tx, None, Claim::Unkeyed, status != row.status)
                .await?;
            return Ok(Some(VerifyResult {
                status,
                verified: false,
                attempts_remaining: remaining(&row, row.attempts),
            }));
        }
        if matched {
            let verified = set_otp_status(&tx, otp_id, OtpStatus::Approved, now).await?;
            // A resent text still waiting would only deliver a code nobody needs any more.
            cancel_queued_texts(&tx, otp_id, now, "OTP approved").await?;
            self.commit_events(tx).await?;
            return Ok(Some(VerifyResult {
                status: OtpStatus::Approved,
                verified,
                attempts_remaining: remaining(&row, row.attempts),
            }));
        }
        let used = row.attempts + 1;
        let stmt = tx
            .prepare_cached("UPDATE otps SET attempts = $2, updated_at = $3 WHERE id = $1")
            .await?;
        tx.execute(&stmt, &[&otp_id, &i64::from(used), &now])
            .await?;
        let status = if used >= row.max_attempts {
            set_otp_status(&tx, otp_id, OtpStatus::MaxAttemptsReached, now).await?;
            cancel_queued_texts(&tx, otp_id, now, "OTP attempts exhausted").await?;
            OtpStatus::MaxAttemptsReached
        } else {
            OtpStatus::Pending
        };
        self.commit_events(tx).await?;
        Ok(Some(VerifyResult {
            status,
            verified: false,
            attempts_remaining: remaining(&row, used),
        }))
    }

    pub(crate) async fn cancel_otp(
        &self,
        otp_id: &str,
        now: Millis,
    ) -> Result<Option<OtpStatus>, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        let Some(row) = otp_row(&tx, otp_id, true).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let status = settle_expiry(&tx, otp_id, &row, now).await?;
        if status != OtpStatus::Pending {
            self.refuse(tx, None, Claim::Unkeyed, status != row.status)
                .await?;
            return Ok(Some(status));
        }
        set_otp_status(&tx, otp_id, OtpStatus::Canceled, now).await?;
        cancel_queued_texts(&tx, otp_id, now, "OTP canceled").await?;
        self.commit_events(tx).await?;
        Ok(Some(OtpStatus::Canceled))
    }

    pub(crate) async fn get_otp(&self, otp_id: &str) -> Result<Option<Otp>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {OTP_COLUMNS} FROM otps WHERE id = $1"))
            .await?;
        let row = client.query_opt(&stmt, &[&otp_id]).await?;
        otp_from(&client, row).await
    }

    pub(crate) async fn newest_pending_otp(
        &self,
        to: &str,
        now: Millis,
    ) -> Result<Option<Otp>, StoreError> {
        let client = self.client().await?;
        // No tie-break on insertion order as SQLite's `rowid`: a create supersedes every
        // pending OTP of its number under the number's lock, so at most one is pending.
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {OTP_COLUMNS} FROM otps
                 WHERE to_number = $1 AND status = 'pending' AND expires_at > $2
                 ORDER BY created_at DESC LIMIT 1"
            ))
            .await?;
        let row = client.query_opt(&stmt, &[&to, &now]).await?;
        otp_from(&client, row).await
    }

    pub(crate) async fn expire_due_otps(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        // SKIP LOCKED: another node's sweep, or a verify settling the expiry itself, has those.
        let stmt = tx
            .prepare_cached(
                "SELECT id FROM otps WHERE status = 'pending' AND expires_at <= $1
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        let ids: Vec<String> = tx
            .query(&stmt, &[&now, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut expired = 0;
        for id in &ids {
            if set_otp_status(&tx, id, OtpStatus::Expired, now).await? {
                expired += 1;
            }
        }
        if expired == 0 {
            tx.rollback().await?;
        } else {
            self.commit_events(tx).await?;
        }
        Ok(expired)
    }

    pub(crate) async fn next_otp_expiry(&self) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT min(expires_at) FROM otps WHERE status = 'pending'")
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
    }
}
