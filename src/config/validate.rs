//! Stage 2: [`RawConfig::validate`] and the checks of single values it uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{PrefixPolicy, Rate, RateSettings};
use crate::modem::discovery::{self, DeviceIdentity};
use crate::otp::{self, AppHash};

use super::*;

/// `[store] backend` and the keys only PostgreSQL uses. Keys of the other back end are
/// refused rather than ignored: a `url` next to `backend = "sqlite"` is a cluster that would
/// silently run as one node.
pub(super) fn store_backend(raw: &RawStore) -> Result<StoreBackend, (&'static str, String)> {
    let pg_only = !raw.url.is_empty()
        || !raw.url_file.as_os_str().is_empty()
        || !raw.ca_file.as_os_str().is_empty();
    match raw.backend.as_str() {
        "sqlite" => {
            if pg_only {
                return Err((
                    "store.backend",
                    "is \"sqlite\" but store.url, url_file or ca_file is set: write backend = \
                     \"postgres\" to use that database, or remove the url"
                        .into(),
                ));
            }
            Ok(StoreBackend::Sqlite)
        }
        "postgres" => {
            let url = match (raw.url.is_empty(), raw.url_file.as_os_str().is_empty()) {
                (false, true) => {
                    check_pg_url(&raw.url).map_err(|r| ("store.url", r))?;
                    UrlSource::Inline(raw.url.clone())
                }
                (true, false) => UrlSource::File(raw.url_file.clone()),
                (true, true) => {
                    return Err((
                        "store.url",
                        "backend = \"postgres\" needs store.url (e.g. \
                         \"postgresql://simgate@db.example/simgate?sslmode=require\") or \
                         store.url_file (a file of mode 0600 holding it)"
                            .into(),
                    ));
                }
                (false, false) => {
                    return Err((
                        "store.url_file",
                        "give store.url or store.url_file, not both".into(),
                    ));
                }
            };
            let node_id = if raw.node_id.is_empty() {
                host_name().map_err(|r| ("store.node_id", r))?
            } else {
                raw.node_id.clone()
            };
            check_node_id(&node_id).map_err(|r| ("store.node_id", r))?;
            if !(5..=600).contains(&raw.lease_seconds) {
                return Err((
                    "store.lease_seconds",
                    format!("{} is out of range (5..=600)", raw.lease_seconds),
                ));
            }
            if !(2..=256).contains(&raw.pool_size) {
                return Err((
                    "store.pool_size",
                    format!("{} is out of range (2..=256)", raw.pool_size),
                ));
            }
            Ok(StoreBackend::Postgres(PostgresSettings {
                url,
                node_id,
                lease: Duration::from_secs(raw.lease_seconds),
                pool_size: raw.pool_size as usize,
                ca_file: (!raw.ca_file.as_os_str().is_empty()).then(|| raw.ca_file.clone()),
            }))
        }
        other => Err((
            "store.backend",
            format!("{other:?} is not a store back end: \"sqlite\" (the default) or \"postgres\""),
        )),
    }
}

/// A node id names the node in the database, in `/v1/modems`, metrics labels and logs.
fn check_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a node id: 1 to 63 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// The host name, the default node id: each host of a cluster has its own.
fn host_name() -> Result<String, String> {
    let name = nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name ({e}): set store.node_id"))?;
    name.into_string()
        .map(|n| n.trim().to_owned())
        .map_err(|_| "the host name is not UTF-8: set store.node_id".into())
}

