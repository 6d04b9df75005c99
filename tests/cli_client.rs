//! The daemon's CLI clients against a real `simgate serve --simulate` on loopback: which token
//! file they use, errors as JSON and as exit statuses, `otp resend|cancel|show`, warnings,
//! the paging cursor of `simgate log`, and `simgate status`.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon::Daemon;
use serde_json::Value;

/// The result of one CLI run.
struct Run {
    code: i32,
    out: String,
    err: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.out.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}{}", self.out, self.err))
    }

    /// The one JSON object `--json` prints on stderr for an error.
    fn json_error(&self) -> Value {
        let lines: Vec<&str> = self.err.lines().collect();
        assert_eq!(lines.len(), 1, "stderr is not one line: {}", self.err);
        serde_json::from_str(lines[0])
            .unwrap_or_else(|e| panic!("stderr is not JSON ({e}): {}", self.err))
    }
}

/// Runs the CLI in `cwd` with `args`, no token or URL from the environment, no system config.
fn cli(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .current_dir(cwd)
        .args(args)
        .env_remove("SIMGATE_TOKEN")
        .env_remove("SIMGATE_URL")
        .output()
        .expect("run simgate");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A daemon whose data dir is `<root>/simgate-data`, where the clients look when run in `root`.
/// A daemon whose simulated modem is ready, so answers carry no "no modem is ready" warning.
fn daemon_in(root: &Path) -> Daemon {
    let d = Daemon::start(&root.join("simgate-data"), None);
    d.wait_ready();
    d
}

#[test]
fn a_stale_token_file_elsewhere_does_not_hide_the_answering_daemons() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    // A config whose data dir (like /var/lib/simgate of an old install) holds another token.
    let stale = root.path().join("old-install");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("api-token"), "stale-token-of-another-daemon\n").unwrap();
    let config = root.path().join("simgate.toml");
    std::fs::write(
        &config,
        format!("[store]\ndata_dir = {:?}\n", stale.display().to_string()),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let r = cli(
        root.path(),
        &["--json", "log", "--url", &d.base, "--config", config],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.json()["messages"].is_array(), "{}", r.out);

    // Pointed at the stale directory only, the 401 names the token file that was refused.
    let stale_dir = stale.to_str().unwrap();
    let r = cli(
        root.path(),
        &["log", "--url", &d.base, "--data-dir", stale_dir],
    );
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    let file = stale.join("api-token").display().to_string();
    assert!(r.err.starts_with("simgate: 401: "), "{}", r.err);
    assert!(
        r.err.contains(&file),
        "the 401 does not name {file}: {}",
        r.err
    );
    let r = cli(
        root.path(),
        &["--json", "log", "--url", &d.base, "--data-dir", stale_dir],
    );
    let e = r.json_error();
    assert_eq!(e["error"]["kind"], "unauthorized", "{e}");
    assert_eq!(e["error"]["status"], 401, "{e}");
    assert_eq!(e["error"]["exit_code"], 4, "{e}");
    assert!(
        e["error"]["detail"].as_str().unwrap().contains(&file),
        "{e}"
    );
    assert!(
        r.out.is_empty(),
        "nothing on stdout for an error: {}",
        r.out
    );
}

