//! The status page's inbound and webhook panels over real parts: a `simgate sim` on a pty whose
//! network delivers a text, a `simgate serve` with `[ui]`, `[inbound]` and two `[[webhook]]`
//! endpoints (one accepting, one answering 500), signed in over loopback HTTP like a browser.

#[path = "support/faults.rs"]
mod faults;
mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::time::{Duration, Instant};

use faults::{ServeProcess, TOKEN, config_for};
use support::SimProcess;
use webhook_receiver::{Behaviour, Receiver};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Signs in with the API token; returns the `Cookie` header value.
fn sign_in(d: &ServeProcess) -> String {
    let resp = agent()
        .post(&format!("{}/ui/sign-in", d.base))
        .header("Origin", &d.base)
        .content_type("application/x-www-form-urlencoded")
        .send(format!("token={TOKEN}"))
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let set = resp
        .headers()
        .get("set-cookie")
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// `/ui/state`'s fragments.
fn fragments(d: &ServeProcess, cookie: &str) -> serde_json::Value {
    let mut resp = agent()
        .get(&format!("{}/ui/state", d.base))
        .header("Cookie", cookie)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.body_mut().read_json().unwrap();
    v["fragments"].clone()
}

#[test]
fn the_page_shows_received_texts_and_each_webhook_endpoints_health() {
    let sim = SimProcess::start(&[
        "--incoming",
        "+15550003333:Hi <b>there</b> 4711",
        "--incoming-after",
        "0.5",
    ]);
    let good = Receiver::start(Behaviour::Status(204));
    let failing = Receiver::start(Behaviour::Status(500));
    let dir = faults::fast_tempdir();
    let extra = format!(
        "\n[ui]\nenabled = true\n\n[inbound]\nenabled = true\n\n\
         [[webhook]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\n\
         [[webhook]]\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        good.url(),
        failing.url()
    );
    let d = ServeProcess::start(
        &dir.path().join("data"),
        &config_for(&sim.link, "", &extra),
        "simgate=debug,info",
    );
    let cookie = sign_in(&d);
    let deadline = Instant::now() + Duration::from_secs(60);
    let f = loop {
        let f = fragments(&d, &cookie);
        let inbound = f["inbound"].as_str().unwrap_or("");
        let hooks = f["webhooks"].as_str().unwrap_or("");
        if inbound.contains("+15550003333") && hooks.contains("retrying") {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "panels never filled: {f}\n{}",
            d.log_tail(40)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let inbound = f["inbound"].as_str().unwrap();
    // The text is shown, escaped: markup from a phone is text on the page.
    assert!(
        inbound.contains("Hi &lt;b&gt;there&lt;/b&gt; 4711"),
        "{inbound}"
    );
    assert!(!inbound.contains("<b>"), "{inbound}");
    let hooks = f["webhooks"].as_str().unwrap();
    let row = |url: &str| {
        hooks
            .split("<tr>")
            .find(|r| r.contains(url))
            .unwrap_or_else(|| panic!("no row for {url}: {hooks}"))
            .to_owned()
    };
    assert!(row(&good.url()).contains(">ok<"), "{}", row(&good.url()));
    assert!(
        row(&failing.url()).contains("answered 500"),
        "{}",
        row(&failing.url())
    );
    // The page itself has both sections.
    let mut page = agent()
        .get(&format!("{}/ui/", d.base))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    let html = page.body_mut().read_to_string().unwrap();
    assert!(html.contains("<h2>Received</h2>") && html.contains("<h2>Webhooks</h2>"));
}

#[test]
fn without_inbound_or_webhooks_the_page_has_neither_panel() {
    let sim = SimProcess::start(&[]);
    let dir = faults::fast_tempdir();
    let d = ServeProcess::start(
        &dir.path().join("data"),
        &config_for(&sim.link, "", "\n[ui]\nenabled = true\n"),
        "info",
    );
    let cookie = sign_in(&d);
    let f = fragments(&d, &cookie);
    assert!(
        f.get("inbound").is_none() && f.get("webhooks").is_none(),
        "{f}"
    );
    assert!(f.get("modems").is_some());
}
