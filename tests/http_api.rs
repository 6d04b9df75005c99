//! The HTTP API over a real loopback server with a real SQLite store in a temp dir.
//!
//! No modem runs here: messages stay queued, which is all these tests need. Codes are known to the
//! test because the service is built with an injected code source (the production path draws from
//! the OS CSPRNG); time is an injected clock the test can move past an expiry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use simgate::clock::Clock;
use simgate::http::{self, AppState, BodyLimit, ModemJson, Tokens};
use simgate::limits::{Limits, RateSettings};
use simgate::metrics::Metrics;
use simgate::otp::{CodeLength, Keys};
use simgate::service::{Deps, Service, Settings};
use simgate::store::{Durability, Store, StoreOptions};

const TOKEN: &str = "test-token-0123456789";
const OTHER_TOKEN: &str = "second-token-abcdef";
const BODY_LIMIT: usize = 16 * 1024;

/// A running API on 127.0.0.1 with its own store, clock and code source.
struct Server {
    /// `http://127.0.0.1:<port>`.
    base: String,
    /// Milliseconds added to the real clock, moved by [`Server::advance`].
    offset: Arc<AtomicI64>,
    /// When non-zero, the clock stands still at this instant (unix ms).
    frozen: Arc<AtomicI64>,
    /// Codes the next OTPs will get, in order.
    codes: Arc<Mutex<VecDeque<String>>>,
    /// Ends the server.
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The thread running the server's runtime.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Keeps the data directory alive.
    _dir: tempfile::TempDir,
}

impl Server {
    /// A server with one ready modem, so answers carry no "no modem is ready" warning.
    fn start() -> Server {
        Server::start_with(
            vec![ready_modem()],
            RateSettings::default(),
            Settings::default(),
        )
    }

