//! Extractors whose rejections are problem+json naming what is wrong.
//!
//! axum's own `Json`, `Path` and `Query` reject with plain text; these wrappers read the same
//! inputs and answer every failure as a [`Problem`] instead, with the JSON field path when a value
//! has the wrong type (via `serde_path_to_error`).

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::problem::{Problem, printable};

/// The body size limit in bytes (`api.max_body_bytes`), carried in the router state so a 413 can
/// say what the limit is.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
    BodyLimit: FromRef<S>,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        check_content_type(req.headers().get(header::CONTENT_TYPE))?;
        let limit = BodyLimit::from_ref(state).0;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(limit)
            } else {
                Problem::bad_request(format!("the body could not be read: {}", r.body_text()))
            }
        })?;
        decode(&bytes).map(ApiJson)
    }
}

/// The 413 problem.
pub fn too_large(limit: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "The request body is too large",
        format!("the body is larger than the limit of {limit} bytes (api.max_body_bytes)"),
    )
}

fn check_content_type(ct: Option<&axum::http::HeaderValue>) -> Result<(), Problem> {
    let unsupported = |detail: String| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported content type",
            detail,
        )
    };
    let Some(ct) = ct else {
        return Err(unsupported(
            "the body must be JSON: send the header Content-Type: application/json".into(),
        ));
    };
    let ct = ct.to_str().unwrap_or("");
    // Parameters such as `; charset=utf-8` are fine; the essence must be JSON (RFC 8259 §11) or a
    // structured `+json` type (RFC 6839 §3.1).
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(unsupported(format!(
            "the body must be JSON, but Content-Type is `{}`; send Content-Type: application/json",
            printable(ct)
        )))
    }
}

/// Parses a JSON body into `T`, mapping every failure to a problem that names the field.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::bad_request(
            "the body is empty; send a JSON object",
        ));
    }
    // serde would accept an array for a struct (fields by position), which no client means and
    // which gives confusing errors; every body of this API is an object.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<Value>(bytes) {
            Err(e) => json_error(".", &e),
            Ok(v) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "The request body has the wrong shape",
                format!(
                    "the body must be a JSON object ({{...}}), not {}",
                    match v {
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        Value::Null => "null",
                        Value::Object(_) => "an object",
                    }
                ),
            ),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(json_error(&path, &inner));
        }
    };
    de.end().map_err(|e| {
        Problem::bad_request(format!(
            "the body has data after the JSON value: {}",
            without_position(&e.to_string())
        ))
    })?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    let msg = humanize(&e.to_string());
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => Problem::bad_request(format!(
            "the body is not valid JSON: {msg} (line {}, column {})",
            e.line(),
            e.column()
        )),
        Category::Data => {
            let msg = without_position(&msg);
            if path == "." || path.is_empty() {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "The request body has the wrong shape",
                    msg,
                )
            } else {
                Problem::invalid_field(path, format!("`{path}`: {msg}"))
            }
        }
    }
}

/// serde's messages name Rust types; a client knows JSON types.
fn humanize(msg: &str) -> String {
    let mut out = msg.to_owned();
    for (rust, json) in [
        ("expected a string", "expected a JSON string"),
        ("expected u64", "expected a non-negative whole number"),
        ("expected u32", "expected a non-negative whole number"),
        ("expected u16", "expected a non-negative whole number"),
        ("expected u8", "expected a non-negative whole number"),
        ("expected i64", "expected a whole number"),
        ("expected usize", "expected a non-negative whole number"),
    ] {
        out = out.replace(rust, json);
    }
    if let Some(i) = out.find("expected struct ") {
        // "expected struct CreateOtpBody" says nothing to a client; the shape is an object.
        let end = out[i + 16..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map(|e| i + 16 + e)
            .unwrap_or(out.len());
        out.replace_range(i..end, "expected a JSON object");
    }
    out
}

fn without_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A path segment that names a resource id (`/v1/otp/{id}`), rejected as problem+json.
#[derive(Debug)]
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| IdPath(p.0))
            .map_err(|r| Problem::bad_request(format!("the id in the path: {}", r.body_text())))
    }
}

/// A query string of type `T`, rejected as problem+json naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let query = parts.uri.query().unwrap_or("");
        // Parse pairs ourselves so an error names the parameter, then hand serde a JSON object of
        // strings: the target type then validates keys (deny_unknown_fields) and parses values.
        let mut map = serde_json::Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k).map_err(Problem::bad_request)?;
            let v = percent_decode(v).map_err(Problem::bad_request)?;
            if map.contains_key(&k) {
                return Err(Problem::invalid_field(
                    &k,
                    format!("the query parameter `{}` is given twice", printable(&k)),
                ));
            }
            map.insert(k, Value::String(v));
        }
        let value: T = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            let msg = humanize(&e.into_inner().to_string());
            if path == "." || path.is_empty() {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-query",
                    "The query string is invalid",
                    format!("query string: {msg}"),
                )
            } else {
                Problem::invalid_field(&path, format!("query parameter `{path}`: {msg}"))
            }
        })?;
        Ok(ApiQuery(value))
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value (`+` is a space).
fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!(
                            "the query string has a bad percent escape in `{}`",
                            printable(s)
                        )
                    })?;
                out.push(hex);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "the query string is not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        to: String,
        ttl_seconds: Option<i64>,
    }

    fn check(input: &str, status: u16, detail_has: &str) {
        let p = decode::<Body>(input.as_bytes()).expect_err(input);
        assert_eq!(p.status.as_u16(), status, "{input}: {p:?}");
        assert!(
            p.detail.contains(detail_has),
            "{input}: detail {:?} lacks {detail_has:?}",
            p.detail
        );
    }

    #[test]
    fn decode_errors_name_the_problem() {
        check("", 400, "empty");
        check("{", 400, "not valid JSON");
        check("{\"to\": \"+1\"} x", 400, "data after");
        check("[]", 422, "JSON object");
        check("{\"to\": 5}", 422, "`to`");
        check(
            "{\"to\": \"+1\", \"ttl_seconds\": \"x\"}",
            422,
            "`ttl_seconds`",
        );
        check(
            "{\"to\": \"+1\", \"extra\": 1}",
            422,
            "unknown field `extra`",
        );
        check("{}", 422, "missing field `to`");
    }

    #[test]
    fn decode_accepts_good_bodies() {
        let b: Body = decode(b" {\"to\": \"+15551234567\", \"ttl_seconds\": 60}\n").unwrap();
        assert_eq!(b.to, "+15551234567");
        assert_eq!(b.ttl_seconds, Some(60));
    }

    #[test]
    fn content_types() {
        use axum::http::HeaderValue;
        let ok = |s: &'static str| check_content_type(Some(&HeaderValue::from_static(s))).is_ok();
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("Application/JSON"));
        assert!(ok("application/merge-patch+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(check_content_type(None).is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2B1555+x").unwrap(), "+1555 x");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