/// `api.listen`: an IP address and a port. A host name is refused rather than resolved: the
/// config stage does no I/O, and `localhost` may resolve to 127.0.0.1, ::1 or both, so the
/// address the API binds would depend on the resolver of the day.
pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        let example = SocketAddr::new(ip, 8787);
        return Err(format!(
            "{text:?} has no port: write the address and a port, e.g. \"{example}\""
        ));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && !host.is_empty()
        && !host.contains(':')
        && port.parse::<u16>().is_ok()
    {
        let suggestion = if host.eq_ignore_ascii_case("localhost") {
            format!(" (for {host}: \"127.0.0.1:{port}\", or \"[::1]:{port}\" for IPv6)")
        } else {
            String::new()
        };
        return Err(format!(
            "{text:?} names the host {host:?}: api.listen takes an IP address and a port, not a \
             host name, since simgate does not resolve names{suggestion}"
        ));
    }
    Err(format!(
        "{text:?} is not an IP address with a port (e.g. \"127.0.0.1:8787\" or \"[::1]:8787\")"
    ))
}

/// The levels a `log.level` directive may name, quietest first.
pub(super) const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `log.level` beyond what the filter parser does. `tracing`'s filter reads a bare word
/// that is not a level as a *target* (`verbose` means "trace for the module `verbose`, nothing
/// else"), so a misspelt level silently turns every simgate line off, errors included. Here each
/// directive must be a level or `target=level`, and the whole must leave simgate's own lines
/// on unless it says `off` outright.
pub(super) fn check_log_filter(filter: &str) -> Result<(), String> {
    let levels = LOG_LEVELS.join(", ");
    let is_level = |w: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    let mut default_level = None;
    let mut simgate_on = false;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.rsplit_once('=') {
            None if is_level(directive) => default_level = Some(directive.to_ascii_lowercase()),
            None => {
                return Err(format!(
                    "{directive:?} is not a log level: use one of {levels}, or target=level \
                     pairs such as \"simgate=debug,info\""
                ));
            }
            Some((target, level)) => {
                if !is_level(level) {
                    return Err(format!(
                        "{directive:?}: {level:?} is not a log level (one of {levels})"
                    ));
                }
                if target.trim().is_empty() {
                    return Err(format!("{directive:?} names no target before '='"));
                }
                if target.trim().starts_with("simgate") && !level.trim().eq_ignore_ascii_case("off")
                {
                    simgate_on = true;
                }
            }
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(filter) {
        return Err(format!("{filter:?} is not a log filter ({e})"));
    }
    match default_level.as_deref() {
        Some(_) => Ok(()),
        None if simgate_on => Ok(()),
        None => Err(format!(
            "{filter:?} shows no simgate log line, not even errors: add a level ({levels}), e.g. \
             \"{}info\"",
            if filter.trim().is_empty() {
                String::new()
            } else {
                format!("{},", filter.trim())
            }
        )),
    }
}

/// A configured identity, checked for the shape modems report it in: an IMEI is 14 to 16
/// digits (TS 23.003 §6.2: IMEI 15 with its check digit, IMEISV 16), an ICCID 18 to 22 digits
/// with an optional `F` filler (ITU-T E.118), a USB serial printable ASCII without spaces.
pub(super) fn parse_identity(key: &str, value: &str) -> Result<DeviceIdentity, String> {
    match key {
        "imei" => {
            if (14..=16).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
                Ok(DeviceIdentity::Imei(value.to_string()))
            } else {
                Err(format!("{value:?} is not an IMEI (14 to 16 digits)"))
            }
        }
        "iccid" => {
            let digits = value.trim_end_matches(['F', 'f']);
            if (18..=22).contains(&value.len())
                && value.len() - digits.len() <= 1
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                Ok(DeviceIdentity::Iccid(value.to_ascii_uppercase()))
            } else {
                Err(format!("{value:?} is not an ICCID (18 to 22 digits)"))
            }
        }
        _ => {
            if value.len() <= 126 && value.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(DeviceIdentity::UsbSerial(value.to_string()))
            } else {
                Err(format!(
                    "{value:?} is not a USB serial number (printable ASCII without spaces)"
                ))
            }
        }
    }
}

