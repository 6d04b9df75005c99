//! What each part of the daemon is handed, derived from a validated [`Config`].
//!
//! `service`, `dispatch`, `modem` and `limits` do not know the config: `daemon` asks this
//! module for their settings. Their defaults (`Default`, `ModemConfig::new`) are implemented here
//! too, as the settings of the default config, so a test that takes a default gets the values
//! an empty config file gives and no default is written twice. Values that are not config keys
//! are constants of the part that uses them.

use std::path::PathBuf;

use super::{Config, ModemSettings, StoreBackend, UnknownOutcome};
use crate::dispatch::{self, DispatchConfig, PoolModem};
use crate::limits::{Rate, RateSettings};
use crate::modem::{self, ModemConfig};
use crate::service;
use crate::store::UnknownOutcomePolicy;

impl Config {
    /// The use cases' policy knobs.
    pub fn service_settings(&self) -> service::Settings {
        service::Settings {
            code_length: self.otp.length,
            ttl: self.otp.ttl,
            min_ttl: self.otp.min_ttl,
            max_ttl: self.otp.max_ttl,
            max_attempts: self.otp.max_attempts,
            template: self.otp.template.clone(),
            app_hash: self.otp.app_hash.clone(),
            max_otp_parts: self.otp.max_parts,
            max_resends: self.otp.max_resends,
            on_pending: self.otp.on_pending,
            otp_per_number_per_day: self.limits.otp_per_number_per_day,
            queue_max: self.limits.queue_max,
            prefixes: self.limits.prefixes.clone(),
            max_text_parts: service::MAX_TEXT_PARTS,
            text_max_age: self.dispatch.text_max_age,
            queue_full_retry_after: service::QUEUE_FULL_RETRY_AFTER,
            shared_rates: match self.store.backend {
                StoreBackend::Sqlite => None,
                StoreBackend::Postgres(_) => Some(service::SharedRates {
                    otp_per_number: self.limits.rates.otp_per_number,
                    otp_per_prefix: self.limits.rates.otp_per_prefix,
                    verify_per_number: self.limits.rates.verify_per_number,
                    prefix_digits: self.limits.rates.prefix_digits,
                }),
            },
        }
    }

    /// The rates the in-memory limiters enforce: all of `[limits]`, except with a cluster's
    /// store, where the per-number and per-range ones are counted in the database instead
    /// (`service_settings().shared_rates`). `requests_per_token` and `sends_global` stay per
    /// node: one guards this node from a runaway client, the other this node's SIMs.
    pub fn limiter_rates(&self) -> RateSettings {
        let mut rates = self.limits.rates.clone();
        if let StoreBackend::Postgres(_) = self.store.backend {
            rates.otp_per_number = Rate::Off;
            rates.otp_per_prefix = Rate::Off;
            rates.verify_per_number = Rate::Off;
        }
        rates
    }

    /// The dispatcher's pool-wide policy: the configured caps with the fixed retry timing.
    pub fn dispatch_config(&self) -> DispatchConfig {
        DispatchConfig {
            on_unknown_outcome: self.dispatch.on_unknown_outcome.into(),
            retry_base: dispatch::RETRY_BASE,
            retry_max: dispatch::RETRY_MAX,
            store_error_pause: dispatch::STORE_ERROR_PAUSE,
            max_attempts: self.dispatch.max_attempts,
            // Validation already refuses 0; the dispatcher relies on at least one.
            max_unknown_outcomes: self.dispatch.max_unknown_outcomes.max(1),
            max_partial_resends: self.dispatch.max_partial_resends,
        }
    }
}

impl ModemSettings {
    /// The driver's configuration of this modem. `pin` comes from [`ModemSettings::pin`] (read
    /// at start, not stored in the settings); `store_inbound` is `[inbound] enabled`.
    pub fn modem_config(&self, pin: Option<String>, store_inbound: bool) -> ModemConfig {
        ModemConfig {
            id: self.id.clone(),
            device: self.device.clone(),
            identity: self.identity.clone(),
            scan: self.scan.clone(),
            baud: self.baud,
            pin,
            delivery_reports: self.delivery_reports,
            send_timeout: self.send_timeout,
            command_timeout: modem::COMMAND_TIMEOUT,
            command_gap: self.command_gap,
            store_inbound,
        }
    }

    /// This modem's entry in the dispatcher's pool, with its per-modem policy.
    pub fn pool_modem<M>(&self, port: M) -> PoolModem<M> {
        PoolModem {
            port,
            sends_per_minute: self.sends_per_minute,
            delivery_reports: self.delivery_reports,
        }
    }
}

impl From<UnknownOutcome> for UnknownOutcomePolicy {
    fn from(u: UnknownOutcome) -> Self {
        match u {
            UnknownOutcome::Resend => UnknownOutcomePolicy::Resend,
            UnknownOutcome::Fail => UnknownOutcomePolicy::Fail,
        }
    }
}

impl ModemConfig {
    /// A modem on `device` with the config's defaults (115200 baud, reports on, 60 s sends),
    /// no PIN and no inbound storage: what tests and tools that drive one modem start from.
    pub fn new(id: impl Into<String>, device: impl Into<PathBuf>) -> Self {
        ModemSettings::new(id, device).modem_config(None, false)
    }
}

impl Default for service::Settings {
    fn default() -> Self {
        Config::default().service_settings()
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Config::default().dispatch_config()
    }
}

impl Default for RateSettings {
    fn default() -> Self {
        Config::default().limits.rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn config_settings_map_to_dispatch_policy() {
        let mut config = Config {
            dispatch: super::super::DispatchSettings {
                on_unknown_outcome: UnknownOutcome::Fail,
                text_max_age: Duration::from_secs(60),
                max_attempts: 7,
                max_unknown_outcomes: 2,
                max_partial_resends: 0,
            },
            ..Config::default()
        };
        let cfg = config.dispatch_config();
        assert_eq!(cfg.on_unknown_outcome, UnknownOutcomePolicy::Fail);
        assert_eq!(
            (
                cfg.max_attempts,
                cfg.max_unknown_outcomes,
                cfg.max_partial_resends
            ),
            (7, 2, 0)
        );
        config.dispatch.on_unknown_outcome = UnknownOutcome::Resend;
        let cfg = config.dispatch_config();
        assert_eq!(cfg.on_unknown_outcome, UnknownOutcomePolicy::Resend);
    }

    #[test]
    fn defaults_of_the_parts_are_the_config_defaults() {
        let c = Config::default();
        let s = service::Settings::default();
        assert_eq!(
            (s.ttl, s.max_attempts, s.otp_per_number_per_day, s.queue_max),
            (Duration::from_secs(300), 5, 10, 100_000)
        );
        assert_eq!(s.text_max_age, c.dispatch.text_max_age);
        let m = ModemConfig::new("m", "/dev/m");
        assert_eq!(
            (m.baud, m.send_timeout, m.delivery_reports, m.command_gap),
            (
                115_200,
                Duration::from_secs(60),
                true,
                Duration::from_millis(1)
            )
        );
        assert_eq!(
            ModemConfig {
                id: "m".into(),
                device: "/dev/m".into(),
                ..c.modems[0].modem_config(None, false)
            },
            m
        );
    }
}
