//! The abuse scenarios of `tests/abuse_otp.rs`, run unchanged against PostgreSQL: a
//! test binary named `pg_*` starts every daemon with `[store] backend = "postgres"` on a
//! throwaway server (tests/support/daemon.rs, `postgres_mode`). Without the server binaries
//! these tests fail with the reason: `.ci/run` installs them.

#[path = "abuse_otp.rs"]
mod scenarios;
