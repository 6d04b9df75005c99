//! The status page's HTML, rendered on the server: the sign-in page, the page itself, and the
//! fragments the page's script swaps in when it polls (`/ui/state` renders the same fragments,
//! so there is one rendering of everything, and the browser only replaces markup).
//!
//! Every value from outside (modem answers, numbers, texts, errors) goes through [`esc`].
//! Texts are the delivery log's: an OTP's code is masked there before it is stored, so no code
//! can reach a page.

use std::collections::HashMap;
use std::fmt::Write;

use time::OffsetDateTime;

use crate::http::ModemJson;
use crate::model::{InboundText, Message, MessageStatus, Millis};
use crate::service::{EndpointHealth, QueueSummary, TRAFFIC_HOURS, Traffic};

use super::charts;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `2026-01-31 12:00:05` (UTC).
pub fn when(ms: Millis) -> String {
    const FMT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FMT).ok())
        .unwrap_or_default()
}

/// `42 s`, `3 min`, `5 h`, `2 d`.
pub fn age(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\">\
         <title>{}</title><link rel=\"stylesheet\" href=\"/ui/assets/ui.css\"></head>",
        esc(title)
    );
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn sign_in(error: Option<&str>) -> String {
    let mut out = String::new();
    head(&mut out, "simgate: sign in");
    out.push_str("<body class=\"signin\"><main><h1>simgate</h1>");
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
    }
    out.push_str(
        "<form method=\"post\" action=\"/ui/sign-in\" id=\"signin\">\
         <label for=\"token\">API token</label>\
         <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" \
         required minlength=\"16\">\
         <button type=\"submit\">Sign in</button>\
         <p class=\"hint\">One of <code>[api] tokens</code>, or the contents of \
         <code>&lt;data dir&gt;/api-token</code>.</p></form></main></body></html>",
    );
    out
}

/// What the messages list is filtered by (as typed; the service validates it).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Recipient.
    pub to: String,
    /// Status.
    pub status: String,
}

impl Filter {
    /// The filter as a query string for the page's script (`?to=…&status=…` or empty).
    pub fn is_empty(&self) -> bool {
        self.to.is_empty() && self.status.is_empty()
    }
}

/// Everything one rendering of the page shows.
pub struct View<'a> {
    /// The service's clock.
    pub now: Millis,
    /// `/v1/modems`'s snapshot.
    pub modems: &'a [ModemJson],
    /// Signal samples per modem id, oldest first.
    pub signal: &'a HashMap<String, Vec<(Millis, i32)>>,
    /// The queue.
    pub queue: QueueSummary,
    /// The last messages (or why they could not be listed, e.g. a bad filter).
    pub messages: Result<&'a [Message], String>,
    /// The last 24 hours.
    pub traffic: &'a Traffic,
    /// The message the form just queued, to mark its row.
    pub highlight: Option<&'a str>,
    /// The last inbound texts (or why they could not be read); `None` while `[inbound]` is off.
    pub inbound: Option<Result<&'a [InboundText], String>>,
    /// Each webhook endpoint's health; empty when none is configured.
    pub webhooks: &'a [EndpointHealth],
}

/// The fragments `/ui/state` returns and the page embeds, by element id.
pub fn fragments(v: &View<'_>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("modems", modems(v)),
        ("queue", queue(v)),
        ("messages", messages(v)),
        ("charts", charts_html(v.traffic)),
    ];
    // Only what is configured has a section, so only that has a fragment.
    if v.inbound.is_some() {
        out.push(("inbound", inbound(v)));
    }
    if !v.webhooks.is_empty() {
        out.push(("webhooks", webhooks(v)));
    }
    out
}

/// Whether the page should poll soon: something shown is still on its way.
pub fn busy(v: &View<'_>) -> bool {
    let Ok(msgs) = &v.messages else { return false };
    v.queue.depth > 0
        || msgs.iter().any(|m| match m.status {
            MessageStatus::Queued | MessageStatus::Sending => true,
            // A report usually follows within seconds; after two minutes stop hurrying.
            MessageStatus::Sent => m.sent_at.is_some_and(|t| v.now - t < 120_000),
            _ => false,
        })
}

