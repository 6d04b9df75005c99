//! The HTTP API (axum): routes, JSON DTOs, bearer auth, body limit, problem+json errors, OpenAPI.
//!
//! [`ROUTES`] is the one list of routes: the router is built from it and the OpenAPI document is
//! tested against it, so the two cannot drift apart. Every answer that is not a success is
//! `application/problem+json`, including unknown routes (404), wrong methods (405) and bodies
//! over `api.max_body_bytes` (413).
//!
//! **Invariant:** the only module that knows the API's JSON and HTTP; it calls [`crate::service`]
//! for every use case and never touches the store directly (except to read the queue depth for
//! `/metrics`). It never logs a code, a token or an OTP text.

pub mod auth;
pub mod dto;
mod events;
pub mod extract;
mod handlers;
pub mod hooks;
mod inbound;
pub mod openapi;
pub mod problem;
pub mod server;
pub mod twilio;
pub mod ui;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::metrics::Metrics;
use crate::service::Service;

pub use auth::{TokenId, Tokens};
pub use dto::ModemJson;
pub use extract::BodyLimit;
pub use problem::Problem;
pub use server::ConnLimits;

/// Where `/v1/modems`, `/readyz` and `/metrics` learn the modems' current state.
///
/// `serve` implements it over the drivers' `watch` receivers; keeping it a trait keeps the HTTP
/// layer free of driver internals.
pub trait ModemSource: Send + Sync + 'static {
    /// The current state of every configured modem.
    fn snapshot(&self) -> Vec<ModemJson>;
}

/// A fixed list; for a daemon without modems (every `/readyz` is 503) and for tests.
impl ModemSource for Vec<ModemJson> {
    fn snapshot(&self) -> Vec<ModemJson> {
        self.clone()
    }
}

/// The state every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub service: Arc<Service>,
    /// Accepted bearer tokens.
    pub tokens: Arc<Tokens>,
    /// The registry `/metrics` exposes; handlers count requests and rate-limit rejections in it.
    pub metrics: Arc<Metrics>,
    /// The modems' state for `/v1/modems`, `/readyz` and `/metrics`.
    pub modems: Arc<dyn ModemSource>,
    /// `api.max_body_bytes`, so a 413 can name the limit.
    pub body_limit: BodyLimit,
    /// The Twilio-compatible API (`[twilio]`); `None` when off.
    pub twilio: Option<Arc<twilio::TwilioApi>>,
    /// The identity-server adapters (`[supabase]`, `[zitadel]`); `None` when all are off.
    pub hooks: Option<Arc<hooks::Hooks>>,
}

impl axum::extract::FromRef<AppState> for BodyLimit {
    fn from_ref(s: &AppState) -> BodyLimit {
        s.body_limit
    }
}

