//! Config files as an operator writes them: the shipped example, real files on disk, and a table
//! of bad files each naming the key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use simgate::config::{Config, ConfigError, UnknownOutcome};
use simgate::limits::Rate;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("simgate.example.toml")
}

#[test]
fn example_file_equals_the_defaults() {
    let c = Config::load(&example_path()).unwrap();
    assert_eq!(c, Config::default());
    assert!(c.warnings().is_empty());
}

#[test]
fn example_file_names_every_key() {
    // Every key the validated config knows must be documented in the example, so the example
    // stays the reference. Keys are checked as `name = ` at the start of a line.
    let text = std::fs::read_to_string(example_path()).unwrap();
    for key in [
        "listen",
        "tokens",
        "max_body_bytes",
        "data_dir",
        "retention_days",
        "mask_numbers_after_days",
        "length",
        "ttl_seconds",
        "min_ttl_seconds",
        "max_ttl_seconds",
        "max_attempts",
        "template",
        "app_hash",
        "otp_per_number",
        "otp_per_number_per_day",
        "verify_per_number",
        "otp_per_prefix",
        "prefix_digits",
        "requests_per_token",
        "sends_global",
        "queue_max",
        "allow_prefixes",
        "deny_prefixes",
        "on_unknown_outcome",
        "text_max_age_seconds",
        "level",
        "id",
        "device",
        "imei",
        "iccid",
        "usb_serial",
        "scan",
        "baud",
        "pin_file",
        "delivery_reports",
        "send_timeout_seconds",
        "sends_per_minute",
        "command_gap_ms",
        "idle_timeout_seconds",
        "header_timeout_seconds",
        "body_timeout_seconds",
        "max_connections",
        "max_parts",
        "max_resends",
        "on_pending",
        "max_unknown_outcomes",
        "max_partial_resends",
        "status_callback_http_hosts",
        "secret_file",
        "otp_ttl_seconds",
        "signing_key_file",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{key} = "))),
            "{key} is not in simgate.example.toml"
        );
    }
}

#[test]
fn empty_file_on_disk_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    std::fs::write(&path, "").unwrap();
    assert_eq!(Config::load(&path).unwrap(), Config::default());
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.origin, path.display().to_string());
    assert!(e.to_string().contains("cannot read"), "{e}");
}

#[test]
fn a_full_custom_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    std::fs::write(
        &path,
        r#"
[api]
listen = "0.0.0.0:9000"
tokens = ["0123456789abcdef0123"]

[store]
data_dir = "/srv/simgate"
mask_numbers_after_days = 0

[otp]
length = 8
ttl_seconds = 120
template = "{code} is your code"
app_hash = "FA+9qCX9VSu"

[limits]
otp_per_number = "5/1h"
sends_global = "100/1s"
allow_prefixes = ["+44", "+1555"]
deny_prefixes = ["+4490"]

[dispatch]
on_unknown_outcome = "fail"

[log]
level = "simgate=debug,info"

[[modem]]
device = "/dev/ttyUSB2"
pin_file = "/etc/simgate/pin"

[[modem]]
id = "backup"
device = "/dev/ttyUSB5"
delivery_reports = false
sends_per_minute = 0
command_gap_ms = 5
"#,
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.api.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.warnings().len(), 1, "non-loopback listen warns");
    assert_eq!(c.api.tokens.len(), 1);
    assert_eq!(c.store.data_dir, PathBuf::from("/srv/simgate"));
    assert_eq!(c.store.mask_numbers_after_days, 0);
    assert_eq!(c.otp.length.get(), 8);
    assert_eq!(c.otp.ttl, Duration::from_secs(120));
    assert_eq!(c.otp.app_hash.as_ref().unwrap().as_str(), "FA+9qCX9VSu");
    assert_eq!(c.limits.rates.otp_per_number, "5/1h".parse().unwrap());
    assert_eq!(c.limits.rates.verify_per_number, "10/1m".parse().unwrap());
    assert_eq!(c.limits.rates.requests_per_token, Rate::Off);
    assert!(c.limits.prefixes.permits("+447700900123"));
    assert!(!c.limits.prefixes.permits("+449012345678"));
    assert!(!c.limits.prefixes.permits("+33612345678"));
    assert_eq!(c.dispatch.on_unknown_outcome, UnknownOutcome::Fail);
    assert_eq!(c.log.level, "simgate=debug,info");
    assert_eq!(c.modems.len(), 2);
    assert_eq!(c.modems[0].id, "modem0");
    assert_eq!(
        c.modems[0].pin_file.as_deref(),
        Some(Path::new("/etc/simgate/pin"))
    );
    assert_eq!(c.modems[1].id, "backup");
    assert!(!c.modems[1].delivery_reports);
    assert_eq!(c.modems[1].baud, 115_200);
    assert_eq!(c.modems[0].command_gap, Duration::from_millis(1));
    assert_eq!(c.modems[1].command_gap, Duration::from_millis(5));
}

