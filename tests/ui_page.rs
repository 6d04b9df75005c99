//! The status page against a real `serve --simulate`: security checks over plain HTTP, and a
//! headless Chromium (through chromedriver's W3C WebDriver protocol) that signs in, sends a
//! test OTP and watches its row turn `sent` then `delivered` without a reload.

#[path = "support/daemon.rs"]
mod daemon;

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use daemon::Daemon;
use serde_json::{Value, json};

fn shared() -> &'static Daemon {
    static D: OnceLock<Daemon> = OnceLock::new();
    D.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let d = Daemon::start(&dir.join("data"), None);
        d.wait_ready();
        d
    })
}

struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request that follows no redirect.
fn raw(method: &str, url: &str, headers: &[(&str, &str)], form: Option<&str>) -> Raw {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = match form {
        Some(f) => agent
            .run(
                b.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(f.to_owned())
                    .unwrap(),
            )
            .unwrap(),
        None => agent.run(b.body(()).unwrap()).unwrap(),
    };
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    Raw {
        status: resp.status().as_u16(),
        headers,
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs in over HTTP; returns the `Cookie` header value and the page's CSRF value.
fn sign_in(d: &Daemon) -> (String, String) {
    let origin = d.base.clone();
    let r = raw(
        "POST",
        &format!("{}/ui/sign-in", d.base),
        &[("Origin", &origin)],
        Some(&format!("token={}", enc(&d.token))),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("set-cookie").expect("a session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains(&d.token));
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = raw(
        "GET",
        &format!("{}/ui/", d.base),
        &[("Cookie", &cookie)],
        None,
    );
    assert_eq!(page.status, 200);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("csrf field")
        .to_owned();
    (cookie, csrf)
}

#[test]
fn without_a_session_there_is_a_redirect_and_no_data() {
    let d = shared();
    // Something in the log that must not leak.
    let a = d.post(
        "/v1/messages",
        &json!({"to": "+15550100", "text": "leak-canary"}),
    );
    assert_eq!(a.status, 202);
    for path in ["/", "/ui/", "/ui/?to=%2B15550100"] {
        let r = raw("GET", &format!("{}{path}", d.base), &[], None);
        assert_eq!(r.status, 303, "{path}");
        assert_eq!(r.header("location"), Some("/ui/sign-in"), "{path}");
        assert!(!r.body.contains("leak-canary") && !r.body.contains("+15550100"));
    }
    let r = raw("GET", &format!("{}/ui/state", d.base), &[], None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(!r.body.contains("leak-canary"));
    // A forged cookie is no session.
    let r = raw(
        "GET",
        &format!("{}/ui/state", d.base),
        &[("Cookie", "simgate_session=00")],
        None,
    );
    assert_eq!(r.status, 401);
    // A wrong token signs nobody in.
    let r = raw(
        "POST",
        &format!("{}/ui/sign-in", d.base),
        &[],
        Some("token=not-the-token-at-all"),
    );
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
}

#[test]
fn every_answer_has_the_csp_and_refuses_framing() {
    let d = shared();
    for path in ["/", "/ui/sign-in", "/ui/assets/ui.js", "/ui/state"] {
        let r = raw("GET", &format!("{}{path}", d.base), &[], None);
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
    }
}

#[test]
fn cross_site_and_tokenless_posts_are_refused() {
    let d = shared();
    let (cookie, csrf) = sign_in(d);
    let before = d.get("/v1/messages?to=%2B15550111").body["messages"]
        .as_array()
        .map(Vec::len);
    let url = format!("{}/ui/test-otp", d.base);
    let body = format!("csrf={csrf}&to=%2B15550111");
    // Another site's page posting with the browser's cookie.
    let r = raw(
        "POST",
        &url,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        Some(&body),
    );
    assert_eq!(r.status, 403);
    let r = raw(
        "POST",
        &url,
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        Some(&body),
    );
    assert_eq!(r.status, 403);
    // Same origin, but without the session's CSRF value.
    let r = raw(
        "POST",
        &url,
        &[("Cookie", &cookie), ("Origin", &d.base)],
        Some("csrf=0000&to=%2B15550111"),
    );
    assert_eq!(r.status, 403);
    // And a cross-site sign-in (login CSRF).
    let r = raw(
        "POST",
        &format!("{}/ui/sign-in", d.base),
        &[("Origin", "http://evil.example")],
        Some(&format!("token={}", enc(&d.token))),
    );
    assert_eq!(r.status, 403);
    assert!(r.header("set-cookie").is_none());
    let after = d.get("/v1/messages?to=%2B15550111").body["messages"]
        .as_array()
        .map(Vec::len);
    assert_eq!(before, after, "a refused post queued nothing");
}

#[test]
fn no_code_and_no_unmasked_text_is_rendered() {
    let d = shared();
    let (cookie, csrf) = sign_in(d);
    let r = raw(
        "POST",
        &format!("{}/ui/test-otp", d.base),
        &[("Cookie", &cookie), ("Origin", &d.base)],
        Some(&format!("csrf={csrf}&to=%2B15550122")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let loc = r.header("location").unwrap().to_owned();
    assert!(loc.starts_with("/ui/?sent=msg_"), "{loc}");
    // The simulator received the real text; find its code.
    let sent = d
        .wait_sim_log(1, Duration::from_secs(20))
        .into_iter()
        .find(|l| l["to"] == "+15550122")
        .or_else(|| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(l) = d.sim_log().into_iter().find(|l| l["to"] == "+15550122") {
                    return Some(l);
                }
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .expect("the test OTP reached the simulator");
    let code = daemon::code_in(sent["text"].as_str().unwrap());
    let text = sent["text"].as_str().unwrap();
    for path in [loc.as_str(), "/ui/", "/ui/?to=%2B15550122", "/ui/state"] {
        let r = raw(
            "GET",
            &format!("{}{path}", d.base),
            &[("Cookie", &cookie)],
            None,
        );
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.contains("+15550122"), "{path} lists the message");
        assert!(!r.body.contains(&code), "{path} shows the code");
        assert!(!r.body.contains(text), "{path} shows the unmasked text");
        assert!(!r.body.contains(&d.token), "{path} shows the token");
    }
}

/// A W3C WebDriver session on a chromedriver child, over plain HTTP.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    /// Chromium headless through chromedriver, or why not.
    fn start() -> Result<Browser, String> {
        for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            if !std::path::Path::new(tool).exists() {
                return Err(format!(
                    "{tool} is not installed (apt-get install chromium chromium-driver)"
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromedriver: {e}"))?;
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.call("GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                return Err("chromedriver did not answer".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                // CI runs as root, where Chromium's sandbox cannot start.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or(format!("no session: {v}"))?
            .to_owned();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let req = ureq::http::Request::builder().method(method).uri(&url);
        let mut resp = match body {
            Some(b) => agent.run(
                req.header("Content-Type", "application/json")
                    .body(b.to_string())
                    .unwrap(),
            ),
            None => agent.run(req.body(()).unwrap()),
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        if status >= 400 {
            return Err(format!("{method} {path}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn go(&self, url: &str) {
        self.s("POST", "/url", Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> Option<String> {
        self.call(
            "POST",
            &format!("/session/{}/element", self.session),
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.values().next())
                .and_then(|e| e.as_str().map(str::to_owned))
        })
    }

    fn el(&self, css: &str) -> String {
        self.find(css).unwrap_or_else(|| panic!("no element {css}"))
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.el(css);
        self.s("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.s(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.el(css);
        self.s("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn text(&self, css: &str) -> Option<String> {
        let e = self.find(css)?;
        self.call(
            "GET",
            &format!("/session/{}/element/{e}/text", self.session),
            None,
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
    }

    fn js(&self, script: &str) -> Value {
        self.s(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn wait(&self, what: &str, timeout: Duration, ok: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + timeout;
        while !ok(self) {
            if Instant::now() > deadline {
                let src = self.s("GET", "/source", None);
                panic!("timed out waiting for {what}; the page:\n{src}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn screenshot(&self, width: u32, height: u32, path: &std::path::Path) {
        self.s(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
        std::thread::sleep(Duration::from_millis(300));
        let png = self.s("GET", "/screenshot", None);
        let bytes = base64_decode(png.as_str().expect("base64 screenshot"));
        std::fs::write(path, bytes).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !matches!(c, b'=' | b'\n' | b'\r'))
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[test]
fn a_browser_signs_in_sends_a_test_otp_and_watches_it_delivered() {
    let browser = match Browser::start() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let d = shared();
    browser.go(&format!("{}/", d.base));
    browser.wait("the sign-in form", Duration::from_secs(10), |b| {
        b.find("#token").is_some()
    });
    browser.type_into("#token", &d.token);
    browser.click("#signin button");
    browser.wait("the modem ready", Duration::from_secs(20), |b| {
        b.text("[data-modem=sim0] .state").as_deref() == Some("ready")
    });
    let url = browser.s("GET", "/url", None);
    assert!(
        !url.as_str().unwrap().contains(&d.token),
        "no token in any URL: {url}"
    );

    browser.type_into("#otp-to", "+15550133");
    browser.click("#otp-form button");
    browser.wait("the flash", Duration::from_secs(10), |b| {
        b.find("#flash").is_some()
    });
    let url = browser.s("GET", "/url", None);
    let id = url
        .as_str()
        .unwrap()
        .split("sent=")
        .nth(1)
        .expect("sent id")
        .to_owned();
    // A mark on the window: it is gone if the page reloads.
    browser.js("window.__simgateMark = 1;");
    let row = format!("tr[data-id=\"{id}\"] .status");
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last().map(String::as_str) != Some("delivered") {
        assert!(Instant::now() < deadline, "statuses seen: {seen:?}");
        if let Some(s) = browser.text(&row)
            && seen.last() != Some(&s)
        {
            seen.push(s);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let sent_at = seen
        .iter()
        .position(|s| s == "sent")
        .unwrap_or_else(|| panic!("never saw sent: {seen:?}"));
    assert!(sent_at < seen.len() - 1, "{seen:?}");
    assert_eq!(
        browser.js("return window.__simgateMark;"),
        json!(1),
        "the page reloaded"
    );

    let dir = screenshot_dir();
    browser.screenshot(390, 844, &dir.join("status-phone.png"));
    browser.screenshot(1280, 900, &dir.join("status-desktop.png"));

    // Filter: by the number, then by a status it does not have.
    browser.type_into("#filter-to", "+15550133");
    browser.click("#filter button");
    browser.wait("the filtered list", Duration::from_secs(10), |b| {
        b.find("#messages tbody tr").is_some()
            && b.js("return [...document.querySelectorAll('#messages tbody tr td:nth-child(2)')].every(td => td.textContent === '+15550133');") == json!(true)
    });
    let rows = browser.js("return document.querySelectorAll('#messages tbody tr').length;");
    assert!(rows.as_u64().unwrap() >= 1);
    browser.go(&format!("{}/ui/?to=%2B15550133&status=failed", d.base));
    browser.wait("no failed messages", Duration::from_secs(10), |b| {
        b.find("#no-messages").is_some()
    });

    browser.click("#signout");
    browser.wait("the sign-in page", Duration::from_secs(10), |b| {
        b.find("#token").is_some()
    });
    browser.go(&format!("{}/ui/", d.base));
    browser.wait("a redirect to sign-in", Duration::from_secs(10), |b| {
        b.find("#token").is_some()
    });
}
