//! Rate limits (governor, clock injected) and `Retry-After` computation.
//!
//! How "N per period" maps to governor's GCRA: a [`Rate`] of `3/10m` becomes a quota with a
//! burst of 3 cells that replenishes one cell every 10m / 3 = 200 s. A fresh key may therefore
//! spend all 3 at once, then one more every 200 s. Over a single window this is exactly "3 per
//! 10 minutes"; over longer spans it is slightly more permissive than a fixed window (a steady
//! client gets one every 200 s forever, and a client that waited 10 minutes after a burst gets a
//! fresh full burst), but it never allows more than N in any window that starts with a full
//! bucket, and it needs one timestamp per key instead of a list of past events.
//!
//! Limits that must survive a restart (`otp_per_number_per_day`) are counted in the store, not
//! here: these limiters live in memory and start empty after a restart.
//!
//! Keyed limiters grow with the number of distinct keys; [`Limits::housekeeping`] drops keys whose
//! state is indistinguishable from a fresh one, and should run every minute or so.
//!
//! Tokens are keyed by their SHA-256, so a memory dump or a debug print of the limiter state never
//! shows a token. Nothing in this module logs.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use sha2::{Digest, Sha256};

/// A rate: "N per period", or no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// No limit (`"off"`).
    Off,
    /// At most `count` events per `period`.
    Limit {
        /// How many events a period allows (also the burst size).
        count: NonZeroU32,
        /// The length of the period.
        period: Duration,
    },
}

/// Why a rate string was refused; the message names the bad part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateParseError {
    /// No `/` separating count and duration.
    #[error("{0:?} is not a rate: expected \"N/<duration>\" such as \"3/10m\", or \"off\"")]
    Shape(String),
    /// The part before `/` is not a positive integer.
    #[error("count {0:?} must be a whole number of at least 1")]
    Count(String),
    /// The duration part is not a positive number followed by s, m, h or d.
    #[error("duration {0:?} must be a whole number of at least 1 followed by s, m, h or d")]
    Duration(String),
    /// More events than nanoseconds per period: governor cannot represent it.
    #[error("rate {0:?} is too high")]
    TooHigh(String),
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(s: &str) -> Result<Rate, RateParseError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") {
            return Ok(Rate::Off);
        }
        let (n, d) = t
            .split_once('/')
            .ok_or_else(|| RateParseError::Shape(s.to_string()))?;
        let (n, d) = (n.trim(), d.trim());
        let count = n
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .filter(|_| n.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| RateParseError::Count(n.to_string()))?;
        let period = parse_duration(d).ok_or_else(|| RateParseError::Duration(d.to_string()))?;
        if period.as_nanos() < u128::from(count.get()) {
            return Err(RateParseError::TooHigh(s.to_string()));
        }
        Ok(Rate::Limit { count, period })
    }
}

/// `10m`, `1s`, `2h`, `1d`; the number is optional (`/m` means `/1m`) because "100/s" reads
/// naturally.
fn parse_duration(d: &str) -> Option<Duration> {
    let unit = d.chars().last()?;
    let secs_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return None,
    };
    let num = &d[..d.len() - 1];
    let n: u64 = if num.is_empty() {
        1
    } else if num.bytes().all(|b| b.is_ascii_digit()) {
        num.parse().ok()?
    } else {
        return None;
    };
    if n == 0 {
        return None;
    }
    Some(Duration::from_secs(n.checked_mul(secs_per)?))
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Off => f.write_str("off"),
            Rate::Limit { count, period } => {
                let s = period.as_secs();
                let (n, u) = if s % 86_400 == 0 {
                    (s / 86_400, 'd')
                } else if s % 3_600 == 0 {
                    (s / 3_600, 'h')
                } else if s % 60 == 0 {
                    (s / 60, 'm')
                } else {
                    (s, 's')
                };
                write!(f, "{count}/{n}{u}")
            }
        }
    }
}

impl Rate {
    /// The GCRA quota for this rate: burst `count`, one cell back every `period / count`.
    /// `None` for [`Rate::Off`].
    pub fn quota(&self) -> Option<Quota> {
        match *self {
            Rate::Off => None,
            Rate::Limit { count, period } => {
                let per_cell = period / count.get();
                Some(Quota::with_period(per_cell)?.allow_burst(count))
            }
        }
    }
}

