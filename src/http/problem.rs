//! RFC 9457 problem details: the one shape every error of the API takes.
//!
//! Every failure, including axum's own rejections (bad JSON, wrong content type, unknown route,
//! wrong method, body too large), leaves the server as `application/problem+json`, so a client
//! needs exactly one error parser.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Prefix of every problem `type` URI; the slug after it names the kind of problem.
pub const TYPE_BASE: &str = "https://simgate.dev/problems/";

/// The media type of RFC 9457 §3.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error answer of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status; repeated in the body's `status` member as RFC 9457 §3.1.3 asks.
    pub status: StatusCode,
    /// The last segment of the `type` URI, stable across releases so clients can branch on it.
    pub slug: &'static str,
    /// A short summary of the kind of problem; the same for every occurrence of one slug.
    pub title: &'static str,
    /// What went wrong this time and how to fix it, naming the field concerned.
    pub detail: String,
    /// Seconds a client should wait before retrying; sent as `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
    /// Whether to send `WWW-Authenticate: Bearer` (RFC 6750 §3), which every 401 must carry.
    pub bearer_challenge: bool,
    /// Extension members (RFC 9457 §3.2), such as the offending `field`.
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// A problem with the given status, slug, title and detail.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after: None,
            bearer_challenge: false,
            extensions: Map::new(),
        }
    }

    /// 400: the request cannot be read at all (malformed JSON, bad header syntax).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request is malformed",
            detail,
        )
    }

    /// 422: the request was read but a field's value is not acceptable.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "A field of the request is invalid",
            detail,
        )
        .with_extension("field", Value::String(field.to_owned()))
    }

    /// 401 with the bearer challenge.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        );
        p.bearer_challenge = true;
        p
    }

    /// 404 for a route that does not exist.
    pub fn no_route(method: &str, path: &str) -> Self {
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-such-route",
            "No such route",
            format!(
                "there is no route {method} {}; see GET /v1/openapi.json for the API",
                printable(path)
            ),
        )
    }

    /// 500 for failures the client cannot fix; the detail never carries internals.
    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to handle the request; the error is in its log",
        )
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        // A `Retry-After: 0` invites a tight retry loop; one second is the smallest useful wait.
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// The `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_BASE}{}", self.slug)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), json!(self.type_uri()));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"simgate\""),
            );
        }
        resp
    }
}

/// Shortens and de-controls client-supplied text before it is echoed in a detail, so a problem
/// never reflects a megabyte or terminal escapes back.
pub fn printable(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_four_members_and_extensions() {
        let p = Problem::invalid_field("to", "too short");
        let b = p.body();
        assert_eq!(b["type"], "https://simgate.dev/problems/invalid-field");
        assert_eq!(b["status"], 422);
        assert_eq!(b["detail"], "too short");
        assert_eq!(b["field"], "to");
        assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()));
    }

    #[test]
    fn response_headers() {
        let r = Problem::unauthorized("no token").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let r = Problem::new(StatusCode::TOO_MANY_REQUESTS, "x", "y", "z")
            .with_retry_after(0)
            .into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn printable_truncates_and_strips_controls() {
        assert_eq!(printable("a\u{1b}[31mb"), "a?[31mb");
        let long = "x".repeat(200);
        assert_eq!(printable(&long).chars().count(), 81);
    }
}
