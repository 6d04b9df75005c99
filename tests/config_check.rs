//! `simgate config check [FILE]`: the real binary on real files — "FILE: ok" with warnings and
//! exit 0, or the first error naming file, key and reason with exit 1; `--json` as one object.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .arg("config")
        .arg("check")
        .args(args)
        .output()
        .expect("run simgate config check");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_file(path: &Path, json: bool) -> Run {
    let p = path.to_str().unwrap();
    if json {
        check(&[p, "--json"])
    } else {
        check(&[p])
    }
}

/// A config file in a fresh directory whose data_dir is that directory (made private) and
/// whose modem device exists, so only what a test adds can produce a warning.
fn file_with(extra: &str) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("simgate.toml");
    let text = format!(
        "{extra}\n[store]\ndata_dir = \"{}\"\n\n[[modem]]\ndevice = \"/dev/null\"\n",
        dir.path().display()
    );
    std::fs::write(&path, text).unwrap();
    (path, dir)
}

fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", run.stdout))
}

#[test]
fn a_good_file_is_ok() {
    let (path, _dir) = file_with("[api]\nlisten = \"127.0.0.1:8787\"\n");
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, format!("{}: ok\n", path.display()));
    assert_eq!(run.stderr, "");

    let v = json_of(&check_file(&path, true));
    assert_eq!(v["file"], path.to_str().unwrap());
    assert_eq!(v["ok"], true);
    assert!(v.get("error").is_none());
    assert_eq!(v["warnings"], serde_json::json!([]));
}

#[test]
fn a_good_file_with_warnings_is_still_ok() {
    let (path, _dir) = file_with("[api]\nlisten = \"0.0.0.0:8787\"\n");
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!("{}: ok\n", path.display())),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "{}: warning: api.listen 0.0.0.0:8787",
            path.display()
        )),
        "{}",
        run.stdout
    );
    let v = json_of(&check_file(&path, true));
    assert_eq!(v["ok"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}

#[test]
fn an_unknown_key_is_named() {
    let (path, _dir) = file_with("[api]\nlisen = \"127.0.0.1:1\"\n");
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(&format!("{}:", path.display())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("api.lisen"), "{}", run.stderr);
    assert!(run.stderr.contains("unknown"), "{}", run.stderr);

    let v = json_of(&check_file(&path, true));
    assert_eq!(v["ok"], false);
    assert_eq!(v["error"]["key"], "api.lisen");
    assert!(v["error"]["reason"].as_str().unwrap().contains("unknown"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains(path.to_str().unwrap())
    );
}

#[test]
fn a_bad_value_is_named_with_its_key() {
    for (extra, key, reason) in [
        (
            "[limits]\notp_per_number = \"3/10w\"\n",
            "limits.otp_per_number",
            "10w",
        ),
        ("[api]\nlisten = \"localhost\"\n", "api.listen", "localhost"),
        // Issue 16.6: a host name is refused, and the error says that is why.
        (
            "[api]\nlisten = \"localhost:8787\"\n",
            "api.listen",
            "not a host name",
        ),
        // Issue 16.3: a misspelt level used to pass and then silence every line, errors
        // included; the valid levels are in the error.
        (
            "[log]\nlevel = \"verbose\"\n",
            "log.level",
            "\"verbose\" is not a log level: use one of off, error, warn, info, debug, trace",
        ),
        (
            "[log]\nlevel = \"simgate=loud,info\"\n",
            "log.level",
            "\"loud\" is not a log level",
        ),
        (
            "[log]\nlevel = \"tower_http=debug\"\n",
            "log.level",
            "shows no simgate log line",
        ),
    ] {
        let (path, _dir) = file_with(extra);
        let run = check_file(&path, false);
        assert_eq!(run.code, Some(1), "accepted {extra}");
        assert!(
            run.stderr.contains(&path.display().to_string()),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains(key), "no {key} in {}", run.stderr);
        assert!(run.stderr.contains(reason), "no {reason} in {}", run.stderr);
        let v = json_of(&check_file(&path, true));
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["key"], key);
        assert!(v["error"]["line"].as_u64().is_some(), "{v}");
    }
    // A wrongly typed value inside the second modem table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    std::fs::write(
        &path,
        "[[modem]]\ndevice = \"/dev/a\"\n[[modem]]\ndevice = \"/dev/b\"\nbaud = \"fast\"\n",
    )
    .unwrap();
    let v = json_of(&check_file(&path, true));
    assert_eq!(v["error"]["key"], "modem[1].baud");
}

#[test]
fn a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .starts_with(&format!("{}: cannot read", path.display())),
        "{}",
        run.stderr
    );
    let v = json_of(&check_file(&path, true));
    assert_eq!(v["ok"], false);
    assert!(v["error"]["key"].is_null());
}

#[test]
fn the_default_file_is_etc_simgate() {
    let run = check(&["--json"]);
    let v = json_of(&run);
    assert_eq!(v["file"], "/etc/simgate/simgate.toml");
    assert_eq!(run.code, Some(if v["ok"] == true { 0 } else { 1 }));
}

#[test]
fn the_pin_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "4321\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (path, _cfg_dir) = file_with("");
    let text =
        std::fs::read_to_string(&path).unwrap() + &format!("pin_file = \"{}\"\n", pin.display());
    std::fs::write(&path, text).unwrap();
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.stderr.contains("modem[0].pin_file"), "{}", run.stderr);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    assert!(!run.stderr.contains("4321"));

    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = check_file(&path, false);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!run.stdout.contains("4321"));
}

#[test]
fn a_data_dir_whose_parent_is_missing_warns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\ndata_dir = \"{}/missing/simgate\"\n[[modem]]\ndevice = \"/dev/null\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let v = json_of(&check_file(&path, true));
    assert_eq!(v["ok"], true);
    let warnings = v["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("store.data_dir"));
}
