//! Configuration: `RawConfig` (TOML, deny_unknown_fields) → validated `Config`.