    fn start_with(modems: Vec<ModemJson>, rates: RateSettings, settings: Settings) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let offset = Arc::new(AtomicI64::new(0));
        let codes: Arc<Mutex<VecDeque<String>>> = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let db = dir.path().join("simgate.db");
        let frozen = Arc::new(AtomicI64::new(0));
        let (o, c, f) = (offset.clone(), codes.clone(), frozen.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = Store::open(
                    &db,
                    StoreOptions {
                        durability: Durability::Normal,
                        ..StoreOptions::default()
                    },
                )
                .unwrap();
                let clock_offset = o.clone();
                let clock_frozen = f.clone();
                let service = Service::new(Deps {
                    store,
                    keys: Keys::from_bytes([1; 32], [2; 32]),
                    limits: Arc::new(Limits::new(&rates)),
                    wake: Arc::new(tokio::sync::Notify::new()),
                    settings,
                    clock: Clock::from_fn(move || {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_millis() as i64;
                        // A frozen clock (non-zero) puts many requests in one millisecond.
                        match clock_frozen.load(Ordering::SeqCst) {
                            0 => now + clock_offset.load(Ordering::SeqCst),
                            at => at,
                        }
                    }),
                    codes: Arc::new(move |len: CodeLength| {
                        c.lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or_else(|| "9".repeat(len.get()))
                    }),
                });
                let state = AppState {
                    service: Arc::new(service),
                    tokens: Arc::new(Tokens::new([TOKEN, OTHER_TOKEN])),
                    metrics: Arc::new(Metrics::new()),
                    modems: Arc::new(modems),
                    body_limit: BodyLimit(BODY_LIMIT),
                    twilio: None,
                    hooks: None,
                };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                http::serve(listener, state, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Server {
            base: format!("http://{addr}"),
            offset,
            frozen,
            codes,
            shutdown: Some(tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The next OTP created or resent gets this code.
    fn next_code(&self, code: &str) {
        self.codes.lock().unwrap().push_back(code.to_owned());
    }

    fn advance(&self, d: Duration) {
        self.offset
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    fn freeze(&self, at_ms: i64) {
        self.frozen.store(at_ms, Ordering::SeqCst);
    }

    fn call(&self, req: Req) -> Resp {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut b = ureq::http::Request::builder()
            .method(req.method)
            .uri(format!("{}{}", self.base, req.path));
        if let Some(t) = req.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = req.content_type {
            b = b.header("content-type", ct);
        }
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        let resp = agent.run(b.body(req.body).unwrap()).unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut resp = resp;
        let text = resp.body_mut().read_to_string().unwrap();
        Resp {
            status,
            headers,
            text,
        }
    }

    fn get(&self, path: &str) -> Resp {
        self.call(Req::new("GET", path))
    }

    fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Req::new("POST", path).json(&body))
    }

    fn create_otp(&self, to: &str, code: &str) -> Value {
        self.next_code(code);
        let r = self.post("/v1/otp", json!({"to": to}));
        assert_eq!(r.status, 202, "{}", r.text);
        r.json()
    }

    fn verify(&self, id: &str, code: &str) -> Value {
        let r = self.post(&format!("/v1/otp/{id}/verify"), json!({"code": code}));
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    }

    /// A verify of an OTP that has ended: a problem with `http` naming the final `status`.
    fn verify_ended(&self, id: &str, code: &str, http: u16, status: &str) -> Value {
        let r = self.post(&format!("/v1/otp/{id}/verify"), json!({"code": code}));
        let p = r.problem(http);
        assert_eq!(p["otp_status"], status, "{p}");
        assert_eq!(p["id"], id, "{p}");
        assert_eq!(p["verified"], false, "{p}");
        assert_eq!(
            p["type"],
            format!(
                "https://simgate.dev/problems/{}",
                match status {
                    "approved" => "otp-already-approved",
                    "expired" => "otp-expired",
                    "canceled" => "otp-canceled",
                    _ => "otp-attempts-exhausted",
                }
            ),
            "{p}"
        );
        // The final state stays visible.
        assert_eq!(self.get(&format!("/v1/otp/{id}")).json()["status"], status);
        p
    }

    fn assert_healthy(&self) {
        let r = self.call(Req::new("GET", "/healthz").no_token());
        assert_eq!(r.status, 200);
        assert_eq!(r.json(), json!({"status": "ok"}));
    }
}

fn ready_modem() -> ModemJson {
    ModemJson {
        id: "modem0".into(),
        device: "/dev/ttyUSB0".into(),
        state: "ready".into(),
        ..ModemJson::default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Req {
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &'static str, path: &str) -> Req {
        Req {
            method,
            path: path.to_owned(),
            token: Some(TOKEN),
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    fn json(mut self, v: &Value) -> Req {
        self.content_type = Some("application/json");
        self.body = serde_json::to_vec(v).unwrap();
        self
    }
    fn raw(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Req {
        self.content_type = content_type;
        self.body = body.into();
        self
    }
    fn token(mut self, t: &'static str) -> Req {
        self.token = Some(t);
        self
    }
    fn no_token(mut self) -> Req {
        self.token = None;
        self
    }
    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.push((k, v.to_owned()));
        self
    }
}

struct Resp {
    status: u16,
    headers: ureq::http::HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts an RFC 9457 problem with this status and returns its body.
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let p = self.json();
        assert_eq!(p["status"], status, "{p}");
        assert!(
            p["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("https://simgate.dev/problems/")),
            "{p}"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        assert!(p["detail"].as_str().is_some_and(|t| !t.is_empty()), "{p}");
        p
    }
}

const TO: &str = "+15551234567";
const UNKNOWN_OTP: &str = "otp_0123456789abcdef0123456789abcdef";
const UNKNOWN_MSG: &str = "msg_0123456789abcdef0123456789abcdef";

#[test]
fn v1_routes_need_a_valid_bearer_token() {
    let s = Server::start();
    for req in [
        Req::new("POST", "/v1/otp")
            .json(&json!({"to": TO}))
            .no_token(),
        Req::new("POST", "/v1/otp")
            .json(&json!({"to": TO}))
            .token("wrong"),
        Req::new("GET", "/v1/messages").no_token(),
        Req::new("GET", "/v1/modems").token("test-token-012345678"),
        Req::new("GET", "/v1/openapi.json").no_token(),
        Req::new("GET", "/v1/messages")
            .no_token()
            .header("authorization", "Basic dGVzdA=="),
        Req::new("GET", "/v1/messages")
            .no_token()
            .header("authorization", TOKEN),
    ] {
        let r = s.call(req);
        let p = r.problem(401);
        assert!(
            r.header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{p}"
        );
        assert!(!r.text.contains(TOKEN));
    }
    // Either configured token works; health, readiness and metrics need none.
    assert_eq!(
        s.call(Req::new("GET", "/v1/modems").token(OTHER_TOKEN))
            .status,
        200
    );
    assert_eq!(s.call(Req::new("GET", "/v1/modems")).status, 200);
    s.assert_healthy();
    assert_eq!(s.call(Req::new("GET", "/metrics").no_token()).status, 200);
    // This server's modem is ready; one without modems is not.
    assert_eq!(s.call(Req::new("GET", "/readyz").no_token()).status, 200);
}

/// A bad request, the status it must get and a piece of the detail that proves it says why.
struct Bad {
    req: Req,
    status: u16,
    detail_has: &'static str,
}

fn bad(req: Req, status: u16, detail_has: &'static str) -> Bad {
    Bad {
        req,
        status,
        detail_has,
    }
}

fn post_otp(body: &str) -> Req {
    Req::new("POST", "/v1/otp").raw(Some("application/json"), body)
}

fn post_msg(body: &str) -> Req {
    Req::new("POST", "/v1/messages").raw(Some("application/json"), body)
}

#[test]
fn bad_inputs_get_a_problem_that_says_why_and_the_server_stays_healthy() {
    let s = Server::start();
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let long_template = format!(
        "{{\"to\": \"{TO}\", \"template\": \"{}{{code}}\"}}",
        "x".repeat(500)
    );
    let huge = format!(
        "{{\"to\": \"{TO}\", \"template\": \"{}\"}}",
        "x".repeat(20_000)
    );
    let long_text = format!("{{\"to\": \"{TO}\", \"text\": \"{}\"}}", "x".repeat(2000));
    let cases = vec![
        // Not JSON, or not the right JSON shape.
        bad(post_otp("{"), 400, "not valid JSON"),
        bad(post_otp(""), 400, "empty"),
        bad(post_otp("[]"), 422, "JSON object"),
        bad(post_otp("\"+15551234567\""), 422, "JSON object"),
        bad(post_otp(&nested), 400, "not valid JSON"),
        bad(
            Req::new("POST", "/v1/otp").raw(Some("application/json"), vec![b'{', 0xff, 0xfe, b'}']),
            400,
            "not valid JSON",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\"}} trailing")),
            400,
            "after the JSON",
        ),
        // Wrong types, named.
        bad(post_otp("{\"to\": 15551234567}"), 422, "`to`"),
        bad(post_otp("{\"to\": null}"), 422, "`to`"),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"ttl_seconds\": \"300\"}}")),
            422,
            "`ttl_seconds`",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"ttl_seconds\": 1.5}}")),
            422,
            "whole number",
        ),
        bad(
            post_otp(&format!(
                "{{\"to\": \"{TO}\", \"code_length\": 18446744073709551616}}"
            )),
            422,
            "`code_length`",
        ),
        // Unknown, missing and duplicate fields.
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"codeLength\": 6}}")),
            422,
            "unknown field `codeLength`",
        ),
        bad(post_otp("{}"), 422, "missing field `to`"),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"to\": \"{TO}\"}}")),
            422,
            "duplicate field",
        ),
        // Values out of range.
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"ttl_seconds\": -5}}")),
            422,
            "ttl_seconds: must be between 30 and 86400",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"ttl_seconds\": 10}}")),
            422,
            "between 30",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"ttl_seconds\": 999999999}}")),
            422,
            "between 30",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"code_length\": 1000}}")),
            422,
            "code_length: must be between 4 and 10",
        ),
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\", \"code_length\": 3}}")),
            422,
            "between 4 and 10",
        ),
        bad(
            post_otp(&format!(
                "{{\"to\": \"{TO}\", \"template\": \"no code here\"}}"
            )),
            422,
            "{code}",
        ),
        bad(
            post_otp(&format!(
                "{{\"to\": \"{TO}\", \"template\": \"{{code}} {{nope}}\"}}"
            )),
            422,
            "unknown placeholder",
        ),
        bad(post_otp(&long_template), 422, "at most 459"),
        bad(
            post_otp(&format!(
                "{{\"to\": \"{TO}\", \"origin\": \"https://example.com/login\"}}"
            )),
            422,
            "origin",
        ),
        // Bad numbers, each with advice.
        bad(
            post_otp("{\"to\": \"+1 555 123 4567\"}"),
            422,
            "remove spaces",
        ),
        bad(
            post_otp("{\"to\": \"5551234567\"}"),
            422,
            "add the country code",
        ),
        bad(
            post_otp("{\"to\": \"+1234567890123456\"}"),
            422,
            "E.164 numbers have at most 15",
        ),
        bad(post_otp("{\"to\": \"+05551234567\"}"), 422, "starts with 0"),
        bad(post_otp("{\"to\": \"\"}"), 422, "empty"),
        bad(post_otp("{\"to\": \"+1555\"}"), 422, "too short"),
        // Content type and size.
        bad(
            Req::new("POST", "/v1/otp").raw(Some("text/plain"), format!("{{\"to\": \"{TO}\"}}")),
            415,
            "Content-Type",
        ),
        bad(
            Req::new("POST", "/v1/otp").raw(None, format!("{{\"to\": \"{TO}\"}}")),
            415,
            "Content-Type: application/json",
        ),
        bad(post_otp(&huge), 413, "16384 bytes"),
        // Headers.
        bad(
            post_otp(&format!("{{\"to\": \"{TO}\"}}")).header("idempotency-key", &"k".repeat(300)),
            422,
            "Idempotency-Key",
        ),
        // Texts.
        bad(
            post_msg(&format!("{{\"to\": \"{TO}\", \"text\": \"\"}}")),
            422,
            "text: is empty",
        ),
        bad(
            post_msg(&format!("{{\"to\": \"{TO}\", \"text\": \"   \"}}")),
            422,
            "text: is empty",
        ),
        bad(post_msg(&long_text), 422, "at most 10"),
        bad(
            post_msg(&format!("{{\"to\": \"{TO}\"}}")),
            422,
            "missing field `text`",
        ),
        bad(
            post_msg(&format!("{{\"to\": \"{TO}\", \"text\": 5}}")),
            422,
            "`text`",
        ),
        // Verification input.
        bad(
            Req::new("POST", "/v1/otp/otp_123/verify").json(&json!({"code": "123456"})),
            400,
            "otp_ followed by 32",
        ),
        bad(
            Req::new("POST", &format!("/v1/otp/{UNKNOWN_OTP}/verify"))
                .json(&json!({"code": "123456"})),
            404,
            "does not exist",
        ),
        bad(
            Req::new("POST", &format!("/v1/otp/{UNKNOWN_OTP}/verify"))
                .json(&json!({"code": 123456})),
            422,
            "`code`",
        ),
        bad(
            Req::new("POST", &format!("/v1/otp/{UNKNOWN_OTP}/verify"))
                .json(&json!({"code": "12ab56"})),
            422,
            "digits only",
        ),
        bad(
            Req::new("POST", "/v1/otp/verify").json(&json!({"to": TO, "code": "123456"})),
            404,
            "no pending",
        ),
        bad(
            Req::new("POST", "/v1/otp/verify").json(&json!({"to": "+1", "code": "123456"})),
            422,
            "to: too short",
        ),
        // Ids.
        bad(
            Req::new("GET", "/v1/otp/otp_NOTHEX"),
            400,
            "32 lowercase hex",
        ),
        bad(
            Req::new("GET", &format!("/v1/otp/{UNKNOWN_MSG}")),
            400,
            "not an OTP id",
        ),
        bad(
            Req::new("GET", &format!("/v1/messages/{UNKNOWN_MSG}")),
            404,
            "does not exist",
        ),
        bad(
            Req::new("POST", &format!("/v1/otp/{UNKNOWN_OTP}/resend")),
            404,
            "does not exist",
        ),
        bad(
            Req::new("DELETE", &format!("/v1/otp/{UNKNOWN_OTP}")),
            404,
            "does not exist",
        ),
        // Query strings.
        bad(
            Req::new("GET", "/v1/messages?limit=0"),
            422,
            "limit: must be between 1 and 1000",
        ),
        bad(
            Req::new("GET", "/v1/messages?limit=abc"),
            422,
            "not a whole number",
        ),
        bad(
            Req::new("GET", "/v1/messages?status=lost"),
            422,
            "use one of queued",
        ),
        bad(
            Req::new("GET", "/v1/messages?sort=asc"),
            422,
            "unknown field `sort`",
        ),
        bad(Req::new("GET", "/v1/messages?to=%2B1"), 422, "too short"),
        bad(
            Req::new("GET", "/v1/messages?before=yesterday"),
            422,
            "RFC 3339",
        ),
        bad(
            Req::new("GET", "/v1/messages?limit=1&limit=2"),
            422,
            "twice",
        ),
        bad(Req::new("GET", "/v1/messages?to=%zz"), 400, "percent"),
        // Routes and methods.
        bad(
            Req::new("PUT", "/v1/otp").json(&json!({"to": TO})),
            405,
            "use POST",
        ),
        bad(Req::new("PATCH", "/v1/messages"), 405, "use POST, GET"),
        bad(
            Req::new("DELETE", &format!("/v1/messages/{UNKNOWN_MSG}")),
            405,
            "use GET",
        ),
        bad(Req::new("GET", "/v1/otp/verify"), 405, "use POST"),
        bad(Req::new("GET", "/v1/nope"), 404, "no route GET /v1/nope"),
        bad(Req::new("GET", "/"), 404, "openapi.json"),
        bad(Req::new("POST", "/healthz"), 405, "use GET"),
    ];
    assert!(cases.len() >= 30);
    for case in cases {
        let what = format!("{} {}", case.req.method, case.req.path);
        let r = s.call(case.req);
        assert_eq!(r.status, case.status, "{what}: {}", r.text);
        let p = r.problem(case.status);
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(case.detail_has),
            "{what}: detail {detail:?} lacks {:?}",
            case.detail_has
        );
        if case.status == 405 {
            assert!(r.header("allow").is_some(), "{what}: no Allow header");
        }
        s.assert_healthy();
    }
    // None of those queued anything.
    let list = s.get("/v1/messages").json();
    assert_eq!(list["messages"], json!([]));
}

