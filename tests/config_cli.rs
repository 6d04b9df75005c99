//! `simgate serve --config FILE` with a bad file: the real binary must refuse to start and say
//! which file, which key and why (docs/SPEC.md "Config file"), before it opens a port or a modem.

use std::process::Command;

fn serve_with(text: &str) -> (Option<i32>, String, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, path, dir)
}

#[test]
fn bad_files_stop_serve_with_file_key_and_reason() {
    for (text, key, reason) in [
        (
            "[limits]\notp_per_number = \"3/10w\"\n",
            "limits.otp_per_number",
            "\"10w\"",
        ),
        (
            "[[modem]]\ndevice = \"/dev/a\"\n[[modem]]\ndevice = \"/dev/b\"\nbaud = \"fast\"\n",
            "modem[1].baud",
            "string",
        ),
        ("[api]\nlisen = \"127.0.0.1:1\"\n", "api.lisen", "unknown"),
        ("[[modem]]\npin = \"4321\"\n", "modem[0].pin", "pin_file"),
    ] {
        let (code, stderr, path, _dir) = serve_with(text);
        assert_ne!(code, Some(0), "serve accepted:\n{text}");
        assert!(code.is_some(), "serve was killed by a signal");
        assert!(
            stderr.contains(&path.display().to_string()),
            "no file name in {stderr:?}"
        );
        assert!(stderr.contains(key), "no key {key} in {stderr:?}");
        assert!(stderr.contains(reason), "no reason {reason} in {stderr:?}");
        assert!(!stderr.contains("4321"), "the PIN leaked: {stderr:?}");
    }
}

#[test]
fn syntax_error_names_line_and_column() {
    let (code, stderr, path, _dir) = serve_with("[api]\nlisten = \"127.0.0.1:8787\n");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(&format!("{}:2:", path.display())),
        "no line in {stderr:?}"
    );
}
