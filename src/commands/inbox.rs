//! `simgate inbox`: the texts a running daemon received (`GET /v1/inbound`), newest first.

use std::process::ExitCode;

use serde_json::Value;

use super::client::{Client, ConnArgs, EXIT_STATUS_HELP, finish, s, table};

/// `simgate inbox`: received texts, newest first (needs `[inbound] enabled = true`).
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct InboxArgs {
    /// Only texts from this sender (an E.164 number or a sender name).
    #[arg(long, value_name = "SENDER")]
    pub from: Option<String>,
    /// At most this many texts (default: the daemon's page size).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only texts older than this inbound id: the `next page` line of the previous page.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `simgate inbox`.
pub fn run(args: InboxArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    let mut query = Vec::new();
    if let Some(f) = &args.from {
        query.push(("from", f.clone()));
    }
    if let Some(l) = args.limit {
        query.push(("limit", l.to_string()));
    }
    if let Some(b) = &args.before {
        query.push(("before", b.clone()));
    }
    let res = client.request("GET", "/v1/inbound", &query, None, None);
    finish(res, json, text)
}

/// The inbox as a table, then the cursor of the next page.
fn text(v: &Value) -> String {
    let rows = v["inbound"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = if rows.is_empty() {
        "no inbound texts".to_owned()
    } else {
        let header = ["ID", "FROM", "RECEIVED", "PARTS", "TEXT"].map(str::to_owned);
        let mut table_rows = vec![header];
        for m in rows {
            let parts = match m["complete"].as_bool() {
                Some(false) => format!("{} (incomplete)", m["parts"]),
                _ => m["parts"].to_string(),
            };
            // One line per text: line breaks inside it would break the table.
            let body: String = s(m, "text")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            table_rows.push([
                s(m, "id").to_owned(),
                s(m, "from").to_owned(),
                s(m, "received_at").to_owned(),
                parts,
                body,
            ]);
        }
        table(&table_rows, &[false, false, false, true, false])
    };
    if let Some(next) = v["next_before"].as_str() {
        out.push_str(&format!("\nnext page: --before {next}"));
    }
    out
}
