//! The status page (docs/ui.md): server-rendered HTML under `/` and `/ui/…`, signed in with an
//! API token, refreshed by a small script that polls `/ui/state` while the page is visible.
//!
//! It reads through the same paths as the API ([`crate::service`] for the delivery log, the
//! queue and the 24-hour traffic, [`super::ModemSource`] for the modems) and sends its one
//! form's test OTP through [`crate::service::Service::create_otp`], so it has no data path of
//! its own. Nothing runs while nobody looks: the signal history is sampled when a page asks
//! for it, and the traffic summary is read on demand (kept for [`TRAFFIC_CACHE`]). Inbound
//! texts (when `[inbound]` is on) and webhook endpoints' health (when any is configured) are
//! read on each rendering too.
//!
//! **Invariant:** no response carries a token, a code or an unmasked OTP text; every page has
//! the [`CSP`]; every state-changing request is same-origin and carries its session's CSRF
//! value.

pub mod charts;
pub mod pages;
pub mod session;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, Problem, TokenId};
use crate::model::{MessageId, Millis, PublicId};
use crate::service::{CreateOtp, ListMessages, Traffic};
use pages::{Filter, View};
use session::{Session, Sessions};

/// The page's Content-Security-Policy: nothing but this origin's own stylesheet, script and
/// `fetch`, no inline script or style, no framing, forms only to this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// How long one reading of the 24-hour traffic is reused, so several open pages polling every
/// second cost one aggregate query per interval.
pub const TRAFFIC_CACHE: Duration = Duration::from_secs(10);

/// Signal samples are taken at most this often per modem, when a page renders.
const SIGNAL_EVERY: Millis = 15_000;
/// Signal samples older than this are dropped.
const SIGNAL_KEEP: Millis = 24 * 3_600_000;
/// Most signal samples kept per modem.
const SIGNAL_MAX: usize = 480;

/// Messages the page lists.
const LIST: &str = "50";
/// Inbound texts the page lists.
const INBOUND_LIST: &str = "20";

const CSS: &str = include_str!("assets/ui.css");
const JS: &str = include_str!("assets/ui.js");

/// What the status page keeps between requests.
pub struct Ui {
    app: AppState,
    sessions: Sessions,
    secure_cookie: bool,
    signal: Mutex<HashMap<String, VecDeque<(Millis, i32)>>>,
    traffic: Mutex<Option<(Instant, Traffic)>>,
    /// Whether `[inbound]` stores texts, so the page has a section for them.
    inbound: bool,
}

impl Ui {
    /// The page over the API's own state; sessions last `session`, and the cookie is `Secure`
    /// when `secure_cookie` is set or a proxy says the request came over HTTPS.
    pub fn new(app: AppState, session: Duration, secure_cookie: bool) -> Ui {
        Ui {
            app,
            sessions: Sessions::new(session),
            secure_cookie,
            signal: Mutex::new(HashMap::new()),
            traffic: Mutex::new(None),
            inbound: false,
        }
    }

    /// Shows the last inbound texts (with `[inbound] enabled = true`).
    pub fn with_inbound(mut self, enabled: bool) -> Ui {
        self.inbound = enabled;
        self
    }

    /// The live sessions.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn secure(&self, headers: &HeaderMap) -> bool {
        self.secure_cookie
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.eq_ignore_ascii_case("https"))
    }

    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = session::cookie_value(headers)?;
        let s = self.sessions.get(&id, Instant::now())?;
        Some((id, s))
    }

    /// Records the modems' current signal (at most every [`SIGNAL_EVERY`]) and returns every
    /// modem's history.
    fn sample_signal(
        &self,
        now: Millis,
        modems: &[super::ModemJson],
    ) -> HashMap<String, Vec<(Millis, i32)>> {
        let mut all = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        for m in modems {
            let h = all.entry(m.id.clone()).or_default();
            if let Some(dbm) = m.signal
                && h.back().is_none_or(|(t, _)| now - t >= SIGNAL_EVERY)
            {
                h.push_back((now, dbm));
            }
            while h.front().is_some_and(|(t, _)| now - t > SIGNAL_KEEP) || h.len() > SIGNAL_MAX {
                h.pop_front();
            }
        }
        all.retain(|id, _| modems.iter().any(|m| &m.id == id));
        all.iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }

    async fn traffic(&self) -> Traffic {
        if let Some((at, t)) = &*self.traffic.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < TRAFFIC_CACHE
        {
            return t.clone();
        }
        let t = match self.app.service.traffic().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "status page: traffic summary unavailable");
                crate::service::summarize(self.app.service.now(), &[], &[])
            }
        };
        *self.traffic.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), t.clone()));
        t
    }
}