/// A rejection: how long the caller should wait before the same request could pass, in whole
/// seconds (rounded up, at least 1) because that is what a `Retry-After` header can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Rounds an exact wait up to whole seconds, at least 1: a `Retry-After: 0` would invite an
    /// immediate retry that is refused again, and rounding down would do the same.
    pub fn from_wait(wait: Duration) -> RetryAfter {
        let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        RetryAfter(Duration::from_secs(s.max(1)))
    }

    /// The value for the `Retry-After` header.
    pub fn seconds(&self) -> u64 {
        self.0.as_secs().max(1)
    }
}

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry after {} s", self.seconds())
    }
}

/// Why a send of several parts was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The budget will have room again after this wait.
    Wait(RetryAfter),
    /// The text needs more parts than the limit allows in a whole period: no wait helps.
    Never {
        /// Most parts the limit allows at once (its count).
        capacity: u32,
    },
}

/// Which limiter refused, for metrics (`limit` label) and problem details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitName {
    /// `limits.otp_per_number`.
    OtpPerNumber,
    /// `limits.otp_per_number_per_day` (checked by the service against the store).
    OtpPerNumberPerDay,
    /// `limits.verify_per_number`.
    VerifyPerNumber,
    /// `limits.otp_per_prefix`.
    OtpPerPrefix,
    /// `limits.requests_per_token`.
    RequestsPerToken,
    /// `limits.sends_global`.
    SendsGlobal,
    /// `limits.queue_max`.
    QueueFull,
    /// `otp.max_resends`: texts per OTP (checked by the service against the store).
    MaxResends,
}

impl LimitName {
    /// The config key name, used as the metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitName::OtpPerNumber => "otp_per_number",
            LimitName::OtpPerNumberPerDay => "otp_per_number_per_day",
            LimitName::VerifyPerNumber => "verify_per_number",
            LimitName::OtpPerPrefix => "otp_per_prefix",
            LimitName::RequestsPerToken => "requests_per_token",
            LimitName::SendsGlobal => "sends_global",
            LimitName::QueueFull => "queue_max",
            LimitName::MaxResends => "max_resends",
        }
    }
}

/// The in-memory rates of `[limits]`. `RateSettings::default()` (implemented in `config`) is
/// the rates of the default config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSettings {
    /// OTP sends (create and resend) per destination number.
    pub otp_per_number: Rate,
    /// Verify attempts per number, against guessing across many OTPs.
    pub verify_per_number: Rate,
    /// OTP sends per number range (the first `prefix_digits` digits), against SMS pumping: a
    /// fraud that requests codes for many numbers of one premium range, each under the
    /// per-number limit, to earn a share of the termination fees the SIM pays.
    pub otp_per_prefix: Rate,
    /// Digits after `+` that make a number range for `otp_per_prefix` (country code included).
    pub prefix_digits: usize,
    /// API requests per bearer token, against one runaway client starving others.
    pub requests_per_token: Rate,
    /// All sends together, to protect the SIM and the operator's patience.
    pub sends_global: Rate,
}

type Keyed<K, C> = RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// All in-memory limiters. Generic over the clock so tests drive a `FakeRelativeClock`.
pub struct Limits<C: Clock + Clone = DefaultClock> {
    /// Per destination number (E.164 string).
    otp_per_number: Option<Keyed<String, C>>,
    /// Per destination number (E.164 string).
    verify_per_number: Option<Keyed<String, C>>,
    /// Per number range: the first `prefix_digits` digits of the E.164 number.
    otp_per_prefix: Option<Keyed<String, C>>,
    /// How many digits after `+` make a range.
    prefix_digits: usize,
    /// Per SHA-256 of the bearer token, so the token itself is never kept here.
    requests_per_token: Option<Keyed<[u8; 32], C>>,
    /// One bucket for every send.
    sends_global: Option<Direct<C>>,
    /// Used to turn governor's "not until" into a wait from now.
    clock: C,
}