/// The whole page.
pub fn page(
    v: &View<'_>,
    csrf: &str,
    filter: &Filter,
    flash: Option<&str>,
    error: Option<&str>,
) -> String {
    let mut out = String::new();
    head(&mut out, "simgate status");
    out.push_str("<body><header><h1>simgate</h1><span id=\"updated\" class=\"muted\"></span>");
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/ui/sign-out\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button type=\"submit\" id=\"signout\">Sign out</button></form></header><main>",
        esc(csrf)
    );
    if let Some(f) = flash {
        let _ = write!(out, "<p class=\"flash\" id=\"flash\">{}</p>", esc(f));
    }
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"error\" id=\"error\">{}</p>", esc(e));
    }
    let frags = fragments(v);
    let frag = |id: &str| {
        frags
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, h)| h.as_str())
            .unwrap_or("")
    };
    let _ = write!(
        out,
        "<section><h2>Modems</h2><div id=\"modems\">{}</div></section>\
         <section><h2>Queue</h2><div id=\"queue\">{}</div></section>",
        frag("modems"),
        frag("queue")
    );
    let _ = write!(
        out,
        "<section><h2>Send a test OTP</h2>\
         <form method=\"post\" action=\"/ui/test-otp\" id=\"otp-form\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label for=\"otp-to\">Number (E.164)</label>\
         <input type=\"tel\" name=\"to\" id=\"otp-to\" placeholder=\"+15551234567\" required>\
         <button type=\"submit\">Send</button>\
         <p class=\"hint\">Sends a real OTP with the configured template; the code is never \
         shown here.</p></form></section>",
        esc(csrf)
    );
    out.push_str("<section><h2>Messages</h2><form method=\"get\" action=\"/ui/\" id=\"filter\">");
    let _ = write!(
        out,
        "<input type=\"tel\" name=\"to\" id=\"filter-to\" placeholder=\"number\" value=\"{}\">\
         <select name=\"status\" id=\"filter-status\"><option value=\"\">any status</option>",
        esc(&filter.to)
    );
    for s in MessageStatus::ALL {
        let _ = write!(
            out,
            "<option{}>{}</option>",
            if filter.status == s.as_str() {
                " selected"
            } else {
                ""
            },
            s.as_str()
        );
    }
    out.push_str("</select><button type=\"submit\">Filter</button>");
    if !filter.is_empty() {
        out.push_str(" <a href=\"/ui/\">clear</a>");
    }
    let _ = write!(
        out,
        "</form><div id=\"messages\">{}</div></section>",
        frag("messages")
    );
    if v.inbound.is_some() {
        let _ = write!(
            out,
            "<section><h2>Received</h2><div id=\"inbound\">{}</div></section>",
            frag("inbound")
        );
    }
    if !v.webhooks.is_empty() {
        let _ = write!(
            out,
            "<section><h2>Webhooks</h2><div id=\"webhooks\">{}</div></section>",
            frag("webhooks")
        );
    }
    let _ = write!(
        out,
        "<section><h2>Last 24 hours</h2><div id=\"charts\">{}</div></section>",
        frag("charts")
    );
    out.push_str("</main><script src=\"/ui/assets/ui.js\" defer></script></body></html>");
    out
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map(esc).unwrap_or_else(|| "–".to_owned())
}

fn modems(v: &View<'_>) -> String {
    if v.modems.is_empty() {
        return "<p class=\"muted\">No modem is configured.</p>".to_owned();
    }
    let mut out = String::from("<div class=\"cards\">");
    for m in v.modems {
        let signal = match m.signal {
            Some(dbm) => format!("{dbm} dBm"),
            None => "–".to_owned(),
        };
        let spark = charts::signal_spark(v.signal.get(&m.id).map(Vec::as_slice).unwrap_or(&[]));
        let _ = write!(
            out,
            "<article class=\"card\" data-modem=\"{id}\"><h3>{id} \
             <span class=\"state state-{st}\" data-state=\"{st}\">{st}</span></h3><dl>\
             <dt>Operator</dt><dd>{op}</dd><dt>Registration</dt><dd>{reg}</dd>\
             <dt>Signal</dt><dd>{signal} {spark}</dd>\
             <dt>Sent / failed</dt><dd>{sent} / {failed}</dd><dt>Device</dt><dd>{dev}</dd>",
            id = esc(&m.id),
            st = esc(&m.state),
            op = opt(&m.operator),
            reg = opt(&m.registration),
            sent = m.sent,
            failed = m.failed,
            dev = esc(&m.device),
        );
        if let Some(e) = &m.last_error {
            let _ = write!(
                out,
                "<dt>Last error</dt><dd class=\"error\">{}</dd>",
                esc(e)
            );
        }
        out.push_str("</dl></article>");
    }
    out.push_str("</div>");
    out
}

