//! `simgate config check [FILE]`: validates a config file the way `serve` will read it, plus the
//! files it points at, without starting anything.
//!
//! Loading is [`Config::load`] itself, so "ok" here means `serve` accepts the file. On top of
//! that it checks what `serve` would only find at start or later: that each modem's `pin_file`
//! can be read and is private (`serve` refuses a PIN file group or others can read), that the
//! PIN in it has the right shape, and where `store.data_dir` would land.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

/// `simgate config ...`
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// What to do with the config file.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// The `config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Check a config file: prints "FILE: ok" and any warnings (exit 0), or the first error
    /// with file, key and reason (exit 1).
    Check(CheckArgs),
}

/// Arguments of `simgate config check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The file to check.
    #[arg(value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub file: PathBuf,
}

/// The verdict on one file.
#[derive(Debug)]
pub struct CheckReport {
    /// The first problem that would stop `serve`, if any.
    pub error: Option<ConfigError>,
    /// Things `serve` accepts but that are probably unintended.
    pub warnings: Vec<String>,
}

/// Runs `simgate config <command>`.
pub fn run(args: ConfigArgs, json: bool) -> ExitCode {
    match args.command {
        ConfigCommand::Check(c) => check_command(&c.file, json),
    }
}

fn check_command(file: &Path, json: bool) -> ExitCode {
    let report = check(file);
    let name = file.display().to_string();
    if json {
        let mut v = serde_json::json!({
            "file": name,
            "ok": report.error.is_none(),
            "warnings": report.warnings,
        });
        if let Some(e) = &report.error {
            v["error"] = serde_json::json!({
                "message": e.to_string(),
                "key": e.key,
                "line": e.position.map(|p| p.0),
                "column": e.position.map(|p| p.1),
                "reason": e.reason,
            });
        }
        println!("{v}");
    } else {
        match &report.error {
            None => println!("{name}: ok"),
            Some(e) => eprintln!("{e}"),
        }
        for w in &report.warnings {
            println!("{name}: warning: {w}");
        }
    }
    if report.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks `file`: loads it as `serve` would, then the files it names. Warnings are collected
/// even when the file fails further checks, as long as it parsed.
pub fn check(file: &Path) -> CheckReport {
    let origin = file.display().to_string();
    let config = match Config::load(file) {
        Ok(c) => c,
        Err(e) => {
            return CheckReport {
                error: Some(e),
                warnings: Vec::new(),
            };
        }
    };
    let mut warnings = config.warnings();
    let mut error = config.check_startup(&origin, None).err();
    for (i, modem) in config.modems.iter().enumerate() {
        // A modem named only by identity has no fixed path to check: it is found by scanning.
        let scanned = modem.device.as_os_str().is_empty();
        if !scanned && std::fs::symlink_metadata(&modem.device).is_err() {
            warnings.push(format!(
                "modem[{i}].device {} does not exist now: plug the modem in or install the udev \
                 rule that creates it (simgate doctor lists the serial ports)",
                modem.device.display()
            ));
        }
    }
    let data_dir = &config.store.data_dir;
    match std::fs::metadata(data_dir) {
        Ok(m) if !m.is_dir() => {
            error.get_or_insert(ConfigError {
                origin: origin.clone(),
                key: Some("store.data_dir".into()),
                position: None,
                reason: format!("{} exists and is not a directory", data_dir.display()),
            });
        }
        Ok(m) => {
            // What serve refuses is an error here too, in serve's words.
            if let Err(e) = crate::datadir::check_dir(data_dir) {
                error.get_or_insert(ConfigError {
                    origin: origin.clone(),
                    key: Some("store.data_dir".into()),
                    position: None,
                    reason: e.to_string(),
                });
            } else if m.mode() & 0o077 != 0 {
                warnings.push(format!(
                    "store.data_dir {} is open to group or others; it holds the API token and \
                     the OTP key: run chmod 700 {}",
                    data_dir.display(),
                    data_dir.display()
                ));
            }
        }
        Err(_) => match data_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
                warnings.push(format!(
                    "store.data_dir {}: its parent {} does not exist (a typo?); serve would \
                     create both",
                    data_dir.display(),
                    parent.display()
                ));
            }
            _ => {}
        },
    }
    CheckReport { error, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("simgate.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn pin_file_must_be_readable_private_and_a_pin() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        let text = format!(
            "[store]\ndata_dir = \"{}\"\n[[modem]]\ndevice = \"/dev/null\"\npin_file = \"{}\"\n",
            dir.path().display(),
            pin.display()
        );
        let cfg = file_with(dir.path(), &text);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

        let r = check(&cfg);
        let e = r.error.expect("missing pin file");
        assert_eq!(e.key.as_deref(), Some("modem[0].pin_file"));
        assert!(e.reason.contains("cannot read"), "{}", e.reason);

        std::fs::write(&pin, "4321\n").unwrap();
        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = check(&cfg).error.expect("group-readable pin file");
        assert!(e.reason.contains("chmod 600"), "{}", e.reason);
        assert!(!e.to_string().contains("4321"));

        std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = check(&cfg);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        std::fs::write(&pin, "12ab\n").unwrap();
        let e = check(&cfg).error.expect("not digits");
        assert!(e.reason.contains("4 to 8 digits"), "{}", e.reason);
        assert!(!e.to_string().contains("12ab"));
    }

    #[test]
    fn data_dir_and_device_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[store]\ndata_dir = \"{}/nope/data\"\n[[modem]]\ndevice = \"{}/ttyUSB7\"\n",
            dir.path().display(),
            dir.path().display()
        );
        let r = check(&file_with(dir.path(), &text));
        assert!(r.error.is_none());
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("modem[0].device"));
        assert!(r.warnings[1].contains("does not exist (a typo?)"));

        let not_dir = dir.path().join("file");
        std::fs::write(&not_dir, "").unwrap();
        let text = format!(
            "[store]\ndata_dir = \"{}\"\n[[modem]]\ndevice = \"/dev/null\"\n",
            not_dir.display()
        );
        let e = check(&file_with(dir.path(), &text)).error.unwrap();
        assert_eq!(e.key.as_deref(), Some("store.data_dir"));
    }
}