impl<C: Clock + Clone> fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

impl Limits<DefaultClock> {
    /// Limiters on the real monotonic clock.
    pub fn new(settings: &RateSettings) -> Self {
        Limits::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    /// Limiters on `clock` (tests pass a `governor::clock::FakeRelativeClock`).
    pub fn with_clock(settings: &RateSettings, clock: C) -> Self {
        let keyed = |r: &Rate| {
            r.quota()
                .map(|q| RateLimiter::hashmap_with_clock(q, clock.clone()))
        };
        Limits {
            otp_per_number: keyed(&settings.otp_per_number),
            verify_per_number: keyed(&settings.verify_per_number),
            otp_per_prefix: keyed(&settings.otp_per_prefix),
            prefix_digits: settings.prefix_digits,
            requests_per_token: settings
                .requests_per_token
                .quota()
                .map(|q| RateLimiter::hashmap_with_clock(q, clock.clone())),
            sends_global: settings
                .sends_global
                .quota()
                .map(|q| RateLimiter::direct_with_clock(q, clock.clone())),
            clock,
        }
    }

    fn keyed_check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K, C>>,
        key: &K,
    ) -> Result<(), RetryAfter> {
        let Some(l) = limiter else { return Ok(()) };
        l.check_key(key)
            .map_err(|nu| RetryAfter::from_wait(nu.wait_time_from(self.clock.now())))
    }