fn queue(v: &View<'_>) -> String {
    let oldest = match v.queue.oldest {
        Some(t) => format!("{} ago ({} UTC)", age(v.now - t), when(t)),
        None => "–".to_owned(),
    };
    format!(
        "<dl class=\"row\"><dt>Waiting</dt><dd id=\"queue-depth\">{}</dd>\
         <dt>Oldest</dt><dd>{}</dd></dl>",
        v.queue.depth,
        esc(&oldest)
    )
}

fn messages(v: &View<'_>) -> String {
    let msgs = match &v.messages {
        Ok(m) => *m,
        Err(e) => return format!("<p class=\"error\">{}</p>", esc(e)),
    };
    if msgs.is_empty() {
        return "<p class=\"muted\" id=\"no-messages\">No messages.</p>".to_owned();
    }
    let mut out = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>Created (UTC)</th><th>To</th><th>Text</th>\
         <th>Status</th><th>Tries</th><th>Sent</th><th>Delivered</th></tr></thead><tbody>",
    );
    for m in msgs {
        let mark = if v.highlight == Some(m.id.as_str()) {
            " class=\"new\""
        } else {
            ""
        };
        let t = |x: Option<Millis>| x.map(when).unwrap_or_else(|| "–".to_owned());
        let _ = write!(
            out,
            "<tr data-id=\"{id}\"{mark}><td title=\"{id}\">{created}</td><td>{to}</td>\
             <td class=\"text\">{text}</td><td><span class=\"status st-{st}\">{st}</span>{err}</td>\
             <td>{tries}</td><td>{sent}</td><td>{delivered}</td></tr>",
            id = esc(&m.id),
            created = when(m.created_at),
            to = esc(&m.to),
            text = esc(&m.log_text),
            st = m.status.as_str(),
            err = m
                .error
                .as_deref()
                .map(|e| format!("<div class=\"error small\">{}</div>", esc(e)))
                .unwrap_or_default(),
            tries = m.attempts,
            sent = t(m.sent_at),
            delivered = t(m.delivered_at),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

fn inbound(v: &View<'_>) -> String {
    let rows = match &v.inbound {
        None => return String::new(),
        Some(Err(e)) => return format!("<p class=\"error\">{}</p>", esc(e)),
        Some(Ok(rows)) => *rows,
    };
    if rows.is_empty() {
        return "<p class=\"muted\" id=\"no-inbound\">No texts received.</p>".to_owned();
    }
    let mut out = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>Received (UTC)</th><th>From</th>\
         <th>Text</th><th>Modem</th><th>Parts</th></tr></thead><tbody>",
    );
    for m in rows {
        let parts = if m.complete {
            m.parts.to_string()
        } else {
            let missing: Vec<String> = m.missing.iter().map(u32::to_string).collect();
            format!(
                "{} <span class=\"error small\">incomplete: part {} missing</span>",
                m.parts,
                missing.join(", ")
            )
        };
        let _ = write!(
            out,
            "<tr data-id=\"{id}\"><td title=\"{id}\">{at}</td><td>{from}</td>\
             <td class=\"text\">{text}</td><td>{modem}</td><td>{parts}</td></tr>",
            id = esc(&m.id),
            at = when(m.received_at),
            from = esc(&m.from),
            text = esc(&m.text),
            modem = esc(&m.modem_id),
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

fn webhooks(v: &View<'_>) -> String {
    let mut out = String::from(
        "<div class=\"scroll\"><table><thead><tr><th>Endpoint</th><th>State</th>\
         <th>Waiting</th><th>Delivered</th><th>Dead</th></tr></thead><tbody>",
    );
    for w in v.webhooks {
        let s = &w.state;
        let (class, state) = if let Some(reason) = &s.disabled {
            ("failed", format!("disabled: {reason}"))
        } else if s.head_seq.is_some() {
            let next = s
                .next_attempt_at
                .map(|t| format!(", next try in {}", age(t - v.now)))
                .unwrap_or_default();
            (
                "expired",
                format!(
                    "retrying ({} failed{next}): {}",
                    s.attempts,
                    s.last_error.as_deref().unwrap_or("")
                ),
            )
        } else {
            ("delivered", "ok".to_owned())
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td><span class=\"status st-{class}\">{}</span></td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.endpoint),
            esc(&state),
            w.backlog,
            s.delivered,
            s.dead
        );
    }
    out.push_str("</tbody></table></div>");
    out
}

fn charts_html(t: &Traffic) -> String {
    let total: u64 = t.hours.iter().map(|h| h.total()).sum();
    let o = t.overall;
    let lat = if o.samples == 0 {
        "no delivery reports in this window".to_owned()
    } else {
        format!(
            "median {:.1} s, 90th {:.1} s, 99th {:.1} s over {} delivered",
            o.p50 as f64 / 1000.0,
            o.p90 as f64 / 1000.0,
            o.p99 as f64 / 1000.0,
            o.samples
        )
    };
    format!(
        "<div class=\"charts\"><figure><figcaption>Messages per hour ({total} in {TRAFFIC_HOURS} h) \
         <span class=\"key\"><i class=\"delivered\"></i>delivered <i class=\"sent\"></i>sent \
         <i class=\"failed\"></i>failed <i class=\"expired\"></i>expired/canceled \
         <i class=\"waiting\"></i>waiting</span></figcaption>{}</figure>\
         <figure><figcaption>Delivery latency: {} <span class=\"key\"><i class=\"p50\"></i>median \
         <i class=\"p90\"></i>90th</span></figcaption>{}</figure></div>",
        charts::outcome_bars(&t.hours),
        esc(&lat),
        charts::latency_lines(t.hours.first().map(|h| h.hour), &t.latency),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MessageKind;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ages_and_times() {
        assert_eq!(age(59_999), "59 s");
        assert_eq!(age(120_000), "2 min");
        assert_eq!(age(7_200_000), "2 h");
        assert_eq!(when(0), "1970-01-01 00:00:00");
    }

    fn msg(status: MessageStatus, text: &str) -> Message {
        Message {
            id: "msg_0123456789abcdef0123456789abcdef".into(),
            otp_id: None,
            to: "+15550001".into(),
            kind: MessageKind::Text,
            log_text: text.into(),
            parts: 1,
            status,
            attempts: 1,
            error: Some("<b>oops</b>".into()),
            created_at: 0,
            sent_at: Some(1000),
            delivered_at: None,
            deadline: 0,
            next_attempt_at: 0,
            modem_id: None,
        }
    }

    #[test]
    fn rows_escape_what_came_from_outside() {
        let list = [msg(MessageStatus::Sent, "<script>alert(1)</script>")];
        let traffic = crate::service::Traffic {
            hours: Vec::new(),
            latency: Vec::new(),
            overall: Default::default(),
        };
        let signal = HashMap::new();
        let inbound = [InboundText {
            id: "in_0123456789abcdef0123456789abcdef".into(),
            from: "<i>Bank</i>".into(),
            text: "<img src=x onerror=alert(2)>".into(),
            modem_id: "m0".into(),
            sc_timestamp: String::new(),
            received_at: 0,
            parts: 2,
            complete: false,
            missing: vec![2],
        }];
        let hooks = [EndpointHealth {
            endpoint: "https://h.example/<x>".into(),
            state: crate::model::EndpointState {
                cursor: 1,
                head_seq: Some(2),
                attempts: 3,
                first_failure_at: Some(0),
                next_attempt_at: Some(5000),
                disabled: None,
                delivered: 1,
                dead: 0,
                last_error: Some("answered <500>".into()),
            },
            backlog: 4,
        }];
        let v = View {
            now: 2000,
            modems: &[],
            signal: &signal,
            queue: QueueSummary {
                depth: 0,
                oldest: None,
            },
            messages: Ok(&list),
            traffic: &traffic,
            highlight: None,
            inbound: Some(Ok(&inbound)),
            webhooks: &hooks,
        };
        let html = page(&v, "tok\"en", &Filter::default(), None, None);
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;oops"));
        assert!(html.contains("value=\"tok&quot;en\""));
        assert!(!html.contains("<img") && html.contains("&lt;img src=x"));
        assert!(html.contains("&lt;i&gt;Bank") && html.contains("part 2 missing"));
        assert!(
            html.contains("retrying (3 failed, next try in 3 s): answered &lt;500&gt;"),
            "{html}"
        );
        assert!(html.contains("https://h.example/&lt;x&gt;"));
        assert!(busy(&v), "sent a second ago: a report is due");
        assert_eq!(
            html.matches("<script").count(),
            1,
            "only the one external script"
        );
    }
}