/// Loads `text` from a real file and returns the error, with the file name checked.
fn error_of(text: &str) -> ConfigError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let e = Config::load(&path).expect_err(text);
    assert_eq!(e.origin, path.display().to_string(), "{text}");
    assert!(e.to_string().starts_with(&e.origin), "{e}");
    e
}

#[test]
fn bad_files_name_the_key() {
    let table: &[(&str, &str)] = &[
        ("[api]\nlisten = \"localhost\"\n", "api.listen"),
        ("[api]\nlisten = 8787\n", "api.listen"),
        ("[api]\ntokens = [\"short\"]\n", "api.tokens[0]"),
        (
            "[api]\ntokens = [\"0123456789abcdef\", \"has a space in it!!\"]\n",
            "api.tokens[1]",
        ),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes"),
        ("[api]\nport = 1\n", "api.port"),
        ("[store]\ndata_dir = \"\"\n", "store.data_dir"),
        ("[store]\nretention_days = -1\n", "store.retention_days"),
        ("[otp]\nlength = 3\n", "otp.length"),
        ("[otp]\nlength = 11\n", "otp.length"),
        ("[otp]\nttl_seconds = 10\n", "otp.ttl_seconds"),
        ("[otp]\nttl_seconds = 100000\n", "otp.ttl_seconds"),
        ("[otp]\nmin_ttl_seconds = 0\n", "otp.min_ttl_seconds"),
        (
            "[otp]\nmin_ttl_seconds = 600\nmax_ttl_seconds = 60\n",
            "otp.max_ttl_seconds",
        ),
        ("[otp]\nmax_attempts = 0\n", "otp.max_attempts"),
        ("[otp]\ntemplate = \"no code\"\n", "otp.template"),
        ("[otp]\ntemplate = \"{code} {mins}\"\n", "otp.template"),
        ("[otp]\napp_hash = \"short\"\n", "otp.app_hash"),
        (
            "[limits]\notp_per_number = \"3 per 10m\"\n",
            "limits.otp_per_number",
        ),
        (
            "[limits]\nverify_per_number = \"0/1m\"\n",
            "limits.verify_per_number",
        ),
        (
            "[limits]\nrequests_per_token = \"5/1w\"\n",
            "limits.requests_per_token",
        ),
        ("[limits]\nsends_global = 5\n", "limits.sends_global"),
        ("[limits]\nqueue_max = 0\n", "limits.queue_max"),
        (
            "[limits]\notp_per_number_per_day = \"ten\"\n",
            "limits.otp_per_number_per_day",
        ),
        (
            "[limits]\nallow_prefixes = [\"44\"]\n",
            "limits.allow_prefixes[0]",
        ),
        (
            "[limits]\ndeny_prefixes = [\"+1\", \"+1-555\"]\n",
            "limits.deny_prefixes[1]",
        ),
        (
            "[dispatch]\non_unknown_outcome = \"retry\"\n",
            "dispatch.on_unknown_outcome",
        ),
        (
            "[dispatch]\ntext_max_age_seconds = 0\n",
            "dispatch.text_max_age_seconds",
        ),
        ("[log]\nlevel = \"loud[\"\n", "log.level"),
        ("[[modem]]\npin = \"1234\"\n", "modem[0].pin"),
        (
            "[[modem]]\n[[modem]]\ndevice = \"/dev/b\"\nbaud = 0\n",
            "modem[1].baud",
        ),
        (
            "[[modem]]\ndevice = \"/dev/a\"\n[[modem]]\ndevice = \"/dev/a\"\n",
            "modem[1].device",
        ),
        (
            "[[modem]]\nid = \"x\"\ndevice = \"/dev/a\"\n[[modem]]\nid = \"x\"\ndevice = \"/dev/b\"\n",
            "modem[1].id",
        ),
        ("[[modem]]\nid = \"a b\"\n", "modem[0].id"),
        (
            "[[modem]]\nsend_timeout_seconds = 0\n",
            "modem[0].send_timeout_seconds",
        ),
        (
            "[[modem]]\ncommand_gap_ms = 1001\n",
            "modem[0].command_gap_ms",
        ),
        (
            "[[modem]]\ndelivery_reports = \"yes\"\n",
            "modem[0].delivery_reports",
        ),
        ("[[modem]]\nspeed = 9600\n", "modem[0].speed"),
        ("modem = []\n", "modem"),
        ("[modems]\n", "modems"),
    ];
    for (text, key) in table {
        let e = error_of(text);
        assert_eq!(e.key.as_deref(), Some(*key), "file:\n{text}\nerror: {e}");
        assert!(e.to_string().contains(key), "{e}");
        assert!(!e.reason.is_empty());
        // Every key in this table is written in its file, so the error can point at it.
        assert!(e.position.is_some(), "no position: {e}");
    }
}