    fn keyed_check_n<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Option<Keyed<K, C>>,
        key: &K,
        parts: NonZeroU32,
    ) -> Result<(), Refusal> {
        let Some(l) = limiter else { return Ok(()) };
        match l.check_key_n(key, parts) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(nu)) => Err(Refusal::Wait(RetryAfter::from_wait(
                nu.wait_time_from(self.clock.now()),
            ))),
            Err(governor::InsufficientCapacity(capacity)) => Err(Refusal::Never { capacity }),
        }
    }

    /// One OTP send (create or resend) to `number`. Consumes a cell when it passes.
    pub fn check_otp_send(&self, number: &str) -> Result<(), RetryAfter> {
        self.keyed_check(&self.otp_per_number, &number.to_string())
    }

    /// One OTP send of `parts` SMS parts to `number`: each part costs one cell, so a 3-part text
    /// spends what three 1-part texts would. Consumes nothing when refused.
    pub fn check_otp_send_parts(&self, number: &str, parts: NonZeroU32) -> Result<(), Refusal> {
        self.keyed_check_n(&self.otp_per_number, &number.to_string(), parts)
    }

    /// One OTP send to the number range of `number` (see [`RateSettings::otp_per_prefix`]).
    pub fn check_otp_prefix(&self, number: &str) -> Result<(), RetryAfter> {
        self.keyed_check(&self.otp_per_prefix, &self.number_range(number).to_owned())
    }

    /// [`Limits::check_otp_prefix`] for a text of `parts` SMS parts, one cell per part.
    pub fn check_otp_prefix_parts(&self, number: &str, parts: NonZeroU32) -> Result<(), Refusal> {
        self.keyed_check_n(
            &self.otp_per_prefix,
            &self.number_range(number).to_owned(),
            parts,
        )
    }

    /// The range `number` belongs to: `+` and its first `prefix_digits` digits.
    pub fn number_range<'a>(&self, number: &'a str) -> &'a str {
        let end = (1 + self.prefix_digits).min(number.len());
        number.get(..end).unwrap_or(number)
    }

    /// One verify attempt for `number`.
    pub fn check_verify(&self, number: &str) -> Result<(), RetryAfter> {
        self.keyed_check(&self.verify_per_number, &number.to_string())
    }

    /// One API request authenticated by `token`.
    pub fn check_request(&self, token: &str) -> Result<(), RetryAfter> {
        self.keyed_check(&self.requests_per_token, &token_key(token))
    }

    /// One send through any modem.
    pub fn check_global_send(&self) -> Result<(), RetryAfter> {
        let Some(l) = &self.sends_global else {
            return Ok(());
        };
        l.check()
            .map_err(|nu| RetryAfter::from_wait(nu.wait_time_from(self.clock.now())))
    }

    /// [`Limits::check_global_send`] for a text of `parts` SMS parts, one cell per part.
    pub fn check_global_send_parts(&self, parts: NonZeroU32) -> Result<(), Refusal> {
        let Some(l) = &self.sends_global else {
            return Ok(());
        };
        match l.check_n(parts) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(nu)) => Err(Refusal::Wait(RetryAfter::from_wait(
                nu.wait_time_from(self.clock.now()),
            ))),
            Err(governor::InsufficientCapacity(capacity)) => Err(Refusal::Never { capacity }),
        }
    }

    /// Forgets keys whose buckets are full again, so memory tracks active keys only.
    pub fn housekeeping(&self) {
        if let Some(l) = &self.otp_per_number {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.verify_per_number {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.otp_per_prefix {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.requests_per_token {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Number of keys currently tracked over all keyed limiters (for tests and metrics).
    pub fn tracked_keys(&self) -> usize {
        self.otp_per_number.as_ref().map_or(0, |l| l.len())
            + self.verify_per_number.as_ref().map_or(0, |l| l.len())
            + self.otp_per_prefix.as_ref().map_or(0, |l| l.len())
            + self.requests_per_token.as_ref().map_or(0, |l| l.len())
    }
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Destination policy from `limits.allow_prefixes` / `limits.deny_prefixes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixPolicy {
    /// E.164 prefixes (`+44`, `+1555`) that may receive; empty allows every number.
    pub allow: Vec<String>,
    /// E.164 prefixes that may never receive; wins over `allow`.
    pub deny: Vec<String>,
}

impl PrefixPolicy {
    /// Whether `number` (E.164 with `+`) may receive texts.
    pub fn permits(&self, number: &str) -> bool {
        if self.deny.iter().any(|p| number.starts_with(p.as_str())) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| number.starts_with(p.as_str()))
    }

    /// Checks a prefix written in the config: `+` then 1 to 15 digits.
    pub fn validate_prefix(p: &str) -> bool {
        match p.strip_prefix('+') {
            Some(d) => (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn parse_rates() {
        let lim = |n, secs| Rate::Limit {
            count: NonZeroU32::new(n).unwrap(),
            period: Duration::from_secs(secs),
        };
        for (s, want) in [
            ("3/10m", lim(3, 600)),
            ("100/1s", lim(100, 1)),
            ("10/1h", lim(10, 3600)),
            ("5/1d", lim(5, 86_400)),
            ("7/s", lim(7, 1)),
            (" 2 / 30s ", lim(2, 30)),
        ] {
            assert_eq!(rate(s), want, "{s}");
        }
        assert_eq!(rate("off"), Rate::Off);
        assert_eq!(rate("OFF"), Rate::Off);
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<Rate>().unwrap_err();
        assert_eq!(err("3"), RateParseError::Shape("3".into()));
        assert_eq!(err(""), RateParseError::Shape("".into()));
        assert_eq!(err("0/1m"), RateParseError::Count("0".into()));
        assert_eq!(err("x/1m"), RateParseError::Count("x".into()));
        assert_eq!(err("+3/1m"), RateParseError::Count("+3".into()));
        assert_eq!(err("3/10"), RateParseError::Duration("10".into()));
        assert_eq!(err("3/10w"), RateParseError::Duration("10w".into()));
        assert_eq!(err("3/0m"), RateParseError::Duration("0m".into()));
        assert_eq!(err("3/-1m"), RateParseError::Duration("-1m".into()));
        assert_eq!(err("3/1.5m"), RateParseError::Duration("1.5m".into()));
        assert_eq!(
            err("4000000000/1s"),
            RateParseError::TooHigh("4000000000/1s".into())
        );
        assert!(err("3/10w").to_string().contains("\"10w\""));
    }

    #[test]
    fn display_round_trips() {
        for s in ["3/10m", "100/1s", "10/1h", "5/1d", "off", "1/90s"] {
            assert_eq!(rate(s).to_string(), s);
            assert_eq!(rate(&rate(s).to_string()), rate(s));
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let r = |ms| RetryAfter::from_wait(Duration::from_millis(ms));
        assert_eq!(r(0), RetryAfter(Duration::from_secs(1)));
        assert_eq!(r(1).seconds(), 1);
        assert_eq!(r(2000).seconds(), 2);
        assert_eq!(r(2001).seconds(), 3);
        assert_eq!(r(2001).0, Duration::from_secs(3));
    }

    fn limits(
        otp: &str,
        verify: &str,
        tok: &str,
        global: &str,
    ) -> (Limits<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let s = RateSettings {
            otp_per_number: rate(otp),
            verify_per_number: rate(verify),
            requests_per_token: rate(tok),
            sends_global: rate(global),
            otp_per_prefix: Rate::Off,
            prefix_digits: 6,
        };
        (Limits::with_clock(&s, clock.clone()), clock)
    }

    #[test]
    fn otp_per_prefix_counts_a_number_range_together() {
        let clock = FakeRelativeClock::default();
        let s = RateSettings {
            otp_per_prefix: rate("2/10m"),
            prefix_digits: 6,
            ..RateSettings::default()
        };
        let l = Limits::with_clock(&s, clock.clone());
        assert_eq!(l.number_range("+15551234567"), "+155512");
        assert_eq!(l.number_range("+44"), "+44");
        // Two numbers of one range pass, a third of the same range is refused…
        assert_eq!(l.check_otp_prefix("+15551230001"), Ok(()));
        assert_eq!(l.check_otp_prefix("+15551239999"), Ok(()));
        let refused = l.check_otp_prefix("+15551235555").unwrap_err();
        assert_eq!(refused.seconds(), 300);
        // …while another range is untouched, and the range refills with time.
        assert_eq!(l.check_otp_prefix("+15559990001"), Ok(()));
        clock.advance(Duration::from_secs(300));
        assert_eq!(l.check_otp_prefix("+15551235555"), Ok(()));
    }

    #[test]
    fn otp_per_number_burst_then_one_per_interval() {
        let (l, clock) = limits("3/10m", "off", "off", "off");
        let n = "+15551234567";
        for _ in 0..3 {
            assert_eq!(l.check_otp_send(n), Ok(()));
        }
        // The 4th must wait for one cell: 600 s / 3 = 200 s.
        assert_eq!(l.check_otp_send(n).unwrap_err().seconds(), 200);
        // Another number is independent.
        assert_eq!(l.check_otp_send("+15550000000"), Ok(()));
        clock.advance(Duration::from_secs(150));
        assert_eq!(l.check_otp_send(n).unwrap_err().seconds(), 50);
        clock.advance(Duration::from_millis(49_500));
        assert_eq!(l.check_otp_send(n).unwrap_err().seconds(), 1);
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check_otp_send(n), Ok(()));
        assert!(l.check_otp_send(n).is_err());
    }

    #[test]
    fn multi_part_sends_cost_one_cell_per_part() {
        let (l, clock) = limits("3/10m", "off", "off", "5/1m");
        let n = "+15551234567";
        let three = NonZeroU32::new(3).unwrap();
        assert_eq!(l.check_otp_send_parts(n, three), Ok(()));
        // The 3-part text spent the whole burst: even a 1-part text waits 200 s.
        assert_eq!(
            l.check_otp_send_parts(n, NonZeroU32::MIN),
            Err(Refusal::Wait(RetryAfter(Duration::from_secs(200))))
        );
        // More parts than the burst can never pass, and says so instead of a wait.
        assert_eq!(
            l.check_otp_send_parts("+15550000000", NonZeroU32::new(4).unwrap()),
            Err(Refusal::Never { capacity: 3 })
        );
        clock.advance(Duration::from_secs(600));
        assert_eq!(l.check_otp_send_parts(n, three), Ok(()));
        // The global budget counts parts too: 3 + 3 > 5.
        assert_eq!(l.check_global_send_parts(three), Ok(()));
        assert!(matches!(
            l.check_global_send_parts(three),
            Err(Refusal::Wait(_))
        ));
        assert_eq!(
            l.check_global_send_parts(NonZeroU32::new(6).unwrap()),
            Err(Refusal::Never { capacity: 5 })
        );
    }

    #[test]
    fn verify_per_number() {
        let (l, clock) = limits("off", "10/1m", "off", "off");
        for _ in 0..10 {
            l.check_verify("+1").unwrap();
        }
        assert_eq!(l.check_verify("+1").unwrap_err().seconds(), 6);
        clock.advance(Duration::from_secs(60));
        for _ in 0..10 {
            l.check_verify("+1").unwrap();
        }
        assert!(l.check_verify("+1").is_err());
    }

    #[test]
    fn off_never_limits() {
        let (l, _) = limits("off", "off", "off", "off");
        for _ in 0..1000 {
            l.check_otp_send("+1").unwrap();
            l.check_verify("+1").unwrap();
            l.check_request("t").unwrap();
            l.check_global_send().unwrap();
        }
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn per_token_and_global() {
        let (l, clock) = limits("off", "off", "2/1s", "1/10s");
        l.check_request("alpha").unwrap();
        l.check_request("alpha").unwrap();
        assert_eq!(l.check_request("alpha").unwrap_err().seconds(), 1);
        l.check_request("beta").unwrap();
        l.check_global_send().unwrap();
        assert_eq!(l.check_global_send().unwrap_err().seconds(), 10);
        clock.advance(Duration::from_secs(10));
        l.check_global_send().unwrap();
        l.check_request("alpha").unwrap();
    }

    #[test]
    fn housekeeping_forgets_idle_keys() {
        let (l, clock) = limits("3/10m", "10/1m", "5/1s", "off");
        for i in 0..50 {
            let n = format!("+1555{i:07}");
            l.check_otp_send(&n).unwrap();
            l.check_verify(&n).unwrap();
        }
        l.check_request("tok").unwrap();
        assert_eq!(l.tracked_keys(), 101);
        l.housekeeping();
        assert_eq!(l.tracked_keys(), 101, "recent keys are kept");
        clock.advance(Duration::from_secs(601));
        l.housekeeping();
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn default_settings_match_spec() {
        let d = RateSettings::default();
        assert_eq!(d.otp_per_number, rate("3/10m"));
        assert_eq!(d.verify_per_number, rate("10/1m"));
        assert_eq!(d.requests_per_token, Rate::Off);
        assert_eq!(d.sends_global, Rate::Off);
    }

    #[test]
    fn prefix_policy() {
        let p = |allow: &[&str], deny: &[&str]| PrefixPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        let all = p(&[], &[]);
        assert!(all.permits("+447700900123"));
        let uk = p(&["+44"], &["+44909"]);
        assert!(uk.permits("+447700900123"));
        assert!(!uk.permits("+15551234567"));
        assert!(!uk.permits("+449091234567"), "deny wins");
        let deny_only = p(&[], &["+1555"]);
        assert!(!deny_only.permits("+15551234567"));
        assert!(deny_only.permits("+15561234567"));
        for (s, ok) in [
            ("+44", true),
            ("+1555", true),
            ("44", false),
            ("+", false),
            ("+4a", false),
        ] {
            assert_eq!(PrefixPolicy::validate_prefix(s), ok, "{s}");
        }
    }

    #[test]
    fn limit_names_are_config_keys() {
        assert_eq!(LimitName::OtpPerNumber.as_str(), "otp_per_number");
        assert_eq!(LimitName::SendsGlobal.as_str(), "sends_global");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn display_round_trips(n in 1u32..100_000, secs in 1u64..10_000_000) {
            let r = Rate::Limit {
                count: NonZeroU32::new(n).unwrap(),
                period: Duration::from_secs(secs),
            };
            prop_assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
            prop_assert!(r.quota().is_some());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<Rate>();
        }

        #[test]
        fn retry_after_is_whole_and_positive(nanos in 0u64..10_000_000_000_000) {
            let d = Duration::from_nanos(nanos);
            let r = RetryAfter::from_wait(d);
            prop_assert_eq!(r.0.subsec_nanos(), 0);
            let s = r.seconds();
            prop_assert!(s >= 1);
            prop_assert!(Duration::from_secs(s) >= d);
            prop_assert!(Duration::from_secs(s) < d + Duration::from_secs(1) || s == 1);
        }
    }
}
