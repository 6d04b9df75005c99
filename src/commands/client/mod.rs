//! `simgate send`, `simgate otp`, `simgate log`: thin clients of a running daemon's HTTP API, and
//! the connection, token and error handling that `simgate status` shares with them.
//!
//! They find the daemon and its token the way `serve` placed them: `--url`/`--token` first, then
//! the environment (`SIMGATE_URL`, `SIMGATE_TOKEN`), then the config file (`api.listen`,
//! `api.tokens`, `store.data_dir`), then the token file `<data_dir>/api-token` that `serve` creates
//! when no token is configured, and `./simgate-data/api-token`, where `serve --simulate` puts it.
//! Without an explicit token every one of those that exists is a candidate: a token the daemon
//! refuses (401: the request was not processed) makes the client try the next, so a stale
//! `/var/lib/simgate/api-token` cannot hide the token of the `serve --simulate` that answers.
//!
//! Errors leave as one line `simgate: …` on stderr, or with `--json` as one JSON object
//! `{"error": {"kind", "status", "title", "detail", "exit_code"}}` on stderr; the exit status
//! says what kind of failure it was ([`Exit`]). Blocking HTTP (ureq) is enough for a few requests
//! per run.
//!
//! Layout: `error` is the exit statuses and `ClientError`; `conn` finds the daemon and its
//! token and makes the requests; `output` prints answers; `send`, `otp` and `log` are one
//! command family each. `ConnArgs`, which every command takes, is here.

mod conn;
mod error;
mod log;
mod otp;
mod output;
mod send;

use std::path::PathBuf;

pub(crate) use self::conn::Client;
pub use self::error::{ClientError, EXIT_STATUS_HELP, Exit};
pub use self::log::{LogArgs, run_log};
pub use self::otp::{OtpArgs, OtpCommand, OtpIdArgs, OtpSendArgs, OtpVerifyArgs, run_otp};
pub(crate) use self::output::{finish, s, table};
pub use self::send::{SendArgs, run_send};

/// How to reach the daemon; shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Base URL of the daemon (default: $SIMGATE_URL, else http:// and the config's api.listen).
    #[arg(long, global = true, value_name = "URL", help_heading = "Daemon")]
    pub url: Option<String>,
    /// API token (default: $SIMGATE_TOKEN, the config's api.tokens, <data dir>/api-token, then
    /// ./simgate-data/api-token). Prefer the environment: other local users can read command
    /// lines with `ps`.
    #[arg(long, global = true, value_name = "TOKEN", help_heading = "Daemon")]
    pub token: Option<String>,
    /// Config file (default: /etc/simgate/simgate.toml when it exists).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Daemon")]
    pub config: Option<PathBuf>,
    /// Data directory holding the daemon's api-token (default: the config's store.data_dir,
    /// then ./simgate-data).
    #[arg(long, global = true, value_name = "DIR", help_heading = "Daemon")]
    pub data_dir: Option<PathBuf>,
}