#[test]
fn pin_never_appears_in_errors() {
    let e = error_of("[[modem]]\npin = \"9876\"\n");
    assert!(!e.to_string().contains("9876"), "{e}");
    assert!(e.reason.contains("pin_file"), "{e}");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = error_of("[api]\nlisten = \"127.0.0.1:8787\"\n\n[otp\nlength = 6\n");
    assert_eq!(e.key, None);
    let (line, col) = e.position.expect("position");
    assert_eq!(line, 4, "{e}");
    assert!(col >= 1);
    assert!(e.to_string().contains(":4:"), "{e}");
}

#[test]
fn duplicate_keys_are_refused() {
    let e = error_of("[otp]\nlength = 6\nlength = 8\n");
    assert!(e.position.is_some(), "{e}");
}

#[test]
fn type_errors_point_at_the_value() {
    let e = error_of("[otp]\nlength = 6\nmax_attempts = \"five\"\n");
    assert_eq!(e.key.as_deref(), Some("otp.max_attempts"));
    assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
}

#[test]
fn validation_errors_point_at_the_value() {
    let e = error_of(
        "[api]\nlisten = \"127.0.0.1:1\"\n\n[[modem]]\ndevice = \"/dev/a\"\n\n[[modem]]\n\
         device = \"/dev/b\"\nbaud = 12\n",
    );
    assert_eq!(e.key.as_deref(), Some("modem[1].baud"));
    assert_eq!(e.position, Some((9, 8)), "{e}");
    assert!(e.to_string().contains(":9:8: modem[1].baud: "), "{e}");

    let e = error_of("[limits]\ndeny_prefixes = [\"+1\",\n  \"1555\"]\n");
    assert_eq!(e.key.as_deref(), Some("limits.deny_prefixes[1]"));
    assert_eq!(e.position, Some((3, 3)), "{e}");
}

#[test]
fn webhook_tables_load_and_a_bad_one_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    std::fs::write(
        &path,
        format!(
            r#"
[[webhook]]
url = "https://app.example.com/hooks/simgate"
secret = ["{secret}", "{secret}"]
events = ["otp.approved", "message.delivered"]
timeout_seconds = 5

[[webhook]]
url = "http://127.0.0.1:9000/hook"
secret = "{secret}"
"#
        ),
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.webhooks.len(), 2);
    assert_eq!(c.webhooks[0].events, ["otp.approved", "message.delivered"]);
    assert_eq!(c.webhooks[0].timeout, Duration::from_secs(5));
    assert_eq!(c.webhooks[1].retry_period, Duration::from_secs(86_400));
    assert!(c.check_startup("t", None).is_ok());

    for (body, key) in [
        (
            format!("[[webhook]]\nurl = \"http://hooks.lan/x\"\nsecret = \"{secret}\"\n"),
            "webhook[0].url",
        ),
        (
            format!(
                "[[webhook]]\nurl = \"https://a/x\"\nsecret = \"{secret}\"\nevents = [\"otp.sent\"]\n"
            ),
            "webhook[0].events[0]",
        ),
        (
            "[[webhook]]\nurl = \"https://a/x\"\n".to_string(),
            "webhook[0].secret",
        ),
    ] {
        std::fs::write(&path, &body).unwrap();
        let e: ConfigError = Config::load(&path).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{body}: {e}");
    }

    // A secret file others can read passes the file's own checks, and then fails the start-up
    // checks that serve, config check and doctor share.
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(
        &path,
        format!(
            "[[webhook]]\nurl = \"https://a/x\"\nsecret_file = \"{}\"\n",
            secret_file.display()
        ),
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    let e = c.check_startup("t", None).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("webhook[0].secret_file"));
    assert!(e.reason.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(c.check_startup("t", None).is_ok());
}