#[test]
fn errors_have_their_own_exit_status_and_json() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    let cwd = root.path();
    let url = d.base.as_str();

    // Not found: 5.
    let missing = "otp_00000000000000000000000000000000";
    let r = cli(
        cwd,
        &["--json", "otp", "show", "--id", missing, "--url", url],
    );
    assert_eq!(r.code, 5, "{}{}", r.out, r.err);
    let e = r.json_error();
    assert_eq!(e["error"]["kind"], "not-found", "{e}");
    assert_eq!(e["error"]["status"], 404, "{e}");
    assert_eq!(e["error"]["title"], "Not found", "{e}");
    assert!(
        e["error"]["detail"].as_str().unwrap().contains(missing),
        "{e}"
    );

    // Rate limited: 6 (the default otp_per_number is 3 per 10 minutes).
    let to = "+15551239999";
    for _ in 0..3 {
        let r = cli(cwd, &["otp", "send", "--to", to, "--url", url]);
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    }
    let r = cli(cwd, &["--json", "otp", "send", "--to", to, "--url", url]);
    assert_eq!(r.code, 6, "{}{}", r.out, r.err);
    let e = r.json_error();
    assert_eq!(e["error"]["kind"], "rate-limited", "{e}");
    assert!(e["error"]["retry_after"].as_u64().unwrap() >= 1, "{e}");

    // An invalid request: 1, and the problem's field-naming detail.
    let r = cli(cwd, &["log", "--status", "bogus", "--url", url]);
    assert_eq!(r.code, 1, "{}{}", r.out, r.err);
    assert!(r.err.contains("status"), "{}", r.err);

    // Nothing listening: 8.
    let dead = "http://127.0.0.1:1";
    let r = cli(cwd, &["--json", "log", "--url", dead]);
    assert_eq!(r.code, 8, "{}{}", r.out, r.err);
    assert_eq!(r.json_error()["error"]["kind"], "unreachable");
    let r = cli(cwd, &["status", "--url", dead]);
    assert_eq!(r.code, 8, "{}{}", r.out, r.err);
    assert!(r.err.contains("cannot reach"), "{}", r.err);

    // No token anywhere: 4, before any request.
    let elsewhere = tempfile::tempdir().unwrap();
    let empty = elsewhere.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = cli(
        elsewhere.path(),
        &[
            "--json",
            "log",
            "--url",
            url,
            "--data-dir",
            empty.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    assert_eq!(r.json_error()["error"]["kind"], "no-token");
}

/// Waits until the simulated phone got `n` texts for `to`; returns their texts.
fn texts_to(d: &Daemon, to: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let texts: Vec<String> = d
            .sim_log()
            .into_iter()
            .filter(|l| l["to"] == to)
            .map(|l| l["text"].as_str().unwrap().to_owned())
            .collect();
        if texts.len() >= n {
            return texts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} texts to {to}:\n{}",
            texts.len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn otp_resend_cancel_and_show() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    let cwd = root.path();
    let url = d.base.as_str();
    let to = "+15551230042";

    let r = cli(cwd, &["--json", "otp", "send", "--to", to, "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let sent = r.json();
    let id = sent["id"].as_str().unwrap().to_owned();
    texts_to(&d, to, 1);

    let r = cli(cwd, &["otp", "resend", "--id", &id, "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out
            .starts_with(&format!("queued OTP {id} for {to} (message msg_")),
        "{}",
        r.out
    );
    assert!(
        !r.out.contains(sent["message_id"].as_str().unwrap()),
        "a resend is a new message: {}",
        r.out
    );
    let texts = texts_to(&d, to, 2);
    assert_ne!(
        daemon::code_in(&texts[0]),
        daemon::code_in(&texts[1]),
        "a resend carries a fresh code"
    );

    let r = cli(cwd, &["--json", "otp", "show", "--id", &id, "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let shown = r.json();
    assert_eq!(shown["status"], "pending");
    assert_eq!(shown["texts"], 2);
    let r = cli(cwd, &["otp", "show", "--id", &id, "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out
            .starts_with(&format!("{id} to {to}: pending, 5 attempts remaining")),
        "{}",
        r.out
    );
    assert!(r.out.contains("2 texts; newest: msg_"), "{}", r.out);
    assert!(!r.out.contains(&daemon::code_in(&texts[1])), "{}", r.out);

    let r = cli(cwd, &["otp", "cancel", "--id", &id, "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(r.out.trim(), format!("{id}: canceled"));
    let r = cli(cwd, &["--json", "otp", "show", "--id", &id, "--url", url]);
    assert_eq!(r.json()["status"], "canceled");
    // Neither code verifies once canceled: exit 3, the code was not accepted.
    let r = cli(
        cwd,
        &[
            "otp",
            "verify",
            "--id",
            &id,
            "--code",
            &daemon::code_in(&texts[0]),
            "--url",
            url,
        ],
    );
    assert_eq!(r.code, 3, "{}{}", r.out, r.err);
    assert!(r.err.contains("canceled"), "{}", r.err);
}

#[test]
fn warnings_go_to_stderr_in_text_and_stay_in_json() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    let cwd = root.path();
    let url = d.base.as_str();
    let long = "x".repeat(200);

    let r = cli(
        cwd,
        &[
            "send",
            "--to",
            "+15551230051",
            "--text",
            &long,
            "--url",
            url,
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.out.starts_with("queued msg_"), "{}", r.out);
    assert!(!r.out.contains("warning"), "{}", r.out);
    assert_eq!(r.err.trim(), "warning: the text needs 2 SMS parts");

    let r = cli(
        cwd,
        &[
            "--json",
            "send",
            "--to",
            "+15551230052",
            "--text",
            &long,
            "--url",
            url,
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(r.json()["warnings"][0], "the text needs 2 SMS parts");
    assert!(r.err.is_empty(), "{}", r.err);

    // No warnings field, nothing printed.
    let r = cli(
        cwd,
        &["send", "--to", "+15551230053", "--text", "hi", "--url", url],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(r.err.is_empty(), "{}", r.err);
}

#[test]
fn log_prints_its_paging_cursor() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    let cwd = root.path();
    let url = d.base.as_str();
    let mut ids = Vec::new();
    for to in ["+15551230061", "+15551230062"] {
        let r = cli(
            cwd,
            &["--json", "send", "--to", to, "--text", "page", "--url", url],
        );
        assert_eq!(r.code, 0, "{}{}", r.out, r.err);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    // Newest first: the first page holds the second message, the cursor points past it.
    let r = cli(cwd, &["log", "--limit", "1", "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.out);
    assert!(lines[1].starts_with(&format!("{}  ", ids[1])), "{}", r.out);
    let cursor = lines[2]
        .strip_prefix("next page: --before ")
        .unwrap_or_else(|| panic!("no cursor line: {}", r.out));
    let r = cli(cwd, &["--json", "log", "--limit", "1", "--url", url]);
    assert_eq!(r.json()["next_before"], cursor);

    let r = cli(
        cwd,
        &[
            "--json", "log", "--limit", "1", "--before", cursor, "--url", url,
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let page = r.json();
    assert_eq!(page["messages"][0]["id"], ids[0].as_str());
    // A full page always carries a cursor; following the last one gives an empty page without.
    let last = page["next_before"]
        .as_str()
        .expect("a full page has a cursor");
    let r = cli(
        cwd,
        &["log", "--limit", "1", "--before", last, "--url", url],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert_eq!(r.out.trim(), "no messages");
    let r = cli(
        cwd,
        &["log", "--limit", "1", "--before", cursor, "--url", url],
    );
    // The ID column is as wide as the ids, so the next column starts after them.
    let header = r.out.lines().next().unwrap();
    assert!(header.find("TO").unwrap() > ids[0].len(), "{}", r.out);
}

#[test]
fn status_shows_readiness_queue_and_modems() {
    let root = tempfile::tempdir().unwrap();
    let d = daemon_in(root.path());
    d.wait_ready();
    let cwd = root.path();
    let url = d.base.as_str();
    let r = cli(
        cwd,
        &["send", "--to", "+15551230071", "--text", "hi", "--url", url],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    d.wait_for("/v1/messages?limit=1", Duration::from_secs(20), |v| {
        v["messages"][0]["status"] != "queued" && v["messages"][0]["status"] != "sending"
    });

    let r = cli(cwd, &["status", "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    assert!(
        r.out
            .starts_with(&format!("simgate at {url}: ready (1 of 1 modem ready)")),
        "{}",
        r.out
    );
    assert!(r.out.contains("queue: 0 messages waiting"), "{}", r.out);
    assert!(r.out.contains("1 sent"), "{}", r.out);
    assert!(r.out.contains("Simgate Mobile (home)"), "{}", r.out);
    assert!(r.err.is_empty(), "{}", r.err);

    let r = cli(cwd, &["--json", "status", "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let st = r.json();
    assert_eq!(st["ready"], true);
    assert_eq!(st["queue_depth"], 0);
    assert_eq!(st["sends"]["sent"], 1);
    assert_eq!(st["modem_details"], true);
    assert_eq!(st["modems"][0]["state"], "ready");
    assert_eq!(st["modems"][0]["sent"], 1);

    // Without a token: what the open routes tell, and a note saying why the rest is missing.
    let elsewhere = tempfile::tempdir().unwrap();
    let r = cli(elsewhere.path(), &["--json", "status", "--url", url]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let st = r.json();
    assert_eq!(st["modem_details"], false);
    assert_eq!(st["modems"][0]["state"], "ready");
    // (A machine with a system-wide daemon has a token in /var/lib/simgate; it is not this one's.)
    assert!(
        r.err.contains("no-token") || r.err.contains("unauthorized"),
        "{}",
        r.err
    );
}

#[test]
fn no_modem_ready_and_a_full_queue_exit_7() {
    // An external simulator that never registers: the modem is never ready, texts stay queued.
    let sim = support::SimProcess::start(&["--no-network"]);
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("simgate-data");
    let config = format!(
        "[limits]\nqueue_max = 1\n\n[[modem]]\ndevice = {:?}\n",
        sim.link.display().to_string()
    );
    let (child, listen, _) = daemon::spawn_serve(&data_dir, &[], Some(&config), &[]);
    let _daemon = KillOnDrop(child);
    let url = format!("http://{listen}");
    let cwd = root.path();

    let r = cli(cwd, &["status", "--url", &url]);
    assert_eq!(r.code, 7, "{}{}", r.out, r.err);
    assert!(
        r.out.starts_with(&format!(
            "simgate at {url}: not ready (no modem is ready: modem0 is "
        )),
        "{}",
        r.out
    );
    let r = cli(cwd, &["--json", "status", "--url", &url]);
    assert_eq!(r.code, 7, "{}{}", r.out, r.err);
    assert_eq!(r.json()["ready"], false);

    let r = cli(
        cwd,
        &[
            "send",
            "--to",
            "+15551230081",
            "--text",
            "one",
            "--url",
            &url,
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    let r = cli(
        cwd,
        &[
            "--json",
            "send",
            "--to",
            "+15551230082",
            "--text",
            "two",
            "--url",
            &url,
        ],
    );
    assert_eq!(r.code, 7, "{}{}", r.out, r.err);
    let e = r.json_error();
    assert_eq!(e["error"]["status"], 503, "{e}");
    assert_eq!(e["error"]["kind"], "queue-full", "{e}");
}

/// Stops a daemon child however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