#[test]
fn idempotent_retry_returns_the_same_answer_and_sends_once() {
    let s = Server::start();
    let send = |body: Value, token: &'static str, key: &str| {
        s.call(
            Req::new("POST", "/v1/otp")
                .json(&body)
                .token(token)
                .header("idempotency-key", key),
        )
    };
    let first = send(json!({"to": TO}), TOKEN, "key-1");
    assert_eq!(first.status, 202, "{}", first.text);
    // More retries than the number's limit (3/10m) allows new codes: a retry is not a new code.
    for _ in 0..5 {
        let again = send(json!({"to": TO}), TOKEN, "key-1");
        assert_eq!(again.status, 202, "{}", again.text);
        assert_eq!(
            again.text, first.text,
            "a retry gets the first answer byte for byte"
        );
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    // Same key, other body: refused, and nothing new is queued.
    let other = send(json!({"to": TO, "code_length": 8}), TOKEN, "key-1");
    let p = other.problem(422);
    assert!(
        p["detail"].as_str().unwrap().contains("different request"),
        "{p}"
    );
    // Keys belong to a token: the same key from another client is a new request.
    let theirs = send(json!({"to": "+15557654321"}), OTHER_TOKEN, "key-1");
    assert_eq!(theirs.status, 202);
    assert_ne!(theirs.json()["id"], first.json()["id"]);

    let msgs = s.get(&format!("/v1/messages?to=%2B{}", &TO[1..])).json();
    assert_eq!(msgs["messages"].as_array().unwrap().len(), 1, "{msgs}");

    // The same for plain texts.
    let t1 = s.call(
        Req::new("POST", "/v1/messages")
            .json(&json!({"to": TO, "text": "hello"}))
            .header("idempotency-key", "t-1"),
    );
    let t2 = s.call(
        Req::new("POST", "/v1/messages")
            .json(&json!({"to": TO, "text": "hello"}))
            .header("idempotency-key", "t-1"),
    );
    assert_eq!(t1.status, 202);
    assert_eq!(t1.text, t2.text);
    let t3 = s.call(
        Req::new("POST", "/v1/messages")
            .json(&json!({"to": TO, "text": "hello!"}))
            .header("idempotency-key", "t-1"),
    );
    t3.problem(422);
}