/// Line and column of the value at a dotted key path such as `modem[1].baud` or
/// `api.tokens[0]`, if the text has it (a missing key means its default was at fault).
pub(super) fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let root = toml::Spanned::new(root.span(), toml::de::DeValue::Table(root.into_inner()));
    let mut cur = &root;
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        cur = cur.get_ref().get(name)?;
        while !rest.is_empty() {
            let (idx, after) = rest.split_once(']')?;
            cur = cur.get_ref().get(idx.parse::<usize>().ok()?)?;
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(line_col(text, cur.span().start))
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl RawConfig {
    /// Parses TOML into the raw form, naming the key and position of the first problem.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError {
            origin: origin.to_string(),
            key: None,
            position: e.span().map(|s| line_col(text, s.start)),
            reason: e.message().trim().to_string(),
        };
        let de = toml::de::Deserializer::parse(text).map_err(syntax)?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut reason = inner.message().trim().to_string();
            // serde_path_to_error already ends the path with the unknown key's name; say plainly
            // that the key itself is the problem rather than its value.
            if reason.starts_with("unknown field `") {
                // `pin` is a field only so that it can be refused; don't advertise it.
                reason = format!("unknown key ({})", reason.replace(", `pin`", ""));
            }
            ConfigError {
                origin: origin.to_string(),
                key: (key != "." && !key.is_empty()).then_some(key),
                position: inner.span().map(|s| line_col(text, s.start)),
                reason,
            }
        })
    }

    /// Checks every value and builds the typed [`Config`].
    pub fn validate(self, origin: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::at(origin, key, reason);

        // [ui]
        if !(5..=10_080).contains(&self.ui.session_minutes) {
            return Err(err(
                "ui.session_minutes",
                format!(
                    "{} is out of range (5..=10080, five minutes to a week)",
                    self.ui.session_minutes
                ),
            ));
        }

        // [api]
        let listen = parse_listen(&self.api.listen).map_err(|reason| err("api.listen", reason))?;
        for (i, t) in self.api.tokens.iter().enumerate() {
            // The token itself is never echoed back: the error may end up in a log.
            if !crate::http::auth::token_follows_rule(t) {
                return Err(err(
                    &format!("api.tokens[{i}]"),
                    crate::http::auth::TOKEN_RULE.into(),
                ));
            }
        }
        if !(256..=1_048_576).contains(&self.api.max_body_bytes) {
            return Err(err(
                "api.max_body_bytes",
                format!(
                    "{} is out of range (256..=1048576)",
                    self.api.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            ("api.idle_timeout_seconds", self.api.idle_timeout_seconds),
            (
                "api.header_timeout_seconds",
                self.api.header_timeout_seconds,
            ),
            ("api.body_timeout_seconds", self.api.body_timeout_seconds),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(err(key, format!("{value} is out of range (1..=3600)")));
            }
        }
        if !(1..=65_536).contains(&self.api.max_connections) {
            return Err(err(
                "api.max_connections",
                format!("{} is out of range (1..=65536)", self.api.max_connections),
            ));
        }

        // [store]
        if self.store.data_dir.as_os_str().is_empty() {
            return Err(err("store.data_dir", "must not be empty".into()));
        }
        let backend = store_backend(&self.store).map_err(|(key, reason)| err(key, reason))?;

        // [otp]
        let length = usize::try_from(self.otp.length)
            .ok()
            .and_then(|l| otp::validate_code_length(l).ok())
            .ok_or_else(|| {
                err(
                    "otp.length",
                    format!(
                        "{} is out of range ({}..={})",
                        self.otp.length,
                        otp::MIN_CODE_LENGTH,
                        otp::MAX_CODE_LENGTH
                    ),
                )
            })?;
        if self.otp.min_ttl_seconds == 0 {
            return Err(err("otp.min_ttl_seconds", "must be at least 1".into()));
        }
        if self.otp.max_ttl_seconds < self.otp.min_ttl_seconds {
            return Err(err(
                "otp.max_ttl_seconds",
                format!(
                    "{} is below otp.min_ttl_seconds ({})",
                    self.otp.max_ttl_seconds, self.otp.min_ttl_seconds
                ),
            ));
        }
        let min_ttl = Duration::from_secs(self.otp.min_ttl_seconds);
        let max_ttl = Duration::from_secs(self.otp.max_ttl_seconds);
        let ttl = Duration::from_secs(self.otp.ttl_seconds);
        otp::validate_ttl(ttl, min_ttl, max_ttl)
            .map_err(|e| err("otp.ttl_seconds", e.to_string()))?;
        if !(1..=100).contains(&self.otp.max_attempts) {
            return Err(err(
                "otp.max_attempts",
                format!("{} is out of range (1..=100)", self.otp.max_attempts),
            ));
        }
        otp::validate_template(&self.otp.template)
            .map_err(|e| err("otp.template", e.to_string()))?;
        let app_hash = if self.otp.app_hash.is_empty() {
            None
        } else {
            Some(
                AppHash::parse(&self.otp.app_hash)
                    .map_err(|e| err("otp.app_hash", e.to_string()))?,
            )
        };

        if !(1..=10).contains(&self.otp.max_parts) {
            return Err(err(
                "otp.max_parts",
                format!("{} is out of range (1..=10)", self.otp.max_parts),
            ));
        }
        let max_parts = self.otp.max_parts as usize;
        // The configured text itself must fit, with the longest code a request may ask for.
        let longest = "0".repeat(otp::MAX_CODE_LENGTH);
        let parts = otp::render(&self.otp.template, &longest, ttl, None, app_hash.as_ref())
            .map(|r| crate::pdu::plan(&r.masked).parts)
            .unwrap_or(1);
        if parts > max_parts {
            return Err(err(
                "otp.template",
                format!(
                    "the text needs {parts} SMS parts with a {}-digit code, more than \
                     otp.max_parts = {max_parts}; shorten it or raise otp.max_parts",
                    otp::MAX_CODE_LENGTH
                ),
            ));
        }
        if self.otp.max_resends > 100 {
            return Err(err(
                "otp.max_resends",
                format!("{} is out of range (0..=100)", self.otp.max_resends),
            ));
        }
        let on_pending = otp::OnPending::parse(&self.otp.on_pending).ok_or_else(|| {
            err(
                "otp.on_pending",
                format!(
                    "{:?} is neither \"reuse\" nor \"supersede\"",
                    self.otp.on_pending
                ),
            )
        })?;

        // [limits]
        let rate = |key: &str, v: &str| -> Result<Rate, ConfigError> {
            v.parse::<Rate>()
                .map_err(|e| err(&format!("limits.{key}"), e.to_string()))
        };
        let rates = RateSettings {
            otp_per_number: rate("otp_per_number", &self.limits.otp_per_number)?,
            verify_per_number: rate("verify_per_number", &self.limits.verify_per_number)?,
            otp_per_prefix: rate("otp_per_prefix", &self.limits.otp_per_prefix)?,
            prefix_digits: match self.limits.prefix_digits {
                n @ 1..=14 => n as usize,
                n => {
                    return Err(err(
                        "limits.prefix_digits",
                        format!("{n} is out of range (1..=14)"),
                    ));
                }
            },
            requests_per_token: rate("requests_per_token", &self.limits.requests_per_token)?,
            sends_global: rate("sends_global", &self.limits.sends_global)?,
        };
        if self.limits.queue_max == 0 {
            return Err(err("limits.queue_max", "must be at least 1".into()));
        }
        for (key, list) in [
            ("allow_prefixes", &self.limits.allow_prefixes),
            ("deny_prefixes", &self.limits.deny_prefixes),
        ] {
            for (i, p) in list.iter().enumerate() {
                if !PrefixPolicy::validate_prefix(p) {
                    return Err(err(
                        &format!("limits.{key}[{i}]"),
                        format!("{p:?} is not an E.164 prefix (\"+\" and 1 to 15 digits)"),
                    ));
                }
            }
        }

        // [dispatch]
        let on_unknown_outcome = match self.dispatch.on_unknown_outcome.as_str() {
            "resend" => UnknownOutcome::Resend,
            "fail" => UnknownOutcome::Fail,
            other => {
                return Err(err(
                    "dispatch.on_unknown_outcome",
                    format!("{other:?} is neither \"resend\" nor \"fail\""),
                ));
            }
        };
        // TS 23.040 sets no bound; a week covers a phone that was off while the SMSC held
        // some parts back, and the store keeps open parts at most that long.
        if !(1..=604_800).contains(&self.inbound.reassembly_timeout_seconds) {
            return Err(err(
                "inbound.reassembly_timeout_seconds",
                format!(
                    "{} is out of range (1..=604800, a week)",
                    self.inbound.reassembly_timeout_seconds
                ),
            ));
        }
        if self.dispatch.text_max_age_seconds == 0 {
            return Err(err(
                "dispatch.text_max_age_seconds",
                "must be at least 1".into(),
            ));
        }
        if self.dispatch.max_unknown_outcomes == 0 {
            return Err(err(
                "dispatch.max_unknown_outcomes",
                "must be at least 1 (use on_unknown_outcome = \"fail\" to never resend)".into(),
            ));
        }

        // [log]
        check_log_filter(&self.log.level).map_err(|reason| err("log.level", reason))?;

        // [[modem]]
        let raw_modems = match self.modem {
            None => vec![RawModem::default()],
            Some(m) if m.is_empty() => {
                return Err(err("modem", "at least one [[modem]] is needed".into()));
            }
            Some(m) => m,
        };
        let mut modems: Vec<ModemSettings> = Vec::with_capacity(raw_modems.len());
        for (i, m) in raw_modems.into_iter().enumerate() {
            let k = |field: &str| format!("modem[{i}].{field}");
            if m.pin.is_some() {
                return Err(err(
                    &k("pin"),
                    format!(
                        "a PIN may not be written in the config file; put it in a file named by \
                         pin_file (mode 0600) or in the {PIN_ENV} environment variable"
                    ),
                ));
            }
            let id = if m.id.is_empty() {
                format!("modem{i}")
            } else {
                m.id
            };
            if id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    &k("id"),
                    format!("{id:?} must be 1 to 32 characters of [A-Za-z0-9_-]"),
                ));
            }
            if modems.iter().any(|o| o.id == id) {
                return Err(err(&k("id"), format!("{id:?} is used by another modem")));
            }
            let mut identity = None;
            for (key, value) in [
                ("imei", &m.imei),
                ("iccid", &m.iccid),
                ("usb_serial", &m.usb_serial),
            ] {
                if value.is_empty() {
                    continue;
                }
                if let Some(first) = &identity {
                    return Err(err(
                        &k(key),
                        format!(
                            "a modem is named by one identity; {} is already given",
                            DeviceIdentity::key(first)
                        ),
                    ));
                }
                identity = Some(parse_identity(key, value).map_err(|reason| err(&k(key), reason))?);
            }
            if let Some(identity) = &identity
                && modems.iter().any(|o| o.identity.as_ref() == Some(identity))
            {
                return Err(err(
                    &k(identity.key()),
                    format!("{identity} is used by another modem"),
                ));
            }
            let device = match (m.device, &identity) {
                (Some(d), _) if d.as_os_str().is_empty() => {
                    return Err(err(&k("device"), "must not be empty".into()));
                }
                (Some(d), _) => d,
                // Found by identity wherever it is.
                (None, Some(_)) => PathBuf::new(),
                (None, None) => PathBuf::from(DEFAULT_DEVICE),
            };
            if !device.as_os_str().is_empty() && modems.iter().any(|o| o.device == device) {
                return Err(err(
                    &k("device"),
                    format!("{} is used by another modem", device.display()),
                ));
            }
            if m.scan.is_empty() {
                return Err(err(&k("scan"), "needs at least one pattern".into()));
            }
            for pattern in &m.scan {
                discovery::check_pattern(pattern).map_err(|reason| err(&k("scan"), reason))?;
            }
            if !(300..=4_000_000).contains(&m.baud) {
                return Err(err(
                    &k("baud"),
                    format!("{} is out of range (300..=4000000)", m.baud),
                ));
            }
            if !(1..=600).contains(&m.send_timeout_seconds) {
                return Err(err(
                    &k("send_timeout_seconds"),
                    format!("{} is out of range (1..=600)", m.send_timeout_seconds),
                ));
            }
            if m.command_gap_ms > 1000 {
                return Err(err(
                    &k("command_gap_ms"),
                    format!("{} is out of range (0..=1000)", m.command_gap_ms),
                ));
            }
            modems.push(ModemSettings {
                id,
                device,
                identity,
                scan: m.scan,
                baud: m.baud,
                pin_file: (!m.pin_file.as_os_str().is_empty()).then_some(m.pin_file),
                delivery_reports: m.delivery_reports,
                send_timeout: Duration::from_secs(m.send_timeout_seconds),
                sends_per_minute: m.sends_per_minute,
                command_gap: Duration::from_millis(m.command_gap_ms),
            });
        }

        // [twilio]
        let twilio = self
            .twilio
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;
        // [[webhook]]
        let webhooks = crate::webhook::config::validate(self.webhook, origin)?;

        // [supabase], [zitadel]
        let supabase = self
            .supabase
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;
        let zitadel = self
            .zitadel
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;

        Ok(Config {
            api: ApiSettings {
                listen,
                tokens: self.api.tokens,
                max_body_bytes: self.api.max_body_bytes as usize,
                connections: crate::http::ConnLimits {
                    idle_timeout: Duration::from_secs(self.api.idle_timeout_seconds),
                    header_timeout: Duration::from_secs(self.api.header_timeout_seconds),
                    body_timeout: Duration::from_secs(self.api.body_timeout_seconds),
                    max_connections: self.api.max_connections as usize,
                },
            },
            store: StoreSettings {
                data_dir: self.store.data_dir,
                retention_days: self.store.retention_days,
                mask_numbers_after_days: self.store.mask_numbers_after_days,
                backend,
            },
            otp: OtpSettings {
                length,
                ttl,
                min_ttl,
                max_ttl,
                max_attempts: self.otp.max_attempts,
                template: self.otp.template,
                app_hash,
                max_parts,
                max_resends: self.otp.max_resends,
                on_pending,
            },
            limits: LimitSettings {
                rates,
                otp_per_number_per_day: self.limits.otp_per_number_per_day,
                queue_max: self.limits.queue_max,
                prefixes: PrefixPolicy {
                    allow: self.limits.allow_prefixes,
                    deny: self.limits.deny_prefixes,
                },
            },
            dispatch: DispatchSettings {
                on_unknown_outcome,
                text_max_age: Duration::from_secs(self.dispatch.text_max_age_seconds),
                max_attempts: self.dispatch.max_attempts,
                max_unknown_outcomes: self.dispatch.max_unknown_outcomes,
                max_partial_resends: self.dispatch.max_partial_resends,
            },
            log: LogSettings {
                level: self.log.level,
            },
            ui: UiSettings {
                enabled: self.ui.enabled,
                session: Duration::from_secs(self.ui.session_minutes * 60),
                secure_cookie: self.ui.secure_cookie,
            },
            inbound: InboundSettings {
                enabled: self.inbound.enabled,
                reassembly_timeout: Duration::from_secs(self.inbound.reassembly_timeout_seconds),
            },
            modems,
            twilio,
            webhooks,
            supabase,
            zitadel,
        })
    }
}
