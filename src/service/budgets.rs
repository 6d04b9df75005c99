//! What a send may spend: the operator's prefix lists, the rate limits counted in SMS parts,
//! and the 429/503 answers they produce.
//!
//! **Invariant:** every part of a text is one cell of each budget it is charged to; a text that
//! could never fit a budget is a 422 naming the field to change, not a 429 to wait out.

use std::num::NonZeroU32;

use crate::limits::{LimitName, PrefixPolicy, Refusal};
use crate::model::{Millis, Msisdn};
use crate::otp;

use super::{Service, ServiceError, invalid, parts_u32};

/// Says why `limits::PrefixPolicy` refuses a number, naming the config key.
fn check_prefixes(policy: &PrefixPolicy, to: &Msisdn) -> Result<(), ServiceError> {
    if policy.permits(to.as_str()) {
        return Ok(());
    }
    let detail = match policy
        .deny
        .iter()
        .find(|p| to.as_str().starts_with(p.as_str()))
    {
        Some(p) => {
            format!("numbers starting with {p} are refused by this gateway (limits.deny_prefixes)")
        }
        None => format!(
            "this gateway only serves numbers starting with {} (limits.allow_prefixes)",
            policy.allow.join(", ")
        ),
    };
    Err(ServiceError::NotAllowed { detail })
}

fn parts_nonzero(n: usize) -> NonZeroU32 {
    NonZeroU32::new(parts_u32(n)).unwrap_or(NonZeroU32::MIN)
}

pub(super) fn retry_secs(ms: Millis) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000).max(1)
}

impl Service {
    /// The recipient of a send: a valid E.164 number that the prefix lists let through.
    pub(super) fn recipient(&self, to: &str) -> Result<Msisdn, ServiceError> {
        let to = Msisdn::parse(to).map_err(|d| invalid("to", d))?;
        check_prefixes(&self.settings.prefixes, &to)?;
        Ok(to)
    }

    pub(super) fn rejected(
        &self,
        name: LimitName,
        limit: String,
        retry_after: u64,
    ) -> ServiceError {
        ServiceError::RateLimited {
            name,
            limit,
            retry_after,
        }
    }

    /// Applies `limits.requests_per_token` to one authenticated request.
    pub fn check_token_rate(&self, token: &str) -> Result<(), ServiceError> {
        self.limits.check_request(token).map_err(|ra| {
            self.rejected(
                LimitName::RequestsPerToken,
                "requests_per_token".into(),
                ra.seconds(),
            )
        })
    }

