//! `simgate log`: the delivery log, newest first, as a table with the next page's cursor.

use std::process::ExitCode;

use serde_json::Value;

use super::{Client, ConnArgs, EXIT_STATUS_HELP, finish, s, table};

/// `simgate log`: the delivery log, newest first.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct LogArgs {
    /// Only messages to this number.
    #[arg(long, value_name = "NUMBER")]
    pub to: Option<String>,
    /// Only messages in this status (queued, sending, sent, delivered, failed, expired, canceled).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// At most this many messages (default: the daemon's page size).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only messages older than this message id or RFC 3339 time; the `next page` line of the
    /// previous page (`next_before` in JSON) gives the id.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `simgate log`.
pub fn run_log(args: LogArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    let mut query = Vec::new();
    if let Some(to) = &args.to {
        query.push(("to", to.clone()));
    }
    if let Some(st) = &args.status {
        query.push(("status", st.clone()));
    }
    if let Some(l) = args.limit {
        query.push(("limit", l.to_string()));
    }
    if let Some(b) = &args.before {
        query.push(("before", b.clone()));
    }
    let res = client.request("GET", "/v1/messages", &query, None, None);
    finish(res, json, log_text)
}

/// The delivery log as a table sized to its contents, then the cursor of the next page.
fn log_text(v: &Value) -> String {
    let msgs = v["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = if msgs.is_empty() {
        "no messages".to_owned()
    } else {
        let header = ["ID", "TO", "STATUS", "PARTS", "CREATED", "ERROR"].map(str::to_owned);
        let mut rows = vec![header];
        for m in msgs {
            rows.push([
                s(m, "id").to_owned(),
                s(m, "to").to_owned(),
                s(m, "status").to_owned(),
                m["parts"].to_string(),
                s(m, "created_at").to_owned(),
                s(m, "error").to_owned(),
            ]);
        }
        table(&rows, &[false, false, false, true, false, false])
    };
    if let Some(next) = v["next_before"].as_str() {
        out.push_str(&format!("\nnext page: --before {next}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn log_table_fits_its_ids_and_shows_the_cursor() {
        let id = "msg_0123456789abcdef0123456789abcdef";
        let v = json!({
            "messages": [
                {"id": id, "to": "+15551230001", "status": "sent", "parts": 1,
                 "created_at": "2026-12-03T08:00:00.120Z", "error": null},
                {"id": "msg_ffffffffffffffffffffffffffffffff", "to": "+15551230002",
                 "status": "failed", "parts": 12, "created_at": "2026-12-03T07:59:59.000Z",
                 "error": "+CMS ERROR 1"},
            ],
            "next_before": "msg_ffffffffffffffffffffffffffffffff",
        });
        let text = log_text(&v);
        let lines: Vec<&str> = text.lines().collect();
        // Every column starts at the same place in every row, after the whole id.
        let to_col = lines[0].find("TO").unwrap();
        assert!(to_col > id.len(), "{text}");
        assert_eq!(lines[1].find("+15551230001"), Some(to_col), "{text}");
        assert_eq!(lines[2].find("+15551230002"), Some(to_col), "{text}");
        let created = lines[0].find("CREATED").unwrap();
        assert_eq!(lines[1].find("2026-12-03T08"), Some(created), "{text}");
        assert!(lines[2].ends_with("+CMS ERROR 1"), "{text}");
        assert_eq!(
            lines[3],
            "next page: --before msg_ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(log_text(&json!({"messages": []})), "no messages");
    }
}