/// Builds the page's routes over `ui`, with the API's request metrics and panic containment.
pub fn router(ui: Arc<Ui>) -> Router {
    let app = ui.app.clone();
    Router::new()
        .route("/", get(root))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(status_page))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/test-otp", post(test_otp))
        .route("/ui/state", get(state))
        .route(
            "/ui/assets/ui.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/ui/assets/ui.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        // The forms carry a token or a number, never more.
        .layer(DefaultBodyLimit::max(4096))
        .layer(middleware::from_fn(headers))
        .layer(middleware::from_fn(super::contain_panics))
        .layer(middleware::from_fn_with_state(app, super::observe))
        .with_state(ui)
}

/// The security headers every answer of the page carries.
async fn headers(req: axum::extract::Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Embedded in the binary: it changes only with an upgrade, which restarts the daemon.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    resp
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

fn to_sign_in() -> Response {
    Redirect::to("/ui/sign-in").into_response()
}

async fn root(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    match ui.session(&headers) {
        Some(_) => Redirect::to("/ui/").into_response(),
        None => to_sign_in(),
    }
}

/// The query of `/ui/` and `/ui/state`: the list's filter and the message just queued.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    #[serde(default)]
    to: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    sent: String,
}

impl PageQuery {
    fn filter(&self) -> Filter {
        Filter {
            to: self.to.trim().to_owned(),
            status: self.status.trim().to_owned(),
        }
    }

    /// The `sent` id, only when it is one (it is echoed into the page).
    fn sent(&self) -> Option<&str> {
        MessageId::parse(&self.sent).map(|_| self.sent.as_str())
    }
}

/// Reads what one rendering shows and hands it to `render`.
async fn with_view<T>(
    ui: &Ui,
    filter: &Filter,
    highlight: Option<&str>,
    render: impl FnOnce(&View<'_>) -> T,
) -> T {
    let svc = &ui.app.service;
    let now = svc.now();
    let modems = ui.app.modems.snapshot();
    let signal = ui.sample_signal(now, &modems);
    let queue = svc
        .queue_summary()
        .await
        .unwrap_or(crate::service::QueueSummary {
            depth: 0,
            oldest: None,
        });
    let listed = svc
        .list_messages(ListMessages {
            to: (!filter.to.is_empty()).then(|| filter.to.clone()),
            status: (!filter.status.is_empty()).then(|| filter.status.clone()),
            limit: Some(LIST.to_owned()),
            before: None,
        })
        .await
        .map_err(|e| super::handlers::service_problem(e, Some(&ui.app)).detail);
    let traffic = ui.traffic().await;
    let inbound = if ui.inbound {
        Some(
            svc.list_inbound(crate::service::ListInbound {
                limit: Some(INBOUND_LIST.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(|e| super::handlers::service_problem(e, Some(&ui.app)).detail),
        )
    } else {
        None
    };
    let webhooks = svc.webhook_health().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "status page: webhook health unavailable");
        Vec::new()
    });
    let view = View {
        now,
        modems: &modems,
        signal: &signal,
        queue,
        messages: listed.as_deref().map_err(Clone::clone),
        traffic: &traffic,
        highlight,
        inbound: inbound.as_ref().map(|r| r.as_deref().map_err(Clone::clone)),
        webhooks: &webhooks,
    };
    render(&view)
}

async fn status_page(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let Some((_, s)) = ui.session(&headers) else {
        return to_sign_in();
    };
    let filter = q.filter();
    let sent = q.sent();
    let flash = sent.map(|id| {
        format!("Test OTP queued as {id}; its row below follows it (the code is not shown).")
    });
    let body = with_view(&ui, &filter, sent, |v| {
        pages::page(v, &s.csrf, &filter, flash.as_deref(), None)
    })
    .await;
    html(StatusCode::OK, body)
}

async fn state(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    if ui.session(&headers).is_none() {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "not-signed-in",
            "Not signed in",
            "the session is missing or has expired: sign in again at /ui/sign-in",
        )
        .into_response();
    }
    let filter = q.filter();
    let body = with_view(&ui, &filter, q.sent(), |v| {
        let mut frags = serde_json::Map::new();
        for (id, h) in pages::fragments(v) {
            frags.insert(id.to_owned(), json!(h));
        }
        json!({
            "fragments": frags,
            "busy": pages::busy(v),
            "updated": pages::when(v.now),
        })
    })
    .await;
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn sign_in_page(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_some() {
        return Redirect::to("/ui/").into_response();
    }
    html(StatusCode::OK, pages::sign_in(None))
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
}

fn refused_cross_site() -> Response {
    html(
        StatusCode::FORBIDDEN,
        pages::sign_in(Some(
            "This form was posted from another site and was refused. Open the page at this \
             address and try again.",
        )),
    )
}

async fn sign_in(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    // Without this a page elsewhere could sign a browser in with the attacker's token.
    if !session::same_origin(&headers) {
        return refused_cross_site();
    }
    let Ok(Form(form)) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::sign_in(Some("The form was incomplete: enter the API token.")),
        );
    };
    let Some(token) = ui.app.tokens.check(form.token.trim()) else {
        tracing::warn!("status page: sign-in with a token that is not accepted");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That token is not accepted. Use one of [api] tokens or <data dir>/api-token.",
            )),
        );
    };
    let id = ui.sessions.create(token, Instant::now());
    let mut resp = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        &id,
        ui.sessions.ttl(),
        ui.secure(&headers),
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The session of a state-changing request, when it is same-origin and carries the
/// session's CSRF value; otherwise the answer to give.
fn checked(ui: &Ui, headers: &HeaderMap, csrf: &str) -> Result<(String, Session), Box<Response>> {
    let Some((id, s)) = ui.session(headers) else {
        return Err(Box::new(to_sign_in()));
    };
    if !session::same_origin(headers) || !session::csrf_matches(&s, csrf) {
        tracing::warn!("status page: a form post without this session's CSRF value was refused");
        return Err(Box::new(html(
            StatusCode::FORBIDDEN,
            "<!doctype html><title>Refused</title><p>This form did not come from this page and \
             was refused. <a href=\"/ui/\">Back to the status page</a></p>"
                .to_owned(),
        )));
    }
    Ok((id, s))
}