    /// Charges one OTP text of `parts` SMS parts to the per-number, per-range and global
    /// budgets: every part is one SMS the SIM pays for, so a 3-part text costs 3 cells.
    /// `blame` names the request field to point at when the text can never fit a budget.
    pub(super) async fn check_send_limits(
        &self,
        to: &Msisdn,
        parts: usize,
        blame: &'static str,
    ) -> Result<(), ServiceError> {
        self.check_shared_send(to, parts, blame).await?;
        let n = parts_nonzero(parts);
        self.limits
            .check_otp_send_parts(to.as_str(), n)
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::OtpPerNumber,
                    format!("otp_per_number: too many codes for {to}"),
                    parts,
                    blame,
                )
            })?;
        self.limits
            .check_otp_prefix_parts(to.as_str(), n)
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::OtpPerPrefix,
                    format!(
                        "otp_per_prefix: too many codes for numbers starting {} (a defence against SMS pumping)",
                        self.limits.number_range(to.as_str())
                    ),
                    parts,
                    blame,
                )
            })?;
        self.check_global(parts, blame)
    }

    /// The per-number and per-range budgets of a cluster, counted in the shared database so
    /// that requests spread over several nodes meet one budget (`Settings::shared_rates`).
    async fn check_shared_send(
        &self,
        to: &Msisdn,
        parts: usize,
        blame: &'static str,
    ) -> Result<(), ServiceError> {
        let Some(rates) = &self.settings.shared_rates else {
            return Ok(());
        };
        let number = to.as_str();
        let range = number
            .get(..(1 + rates.prefix_digits).min(number.len()))
            .unwrap_or(number);
        let cells = parts_u32(parts).max(1);
        if let Err(r) = self
            .take_shared(
                &format!("otp_per_number:{number}"),
                rates.otp_per_number,
                cells,
            )
            .await?
        {
            return Err(self.refused(
                r,
                LimitName::OtpPerNumber,
                format!("otp_per_number: too many codes for {to}"),
                parts,
                blame,
            ));
        }
        if let Err(r) = self
            .take_shared(
                &format!("otp_per_prefix:{range}"),
                rates.otp_per_prefix,
                cells,
            )
            .await?
        {
            return Err(self.refused(
                r,
                LimitName::OtpPerPrefix,
                format!(
                    "otp_per_prefix: too many codes for numbers starting {range} (a defence \
                     against SMS pumping)"
                ),
                parts,
                blame,
            ));
        }
        Ok(())
    }

    /// One verify attempt against the number's shared budget (`limits.verify_per_number` in a
    /// cluster).
    pub(super) async fn check_shared_verify(&self, number: &str) -> Result<(), ServiceError> {
        let Some(rates) = &self.settings.shared_rates else {
            return Ok(());
        };
        match self
            .take_shared(
                &format!("verify_per_number:{number}"),
                rates.verify_per_number,
                1,
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(Refusal::Wait(ra)) => Err(self.rejected(
                LimitName::VerifyPerNumber,
                format!("verify_per_number: too many attempts for {number}"),
                ra.seconds(),
            )),
            Err(Refusal::Never { .. }) => Err(ServiceError::Internal(
                "verify_per_number refused a single attempt as too large".into(),
            )),
        }
    }

    /// Spends `cells` of a shared budget; the GCRA runs in the database.
    async fn take_shared(
        &self,
        key: &str,
        rate: crate::limits::Rate,
        cells: u32,
    ) -> Result<Result<(), Refusal>, ServiceError> {
        let crate::limits::Rate::Limit { count, period } = rate else {
            return Ok(Ok(()));
        };
        if cells > count.get() {
            return Ok(Err(Refusal::Never {
                capacity: count.get(),
            }));
        }
        let Some(pg) = self.store.postgres() else {
            return Ok(Ok(()));
        };
        let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
        match pg
            .take_rate(key, count.get(), period_ms, cells, self.clock.now_ms())
            .await
            .map_err(super::errors::store_err)?
        {
            Ok(()) => Ok(Ok(())),
            Err(wait_ms) => Ok(Err(Refusal::Wait(crate::limits::RetryAfter::from_wait(
                std::time::Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
            )))),
        }
    }

    pub(super) fn check_global(
        &self,
        parts: usize,
        blame: &'static str,
    ) -> Result<(), ServiceError> {
        self.limits
            .check_global_send_parts(parts_nonzero(parts))
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::SendsGlobal,
                    "sends_global: the gateway's total send rate".into(),
                    parts,
                    blame,
                )
            })
    }

    /// A limiter's refusal of a text of `parts` parts: 429 when waiting helps, 422 naming the
    /// field when the text needs more parts than the limit allows in a whole period.
    fn refused(
        &self,
        r: Refusal,
        name: LimitName,
        limit: String,
        parts: usize,
        blame: &'static str,
    ) -> ServiceError {
        match r {
            Refusal::Wait(ra) => self.rejected(name, limit, ra.seconds()),
            Refusal::Never { capacity } => invalid(
                blame,
                format!(
                    "the text needs {} but limits.{} allows {} per period, so it could \
                     never be sent; shorten it or raise the limit",
                    otp::count_noun(parts as u64, "SMS part"),
                    name.as_str(),
                    otp::count_noun(u64::from(capacity), "part"),
                ),
            ),
        }
    }

    pub(super) fn daily_limited(&self, to: &Msisdn, retry_after_ms: Millis) -> ServiceError {
        self.rejected(
            LimitName::OtpPerNumberPerDay,
            format!(
                "otp_per_number_per_day: {} codes a day for {to}",
                self.settings.otp_per_number_per_day
            ),
            retry_secs(retry_after_ms),
        )
    }

    pub(super) fn queue_full(&self) -> ServiceError {
        ServiceError::QueueFull {
            retry_after: self.settings.queue_full_retry_after.as_secs().max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_policy_names_the_list() {
        let n = Msisdn::parse("+15551234567").unwrap();
        let p = PrefixPolicy {
            allow: vec!["+44".into()],
            deny: vec![],
        };
        let e = check_prefixes(&p, &n).unwrap_err();
        assert!(e.to_string().contains("allow_prefixes"), "{e}");
        let p = PrefixPolicy {
            allow: vec![],
            deny: vec!["+1555".into()],
        };
        assert!(
            check_prefixes(&p, &n)
                .unwrap_err()
                .to_string()
                .contains("deny_prefixes")
        );
        assert!(check_prefixes(&PrefixPolicy::default(), &n).is_ok());
    }
}