#[test]
fn per_number_limit_answers_429_with_retry_after() {
    let s = Server::start();
    // The default otp_per_number is 3/10m. Superseding, so each request is a new OTP and no
    // per-OTP resend cap is involved.
    let fresh = json!({"to": TO, "on_pending": "supersede"});
    for _ in 0..3 {
        assert_eq!(s.post("/v1/otp", fresh.clone()).status, 202);
    }
    let r = s.post("/v1/otp", fresh);
    let p = r.problem(429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert_eq!(p["limit"], "otp_per_number");
    assert!(
        p["detail"].as_str().unwrap().contains("otp_per_number"),
        "{p}"
    );
    // Other numbers are not affected.
    assert_eq!(s.post("/v1/otp", json!({"to": "+15550000001"})).status, 202);
    let metrics = s.call(Req::new("GET", "/metrics").no_token()).text;
    assert!(
        metrics.contains("simgate_rate_limit_rejections_total{limit=\"otp_per_number\"} 1"),
        "{metrics}"
    );
}

#[test]
fn right_code_approves_once_then_is_refused() {
    let s = Server::start();
    let otp = s.create_otp(TO, "424242");
    let id = otp["id"].as_str().unwrap();
    assert_eq!(otp["status"], "pending");
    assert_eq!(otp["to"], TO);
    assert!(otp["message_id"].as_str().unwrap().starts_with("msg_"));
    assert!(otp["expires_at"].as_str().unwrap().ends_with('Z'));

    let wrong = s.verify(id, "111111");
    assert_eq!(
        wrong,
        json!({"id": id, "status": "pending", "verified": false, "attempts_remaining": 4})
    );
    let right = s.verify(id, "424242");
    assert_eq!(
        right,
        json!({"id": id, "status": "approved", "verified": true, "attempts_remaining": 4})
    );
    // A second verify is refused as a conflict, without counting an attempt.
    let again = s.verify_ended(id, "424242", 409, "approved");
    assert_eq!(again["attempts_remaining"], 4);
    assert!(
        again["detail"]
            .as_str()
            .unwrap()
            .contains("already approved"),
        "{again}"
    );

    let view = s.get(&format!("/v1/otp/{id}")).json();
    assert_eq!(view["status"], "approved");
    // The log never shows the code.
    let msg = s.get(&format!(
        "/v1/messages/{}",
        otp["message_id"].as_str().unwrap()
    ));
    assert_eq!(msg.status, 200);
    assert!(!msg.text.contains("424242"), "{}", msg.text);
    assert!(msg.json()["text"].as_str().unwrap().contains("******"));
    assert!(!view.to_string().contains("424242"));
}

#[test]
fn five_wrong_codes_end_the_otp() {
    let s = Server::start();
    let otp = s.create_otp(TO, "123456");
    let id = otp["id"].as_str().unwrap();
    for left in (0..5).rev() {
        let v = s.verify(id, "000000");
        assert_eq!(v["verified"], false);
        assert_eq!(v["attempts_remaining"], left);
        let want = if left == 0 {
            "max_attempts_reached"
        } else {
            "pending"
        };
        assert_eq!(v["status"], want);
    }
    // After the last attempt even the right code is refused, as a conflict.
    let p = s.verify_ended(id, "123456", 409, "max_attempts_reached");
    assert_eq!(p["attempts_remaining"], 0);
}

#[test]
fn expired_code_answers_expired_not_404() {
    let s = Server::start();
    s.next_code("777777");
    let r = s.post("/v1/otp", json!({"to": TO, "ttl_seconds": 60}));
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    s.advance(Duration::from_secs(61));
    // 410 Gone: the OTP exists (not 404) but its codes never verify again.
    s.verify_ended(&id, "777777", 410, "expired");
    // Resending an expired OTP is a conflict, not a new code.
    s.call(Req::new("POST", &format!("/v1/otp/{id}/resend")))
        .problem(409);
}

#[test]
fn verify_by_number_checks_the_newest_pending_code() {
    let s = Server::start();
    let first = s.create_otp(TO, "111111");
    s.next_code("222222");
    let second = s.post("/v1/otp", json!({"to": TO, "on_pending": "supersede"}));
    assert_eq!(second.status, 202, "{}", second.text);
    let second = second.json();
    assert_ne!(second["id"], first["id"]);
    // A new OTP with on_pending = supersede cancels the number's pending one.
    let old = s
        .get(&format!("/v1/otp/{}", first["id"].as_str().unwrap()))
        .json();
    assert_eq!(old["status"], "canceled");
    assert_eq!(old["message"]["status"], "canceled");
    let r = s.post("/v1/otp/verify", json!({"to": TO, "code": "111111"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["verified"], false);
    let r = s.post("/v1/otp/verify", json!({"to": TO, "code": "222222"}));
    assert_eq!(
        r.json(),
        json!({"id": second["id"], "status": "approved", "verified": true, "attempts_remaining": 4})
    );
}

#[test]
fn resend_adds_a_code_and_cancel_ends_the_otp() {
    let s = Server::start();
    s.next_code("135790");
    let created = s.post(
        "/v1/otp",
        json!({"to": TO, "template": "Code {code}", "origin": "example.com"}),
    );
    assert_eq!(created.status, 202, "{}", created.text);
    let otp = created.json();
    let id = otp["id"].as_str().unwrap();
    s.next_code("246802");
    let r = s.call(Req::new("POST", &format!("/v1/otp/{id}/resend")));
    assert_eq!(r.status, 202, "{}", r.text);
    let resent = r.json();
    assert_eq!(resent["id"], id);
    assert_ne!(resent["message_id"], otp["message_id"]);
    assert_eq!(resent["expires_at"], otp["expires_at"]);
    // The resent text keeps the wording and the WebOTP line, with the new code masked.
    let m = s
        .get(&format!(
            "/v1/messages/{}",
            resent["message_id"].as_str().unwrap()
        ))
        .json();
    assert_eq!(m["text"], "Code ******\n\n@example.com #******");
    assert_eq!(s.get(&format!("/v1/otp/{id}")).json()["texts"], 2);
    // The first code still works after a resend.
    assert_eq!(s.verify(id, "135790")["verified"], true);

    let other = s.create_otp("+15557654321", "112233");
    let oid = other["id"].as_str().unwrap();
    let c = s.call(Req::new("DELETE", &format!("/v1/otp/{oid}")));
    assert_eq!(c.status, 200, "{}", c.text);
    assert_eq!(c.json(), json!({"id": oid, "status": "canceled"}));
    s.verify_ended(oid, "112233", 409, "canceled");
    // Canceling an approved OTP is a conflict.
    s.call(Req::new("DELETE", &format!("/v1/otp/{id}")))
        .problem(409);
}

#[test]
fn texts_are_queued_listed_and_warned_about() {
    let s = Server::start();
    let r = s.post("/v1/messages", json!({"to": TO, "text": "hello"}));
    assert_eq!(r.status, 202);
    let q = r.json();
    assert_eq!(q["status"], "queued");
    assert_eq!(q["parts"], 1);
    assert!(q.get("warnings").is_none());
    let id = q["id"].as_str().unwrap();
    // Paging is by creation time; keep the two texts apart on the clock.
    s.advance(Duration::from_secs(1));

    let long = "é".repeat(100) + &"x".repeat(100);
    let r = s.post("/v1/messages", json!({"to": "+15557654321", "text": long}));
    assert_eq!(r.status, 202);
    let w = r.json();
    assert!(w["parts"].as_u64().unwrap() >= 2);
    assert!(
        w["warnings"][0].as_str().unwrap().contains("SMS parts"),
        "{w}"
    );

    let m = s.get(&format!("/v1/messages/{id}")).json();
    assert_eq!(m["to"], TO);
    assert_eq!(m["status"], "queued");
    assert_eq!(m["text"], "hello");
    assert_eq!(m["attempts"], 0);
    assert_eq!(m["sent_at"], Value::Null);

    let all = s.get("/v1/messages").json();
    let ids: Vec<&str> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], id, "newest first");
    // A `+` left unencoded in the query still means the number.
    let mine = s
        .get(&format!("/v1/messages?to={TO}&status=queued&limit=5"))
        .json();
    assert_eq!(mine["messages"].as_array().unwrap().len(), 1, "{mine}");
    let page = s.get("/v1/messages?limit=1").json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    let next = page["next_before"].as_str().unwrap();
    let rest = s.get(&format!("/v1/messages?before={next}")).json();
    assert_eq!(rest["messages"][0]["id"], id, "{rest}");
}

#[test]
fn modems_and_readiness_come_from_the_modem_source() {
    let ready = ModemJson {
        id: "modem0".into(),
        device: "/dev/ttyUSB0".into(),
        state: "ready".into(),
        signal: Some(20),
        ..ModemJson::default()
    };
    let s = Server::start_with(vec![ready], RateSettings::default(), Settings::default());
    let r = s.call(Req::new("GET", "/readyz").no_token());
    assert_eq!(r.status, 200, "{}", r.text);
    let m = s.get("/v1/modems").json();
    assert_eq!(m["modems"][0]["id"], "modem0");
    assert_eq!(m["modems"][0]["signal"], 20);
    let metrics = s.call(Req::new("GET", "/metrics").no_token()).text;
    assert!(metrics.contains("simgate_modem_state{"), "{metrics}");
    assert!(metrics.contains("simgate_queue_depth 0"), "{metrics}");
    // Requests are counted by route template, never by concrete path.
    assert!(
        metrics.contains("simgate_http_requests_total{route=\"/v1/modems\",status=\"2xx\"} 1"),
        "{metrics}"
    );

    // A modem busy with a send is not down: ready, and no "no modem is ready" warning.
    let busy = ModemJson {
        id: "modem0".into(),
        state: "sending".into(),
        ..ModemJson::default()
    };
    let s = Server::start_with(vec![busy], RateSettings::default(), Settings::default());
    let r = s.call(Req::new("GET", "/readyz").no_token());
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.post("/v1/messages", json!({"to": "+15551239990", "text": "hi"}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.json().get("warnings").is_none(), "{}", r.text);

    let down = ModemJson {
        id: "modem0".into(),
        state: "searching".into(),
        ..ModemJson::default()
    };
    let s = Server::start_with(vec![down], RateSettings::default(), Settings::default());
    let p = s.call(Req::new("GET", "/readyz").no_token()).problem(503);
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("modem0 is searching")
    );
}

/// Every route of the OpenAPI document is served: calling it never gets "no such route" or
/// "method not allowed", and every route the server has is in the document (checked in the
/// unit test against the same route table the router is built from).
#[test]
fn openapi_document_matches_the_served_routes() {
    let s = Server::start();
    let doc = s.get("/v1/openapi.json");
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut n = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace(
                "{id}",
                if path.contains("messages") {
                    UNKNOWN_MSG
                } else {
                    UNKNOWN_OTP
                },
            );
            let m: &'static str = match method.as_str() {
                "get" => "GET",
                "post" => "POST",
                "delete" => "DELETE",
                other => panic!("unexpected method {other}"),
            };
            let req = Req::new(m, &concrete);
            let r = s.call(if m == "POST" {
                req.json(&json!({}))
            } else {
                req
            });
            assert_ne!(r.status, 405, "{m} {path}: {}", r.text);
            if r.status == 404 {
                assert!(!r.text.contains("no-such-route"), "{m} {path}: {}", r.text);
            }
            n += 1;
        }
    }
    assert_eq!(n, http::ROUTES.len());
}