async fn sign_out(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let (id, _) = match checked(&ui, &headers, &csrf) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    ui.sessions.remove(&id);
    let mut resp = to_sign_in();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(ui.secure(&headers))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct OtpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    to: String,
}

async fn test_otp(
    State(ui): State<Arc<Ui>>,
    headers: HeaderMap,
    form: Result<Form<OtpForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or(OtpForm {
        csrf: String::new(),
        to: String::new(),
    });
    let (_, s) = match checked(&ui, &headers, &form.csrf) {
        Ok(s) => s,
        Err(resp) => return *resp,
    };
    let result = send_test_otp(&ui, &s.token, form.to.trim()).await;
    match result {
        Ok(message_id) => Redirect::to(&format!("/ui/?sent={message_id}")).into_response(),
        Err(p) => {
            let status = p.status;
            let filter = Filter::default();
            let body = with_view(&ui, &filter, None, |v| {
                pages::page(
                    v,
                    &s.csrf,
                    &filter,
                    None,
                    Some(&format!("Not sent: {}", p.detail)),
                )
            })
            .await;
            html(status, body)
        }
    }
}

/// The form's OTP, through the API's own use case and limits (the per-token request budget is
/// charged to the session's token id, since the page never holds the token itself).
async fn send_test_otp(ui: &Ui, token: &TokenId, to: &str) -> Result<String, Problem> {
    let fail = |e| super::handlers::service_problem(e, Some(&ui.app));
    ui.app
        .service
        .check_token_rate(&format!("ui:{}", token.0))
        .map_err(fail)?;
    let answer = ui
        .app
        .service
        .create_otp(
            CreateOtp {
                to: to.to_owned(),
                ttl_seconds: None,
                code_length: None,
                template: None,
                origin: None,
                app_hash: None,
                on_pending: None,
            },
            None,
            |_| String::new(),
        )
        .await
        .map_err(fail)?;
    let created = match answer {
        crate::service::Answer::New(c) => c,
        // No idempotency key was given, so there is nothing to replay.
        crate::service::Answer::Replay(_) => {
            return Err(Problem::internal());
        }
    };
    ui.app.metrics.record_parts_accepted("otp", created.parts);
    tracing::info!(otp = %created.id, message = %created.message_id, "status page: test OTP queued");
    Ok(created.message_id)
}
