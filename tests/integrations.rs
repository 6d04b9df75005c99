//! The recipes of docs/integrations.md, replayed: every block marked `<!-- replayed: NAME -->`
//! is sent, byte for byte as the page shows it, to a real `simgate serve --simulate` with the
//! authentication that recipe configures, and its text must reach the simulated modem. Editing
//! a documented request without keeping it acceptable fails here.

#[path = "support/daemon.rs"]
mod daemon;

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

/// The Twilio account and token of the Keycloak recipe.
const AC: &str = "AC0123456789abcdef0123456789abcdef";
const TWILIO_TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// The fenced block following `<!-- replayed: name -->`.
fn documented(doc: &str, name: &str) -> String {
    let marker = format!("<!-- replayed: {name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/integrations.md has no {marker}"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body_start = open + rest[open..].find('\n').expect("fence line") + 1;
    let close = rest[body_start..].find("```").expect("closing fence");
    rest[body_start..body_start + close].trim_end().to_owned()
}

#[test]
fn every_documented_request_is_accepted_and_sent() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/integrations.md"))
        .unwrap();
    let config = format!(
        "[twilio]\nenabled = true\naccount_sid = \"{AC}\"\nauth_token = \"{TWILIO_TOKEN}\"\n\
         from = [\"Keycloak\"]\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), Some(&config));
    d.wait_ready();

    // JSON recipes: POST /v1/messages with the bearer token.
    let json_recipes = ["kratos", "authentik", "casdoor", "home-assistant"];
    let mut expected: Vec<(String, String)> = Vec::new();
    for name in json_recipes {
        let body = documented(&doc, name);
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{name}: the documented body is not JSON: {e}"));
        let a = d.request(
            "POST",
            "/v1/messages",
            Some(body.clone()),
            &[("Authorization", &d.bearer())],
        );
        assert_eq!(a.status, 202, "{name}: {:?}", a.body);
        expected.push((
            v["to"].as_str().unwrap().to_owned(),
            v["text"].as_str().unwrap().to_owned(),
        ));
    }

    // Keycloak: the form body on the Twilio route with Basic AccountSid:AuthToken.
    let form = documented(&doc, "keycloak");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{AC}:{TWILIO_TOKEN}"))
    );
    let a = daemon::request(
        &d.base,
        "POST",
        &format!("/2010-04-01/Accounts/{AC}/Messages.json"),
        None,
        &[],
    )
    .unwrap();
    assert_eq!(a.status, 401, "the Twilio route wants credentials");
    let a = form_post(
        &d.base,
        &format!("/2010-04-01/Accounts/{AC}/Messages.json"),
        &form,
        &basic,
    );
    assert_eq!(a.0, 201, "keycloak: {}", a.1);
    let sent: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |k: &str| sent.iter().find(|(n, _)| n == k).unwrap().1.clone();
    expected.push((field("To"), field("Body")));

    let log = d.wait_sim_log(expected.len(), Duration::from_secs(60));
    assert_eq!(log.len(), expected.len(), "{}", d.log());
    for (to, text) in &expected {
        assert!(
            log.iter()
                .any(|l| l["to"] == to.as_str() && l["text"] == text.as_str()),
            "{to} {text:?} not in the simulator's log: {log:?}"
        );
    }
    // The unnamed pair holding Keycloak's secret is never echoed into the daemon's log.
    assert!(!d.log().contains(TWILIO_TOKEN));
}

/// A form-encoded POST (the support helper sends JSON); `(status, body)`.
fn form_post(base: &str, path: &str, body: &str, auth: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let req = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{base}{path}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", auth)
        .body(body.to_owned())
        .unwrap();
    let mut resp = agent.run(req).expect("daemon answers");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}