/// What a route does; [`router`] maps each to its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `POST /v1/otp`.
    CreateOtp,
    /// `POST /v1/otp/verify`.
    VerifyByNumber,
    /// `GET /v1/otp/{id}`.
    GetOtp,
    /// `DELETE /v1/otp/{id}`.
    CancelOtp,
    /// `POST /v1/otp/{id}/verify`.
    VerifyOtp,
    /// `POST /v1/otp/{id}/resend`.
    ResendOtp,
    /// `POST /v1/messages`.
    SendText,
    /// `GET /v1/messages`.
    ListMessages,
    /// `GET /v1/messages/{id}`.
    GetMessage,
    /// `GET /v1/inbound`.
    ListInbound,
    /// `GET /v1/inbound/{id}`.
    GetInbound,
    /// `GET /v1/events`.
    ListEvents,
    /// `GET /v1/modems`.
    Modems,
    /// `GET /v1/openapi.json`.
    OpenApi,
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /metrics`.
    Metrics,
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template in the syntax axum and OpenAPI share (`{id}`).
    pub path: &'static str,
    /// Whether a bearer token is required (every `/v1` route).
    pub auth: bool,
    /// What it does.
    pub op: Op,
}

const fn r(method: &'static str, path: &'static str, op: Op) -> Route {
    Route {
        method,
        path,
        auth: path.len() > 4
            && path.as_bytes()[0] == b'/'
            && path.as_bytes()[1] == b'v'
            && path.as_bytes()[2] == b'1'
            && path.as_bytes()[3] == b'/',
        op,
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    r("POST", "/v1/otp", Op::CreateOtp),
    r("POST", "/v1/otp/verify", Op::VerifyByNumber),
    r("GET", "/v1/otp/{id}", Op::GetOtp),
    r("DELETE", "/v1/otp/{id}", Op::CancelOtp),
    r("POST", "/v1/otp/{id}/verify", Op::VerifyOtp),
    r("POST", "/v1/otp/{id}/resend", Op::ResendOtp),
    r("POST", "/v1/messages", Op::SendText),
    r("GET", "/v1/messages", Op::ListMessages),
    r("GET", "/v1/messages/{id}", Op::GetMessage),
    r("GET", "/v1/inbound", Op::ListInbound),
    r("GET", "/v1/inbound/{id}", Op::GetInbound),
    r("GET", "/v1/events", Op::ListEvents),
    r("GET", "/v1/modems", Op::Modems),
    r("GET", "/v1/openapi.json", Op::OpenApi),
    r("GET", "/healthz", Op::Health),
    r("GET", "/readyz", Op::Ready),
    r("GET", "/metrics", Op::Metrics),
];

fn method_router(op: Op, filter: MethodFilter) -> MethodRouter<AppState> {
    use handlers as h;
    match op {
        Op::CreateOtp => on(filter, h::create_otp),
        Op::VerifyByNumber => on(filter, h::verify_by_number),
        Op::GetOtp => on(filter, h::get_otp),
        Op::CancelOtp => on(filter, h::cancel_otp),
        Op::VerifyOtp => on(filter, h::verify_otp),
        Op::ResendOtp => on(filter, h::resend_otp),
        Op::SendText => on(filter, h::send_text),
        Op::ListMessages => on(filter, h::list_messages),
        Op::GetMessage => on(filter, h::get_message),
        Op::ListInbound => on(filter, inbound::list_inbound),
        Op::GetInbound => on(filter, inbound::get_inbound),
        Op::ListEvents => on(filter, events::list_events),
        Op::Modems => on(filter, h::modems),
        Op::OpenApi => on(filter, h::openapi),
        Op::Health => on(filter, h::healthz),
        Op::Ready => on(filter, h::readyz),
        Op::Metrics => on(filter, h::metrics),
    }
}

fn filter_of(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        other => panic!("ROUTES uses unsupported method {other}"),
    }
}

/// Builds the API.
pub fn router(state: AppState) -> Router {
    let mut paths: Vec<&'static str> = Vec::new();
    for route in ROUTES {
        if !paths.contains(&route.path) {
            paths.push(route.path);
        }
    }
    let mut app: Router<AppState> = Router::new();
    for path in paths {
        let mut mr: Option<MethodRouter<AppState>> = None;
        let mut auth = false;
        for route in ROUTES.iter().filter(|r| r.path == path) {
            auth |= route.auth;
            let one = method_router(route.op, filter_of(route.method));
            mr = Some(match mr {
                None => one,
                Some(m) => m.merge(one),
            });
        }
        let Some(mut mr) = mr else { continue };
        mr = mr.fallback(handlers::method_not_allowed);
        if auth {
            mr = mr.route_layer(middleware::from_fn_with_state(
                state.clone(),
                handlers::require_token,
            ));
        }
        app = app.route(path, mr);
    }
    if let Some(t) = twilio::routes(&state) {
        app = app.merge(t);
    }
    if let Some(h) = hooks::routes(&state) {
        app = app.merge(h);
    }
    app.fallback(handlers::no_route)
        .layer(DefaultBodyLimit::max(state.body_limit.0))
        .layer(middleware::from_fn(contain_panics))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Runs the rest of the stack in its own task, so a bug that panics in a handler answers 500
/// problem+json (and is logged) instead of dropping the connection without an answer.
async fn contain_panics(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => {
            // The panic payload is our own message; it never carries a code or a token.
            tracing::error!(error = %e, "request handler panicked");
            Problem::internal().into_response()
        }
    }
}

/// Serves the API on `listener` with the default [`ConnLimits`] until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, ConnLimits::default(), shutdown).await
}

/// Serves the API on `listener` until `shutdown` completes, then gives requests in flight
/// [`server::SHUTDOWN_GRACE`] to finish; every connection is bounded by `limits`
/// ([`server`] says how).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(state), limits, shutdown).await
}

/// Counts every request by route template and status, and logs it at debug level without the
/// query string (which may hold a phone number) or any header (which may hold the token).
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    state.metrics.record_http(&route, status);
    tracing::debug!(%method, %route, status, elapsed_ms = started.elapsed().as_millis() as u64, "http");
    // Answers carry per-request data (codes are never in them, but ids and numbers are).
    if !resp.headers().contains_key(header::CACHE_CONTROL) {
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The `Allow` value for a path, from [`ROUTES`]; `None` when no route matches the path.
pub fn allowed_methods(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = ROUTES
        .iter()
        .filter(|r| template_matches(r.path, path))
        .map(|r| r.method)
        .collect();
    if methods.is_empty() {
        return None;
    }
    // A static segment wins over a parameter in the router (`/v1/otp/verify` is never an id), so
    // only the most specific template's methods apply.
    let best = ROUTES
        .iter()
        .filter(|r| template_matches(r.path, path))
        .map(|r| r.path.matches('{').count())
        .min()
        .unwrap_or(0);
    methods = ROUTES
        .iter()
        .filter(|r| template_matches(r.path, path) && r.path.matches('{').count() == best)
        .map(|r| r.method)
        .collect();
    methods.dedup();
    Some(methods.join(", "))
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

impl IntoResponse for crate::service::ServiceError {
    fn into_response(self) -> Response {
        handlers::service_problem(self, None).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_is_required_exactly_under_v1() {
        for route in ROUTES {
            assert_eq!(route.auth, route.path.starts_with("/v1/"), "{route:?}");
        }
    }

    #[test]
    fn allow_header_follows_the_table() {
        assert_eq!(allowed_methods("/v1/otp").as_deref(), Some("POST"));
        assert_eq!(
            allowed_methods("/v1/otp/otp_123").as_deref(),
            Some("GET, DELETE")
        );
        assert_eq!(allowed_methods("/v1/otp/verify").as_deref(), Some("POST"));
        assert_eq!(
            allowed_methods("/v1/messages").as_deref(),
            Some("POST, GET")
        );
        assert_eq!(allowed_methods("/nope"), None);
        assert_eq!(allowed_methods("/v1/otp/"), None);
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_problem() {
        use tower::ServiceExt;
        let app: Router = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("bug");
                    }
                    "unreachable"
                }),
            )
            .layer(middleware::from_fn(contain_panics));
        let resp = app
            .oneshot(
                Request::builder()
                    .uri("/boom")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], problem::PROBLEM_JSON);
    }

    #[test]
    fn every_route_is_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    !(a.method == b.method && a.path == b.path),
                    "duplicate {a:?}"
                );
            }
        }
    }
}