#[test]
fn cli_clients_talk_to_the_daemon() {
    let s = Server::start();
    let exe = env!("CARGO_BIN_EXE_simgate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(args)
            .args(["--url", &s.base, "--token", TOKEN])
            .env_remove("SIMGATE_TOKEN")
            .env_remove("SIMGATE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    s.next_code("314159");
    let (code, out, err) = run(&["--json", "otp", "send", "--to", TO]);
    assert_eq!(code, Some(0), "{out}{err}");
    let created: Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["id"].as_str().unwrap();

    let (code, out, _) = run(&["otp", "verify", "--id", id, "--code", "000000"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("not verified"), "{out}");
    let (code, out, _) = run(&["otp", "verify", "--to", TO, "--code", "314159"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("approved"), "{out}");

    let (code, out, err) = run(&["send", "--to", TO, "--text", "hi there"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("queued msg_"), "{out}");

    let (code, out, _) = run(&["log", "--to", TO, "--limit", "10"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("queued"), "{out}");

    // API errors print the problem's detail and fail.
    let (code, _, err) = run(&["send", "--to", "5551234567", "--text", "x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("add the country code"), "{err}");
    let (code, _, err) = run(&["otp", "verify", "--id", UNKNOWN_OTP, "--code", "123456"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("404"), "{err}");

    // A daemon that is not there is named.
    let out = std::process::Command::new(exe)
        .args(["log", "--url", "http://127.0.0.1:9", "--token", "x"])
        .env_remove("SIMGATE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(8));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the simgate daemon at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn concurrent_right_codes_approve_exactly_once() {
    let s = Arc::new(Server::start());
    let otp = s.create_otp(TO, "555555");
    let id = otp["id"].as_str().unwrap().to_owned();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (s, id) = (s.clone(), id.clone());
            std::thread::spawn(move || {
                let r = s.post(&format!("/v1/otp/{id}/verify"), json!({"code": "555555"}));
                (r.status, r.json())
            })
        })
        .collect();
    let answers: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let approvals: Vec<&(u16, Value)> = answers
        .iter()
        .filter(|(_, a)| a["verified"] == true)
        .collect();
    assert_eq!(approvals.len(), 1, "{answers:?}");
    assert_eq!(approvals[0].0, 200);
    // Every other one learns it was already approved.
    assert!(
        answers
            .iter()
            .all(|(st, a)| (*st == 200 && a["status"] == "approved")
                || (*st == 409 && a["otp_status"] == "approved")),
        "{answers:?}"
    );
}

#[test]
fn policy_limits_answer_with_their_own_problems() {
    let rates = RateSettings {
        otp_per_number: "off".parse().unwrap(),
        requests_per_token: "8/1m".parse().unwrap(),
        ..RateSettings::default()
    };
    let settings = Settings {
        otp_per_number_per_day: 2,
        queue_max: 3,
        prefixes: simgate::limits::PrefixPolicy {
            allow: vec!["+1".into(), "+44".into()],
            deny: vec!["+1900".into()],
        },
        ..Settings::default()
    };
    let s = Server::start_with(Vec::new(), rates, settings);

    // Prefix lists: 403 naming the list (requests 1 and 2 of the token's 8).
    let p = s
        .post("/v1/otp", json!({"to": "+33612345678"}))
        .problem(403);
    assert_eq!(p["field"], "to");
    assert!(
        p["detail"].as_str().unwrap().contains("allow_prefixes"),
        "{p}"
    );
    let p = s
        .post("/v1/messages", json!({"to": "+19005550100", "text": "x"}))
        .problem(403);
    assert!(
        p["detail"].as_str().unwrap().contains("deny_prefixes"),
        "{p}"
    );

    // The daily cap is counted in the store: the third OTP of the day is refused (3 to 5).
    let fresh = json!({"to": TO, "on_pending": "supersede"});
    assert_eq!(s.post("/v1/otp", fresh.clone()).status, 202);
    assert_eq!(s.post("/v1/otp", fresh.clone()).status, 202);
    let r = s.post("/v1/otp", fresh);
    let p = r.problem(429);
    assert_eq!(p["limit"], "otp_per_number_per_day");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);

    // The queue bound: 503 with Retry-After (the first OTP was canceled by the second, so one
    // message is queued; two more fill the queue of 3) (6 to 8).
    assert_eq!(
        s.post("/v1/messages", json!({"to": TO, "text": "a"}))
            .status,
        202
    );
    assert_eq!(
        s.post("/v1/messages", json!({"to": TO, "text": "b"}))
            .status,
        202
    );
    let r = s.post("/v1/messages", json!({"to": TO, "text": "c"}));
    r.problem(503);
    assert!(r.header("retry-after").is_some());

    // The token's own budget (8 per minute) is spent now.
    let r = s.get("/v1/modems");
    let p = r.problem(429);
    assert_eq!(p["limit"], "requests_per_token");
    // Other tokens have their own budget.
    assert_eq!(
        s.call(Req::new("GET", "/v1/modems").token(OTHER_TOKEN))
            .status,
        200
    );
    s.assert_healthy();
}

#[test]
fn paging_is_exact_when_messages_share_a_millisecond() {
    let s = Server::start();
    s.freeze(1_800_000_000_000);
    let mut sent = Vec::new();
    for i in 0..7 {
        let r = s.post("/v1/messages", json!({"to": TO, "text": format!("t{i}")}));
        assert_eq!(r.status, 202);
        sent.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = "/v1/messages?limit=3".to_owned();
    loop {
        let page = s.get(&path).json();
        for m in page["messages"].as_array().unwrap() {
            seen.push(m["id"].as_str().unwrap().to_owned());
        }
        match page["next_before"].as_str() {
            Some(next) => path = format!("/v1/messages?limit=3&before={next}"),
            None => break,
        }
    }
    sent.reverse();
    assert_eq!(seen, sent, "every message once, newest first");
}

/// Issue 17.4: an OTP text has a part cap, and the refusal names the field that made it long.
#[test]
fn otp_texts_over_max_parts_are_refused_naming_the_field() {
    let s = Server::start();
    // The report: an emoji template, a 10-digit code and a long origin made 18 parts.
    let host = format!("{}.example.com", ["login-portal"; 10].join("."));
    let emoji = format!(
        "🔐 {} {{code}} {}",
        "Dein Anmeldecode lautet".repeat(3),
        "😀".repeat(20)
    );
    let r = s.post(
        "/v1/otp",
        json!({"to": TO, "template": emoji, "code_length": 10, "origin": host}),
    );
    let p = r.problem(422);
    assert_eq!(p["field"], "template", "{p}");
    let d = p["detail"].as_str().unwrap();
    assert!(d.contains("otp.max_parts = 3"), "{d}");
    assert!(d.contains("outside the GSM 7-bit alphabet"), "{d}");
    // Nothing was queued, and no budget was spent: the same number still gets a short code.
    assert_eq!(
        s.get("/v1/messages").json()["messages"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // A plain template that fits, made long by the origin line alone: the origin is to blame.
    // The longest host name there is (253 characters).
    let long_host = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let template = format!("Your code is {{code}}. {}", "x".repeat(180));
    let r = s.post(
        "/v1/otp",
        json!({"to": TO, "template": template, "origin": long_host}),
    );
    let p = r.problem(422);
    assert_eq!(p["field"], "origin", "{p}");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("with the origin line"),
        "{p}"
    );
    // The same template without the origin fits and is accepted.
    let r = s.post("/v1/otp", json!({"to": TO, "template": template}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["parts"], 2);
}

/// Issue 17.4: a 3-part OTP costs 3 cells of the per-number budget, and parts are counted in
/// the metrics; the cap is configurable.
#[test]
fn multi_part_otps_cost_their_parts_in_the_limits_and_metrics() {
    let three_parts = format!("Your code is {{code}}. {}", "x".repeat(300));
    let s = Server::start();
    let r = s.post("/v1/otp", json!({"to": TO, "template": three_parts}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["parts"], 3);
    // otp_per_number = 3/10m is spent by that one text: even a 1-part OTP must wait.
    let r = s.post("/v1/otp", json!({"to": TO, "on_pending": "supersede"}));
    let p = r.problem(429);
    assert_eq!(p["limit"], "otp_per_number", "{p}");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // A 1-part OTP to another number costs one cell.
    assert_eq!(s.post("/v1/otp", json!({"to": "+15557654321"})).status, 202);
    let metrics = s.call(Req::new("GET", "/metrics").no_token()).text;
    assert!(
        metrics.contains("simgate_sms_parts_accepted_total{kind=\"otp\"} 4"),
        "{metrics}"
    );

    // otp.max_parts = 1 refuses the 3-part text; a limit that could never pass it says so.
    let s = Server::start_with(
        vec![ready_modem()],
        RateSettings {
            otp_per_number: "2/10m".parse().unwrap(),
            ..RateSettings::default()
        },
        Settings {
            max_otp_parts: 5,
            ..Settings::default()
        },
    );
    let p = s
        .post("/v1/otp", json!({"to": TO, "template": three_parts}))
        .problem(422);
    assert_eq!(p["field"], "template", "{p}");
    let d = p["detail"].as_str().unwrap();
    assert!(
        d.contains("3 SMS parts") && d.contains("limits.otp_per_number allows 2 parts"),
        "{d}"
    );
    let s = Server::start_with(
        vec![ready_modem()],
        RateSettings::default(),
        Settings {
            max_otp_parts: 1,
            ..Settings::default()
        },
    );
    let p = s
        .post("/v1/otp", json!({"to": TO, "template": three_parts}))
        .problem(422);
    assert!(
        p["detail"].as_str().unwrap().contains("otp.max_parts = 1"),
        "{p}"
    );
}

/// Issue 16: a second POST /v1/otp for a number with a pending OTP reuses it (same id, one
/// more text, same limits); supersede stays available per request; replays still replay.
#[test]
fn a_pending_otp_is_reused_unless_superseding_is_asked_for() {
    let s = Server::start();
    let first = s.create_otp(TO, "111111");
    let again = s.create_otp(TO, "222222");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["expires_at"], first["expires_at"]);
    assert_ne!(again["message_id"], first["message_id"]);
    let w = again["warnings"][0].as_str().unwrap();
    assert!(w.contains("reused") && w.contains("stay valid"), "{w}");
    let id = first["id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v1/otp/{id}")).json()["texts"], 2);

    // Fields that cannot apply to a reused OTP are named in the warning.
    s.next_code("333333");
    let r = s.post(
        "/v1/otp",
        json!({"to": TO, "ttl_seconds": 600, "code_length": 8}),
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let w = r.json()["warnings"][0].as_str().unwrap().to_owned();
    assert!(w.contains("ttl_seconds, code_length"), "{w}");
    assert!(w.contains("supersede"), "{w}");

    // Every code sent stays valid: the first one approves.
    assert_eq!(s.verify(id, "111111")["verified"], true);

    // Idempotent replays of a reusing request answer the same text.
    let other = "+15557654321";
    s.create_otp(other, "444444");
    let keyed = |body: Value| {
        s.call(
            Req::new("POST", "/v1/otp")
                .json(&body)
                .header("Idempotency-Key", "k-reuse"),
        )
    };
    let one = keyed(json!({"to": other}));
    let two = keyed(json!({"to": other}));
    assert_eq!(one.status, 202, "{}", one.text);
    assert_eq!(one.text, two.text);
    assert_eq!(two.header("idempotent-replayed"), Some("true"));

    // A bad on_pending names the field.
    let p = s
        .post("/v1/otp", json!({"to": TO, "on_pending": "replace"}))
        .problem(422);
    assert_eq!(p["field"], "on_pending", "{p}");
}

/// Issue 17.8: resends per OTP are capped (otp.max_resends) with a 429 that says why.
#[test]
fn resends_per_otp_are_capped() {
    let s = Server::start_with(
        vec![ready_modem()],
        RateSettings {
            otp_per_number: "off".parse().unwrap(),
            ..RateSettings::default()
        },
        Settings {
            max_resends: 1,
            ..Settings::default()
        },
    );
    let otp = s.create_otp(TO, "123456");
    let id = otp["id"].as_str().unwrap();
    let resend = || s.call(Req::new("POST", &format!("/v1/otp/{id}/resend")));
    assert_eq!(resend().status, 202);
    let r = resend();
    let p = r.problem(429);
    assert_eq!(p["limit"], "max_resends", "{p}");
    let d = p["detail"].as_str().unwrap();
    assert!(
        d.contains("has had 2 texts") && d.contains("otp.max_resends = 1"),
        "{d}"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "until the expiry: {retry}");
    assert_eq!(s.get(&format!("/v1/otp/{id}")).json()["texts"], 2);
    // Superseding starts a new OTP with its own budget of resends.
    let r = s.post("/v1/otp", json!({"to": TO, "on_pending": "supersede"}));
    assert_eq!(r.status, 202, "{}", r.text);
    assert_ne!(r.json()["id"], otp["id"]);
}

/// Issue 16: a 202 while no modem is ready says so in `warnings`.
#[test]
fn answers_warn_when_no_modem_is_ready() {
    let down = ModemJson {
        id: "modem0".into(),
        state: "searching".into(),
        ..ModemJson::default()
    };
    let s = Server::start_with(vec![down], RateSettings::default(), Settings::default());
    let has_warning = |v: &Value| {
        v["warnings"].as_array().is_some_and(|w| {
            w.iter().any(|w| {
                let w = w.as_str().unwrap();
                w.contains("no modem is ready") && w.contains("modem0 is searching")
            })
        })
    };
    let otp = s.create_otp(TO, "123456");
    assert!(has_warning(&otp), "{otp}");
    let id = otp["id"].as_str().unwrap();
    let r = s.call(Req::new("POST", &format!("/v1/otp/{id}/resend")));
    assert_eq!(r.status, 202);
    assert!(has_warning(&r.json()), "{}", r.text);
    let r = s.post("/v1/messages", json!({"to": TO, "text": "hello"}));
    assert_eq!(r.status, 202);
    assert!(has_warning(&r.json()), "{}", r.text);
    // Without any modem configured, too.
    let s = Server::start_with(Vec::new(), RateSettings::default(), Settings::default());
    let w = s.create_otp(TO, "123456")["warnings"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(w.contains("no modem is configured"), "{w}");
}
