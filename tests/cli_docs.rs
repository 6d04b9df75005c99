//! The CLI's own documentation: the committed man pages in `man/` (which the .deb ships) match
//! what the binary generates, shell completions come out for every shell, and every `--help`
//! names one thing with one metavar and lists the options in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn simgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(args)
        .output()
        .expect("run simgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pages(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn committed_man_pages_are_current() {
    let fresh = tempfile::tempdir().unwrap();
    let (code, out, err) = simgate(&["man", fresh.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let generated = pages(fresh.path());
    let committed = pages(&Path::new(env!("CARGO_MANIFEST_DIR")).join("man"));
    let fix = "regenerate them: rm -f man/*.1 && cargo run -- man man";
    let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        names(&committed),
        names(&generated),
        "man/ lists other pages; {fix}"
    );
    for (name, text) in &generated {
        assert!(committed[name] == *text, "man/{name} is stale; {fix}");
    }
    for name in ["simgate.1", "simgate-otp-send.1", "simgate-status.1"] {
        assert!(generated.contains_key(name), "no {name}");
    }
    assert!(
        !generated
            .keys()
            .any(|n| n.contains("-man") || n.contains("-help")),
        "hidden or help commands got pages: {:?}",
        generated.keys()
    );
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = simgate(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["status", "resend", "idempotency-key"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, err) = simgate(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
}

/// Every visible command path, from `simgate --help` down.
fn commands(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, out, err) = simgate(&args);
    assert_eq!(code, 0, "{args:?}: {err}");
    let mut all = vec![prefix.to_vec()];
    let Some(list) = out.split("Commands:\n").nth(1) else {
        return all;
    };
    for line in list.lines().take_while(|l| l.starts_with("  ")) {
        let name = line.split_whitespace().next().unwrap();
        if name != "help" {
            let mut path = prefix.to_vec();
            path.push(name.to_owned());
            all.extend(commands(&path));
        }
    }
    all
}

#[test]
fn help_is_consistent_across_commands() {
    let mut metavars: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let all = commands(&[]);
    assert!(all.len() > 15, "{all:?}");
    for path in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (_, out, _) = simgate(&args);
        let name = path.join(" ");
        let options: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("--") || l.trim_start().starts_with("-h,"))
            .collect();
        // `--json` closes each command's own options, right before `--help`.
        if !path.is_empty() {
            let json = options.iter().position(|l| l.contains("--json"));
            let help = options.iter().position(|l| l.contains("-h, --help"));
            assert_eq!(
                json.map(|j| j + 1),
                help,
                "simgate {name}: --json is not right before --help:\n{out}"
            );
        }
        for line in &options {
            let mut words = line.split_whitespace();
            let flag = words.next().unwrap().trim_end_matches(',');
            if let Some(m) = words.next().filter(|w| w.starts_with('<')) {
                metavars
                    .entry(flag.to_owned())
                    .or_default()
                    .insert((m.to_owned(), name.clone()));
            }
        }
        if ["send", "otp", "log", "status"].contains(&path.first().map_or("", String::as_str)) {
            assert!(
                out.contains("Exit status:\n  0  success"),
                "simgate {name} --help lists no exit statuses"
            );
        }
    }
    for (flag, uses) in &metavars {
        let distinct: BTreeSet<&String> = uses.iter().map(|(m, _)| m).collect();
        assert_eq!(distinct.len(), 1, "{flag} has several metavars: {uses:?}");
    }
    // The same kind of value gets the same metavar, whichever option takes it.
    for (flag, want) in [
        ("--to", "<NUMBER>"),
        ("--config", "<FILE>"),
        ("--data-dir", "<DIR>"),
        ("--device", "<PATH>"),
        ("--listen", "<ADDR>"),
        ("--ttl", "<SECS>"),
        ("--timeout", "<SECS>"),
        ("--limit", "<N>"),
        ("--id", "<ID>"),
    ] {
        let got: BTreeSet<&String> = metavars[flag].iter().map(|(m, _)| m).collect();
        assert_eq!(got, BTreeSet::from([&want.to_owned()]), "{flag}");
    }
}
