//! Checks `udev/60-simgate-modems.rules` without a udev daemon or a modem.
//!
//! systemd 252 (Debian 12, Raspberry Pi OS) has no `udevadm verify`, so this test parses every
//! line against udev(7): `KEY[{attr}]OP"value"` pairs, keys that exist, the operators each key
//! allows, balanced quotes, GOTO targets that exist further down. Then a small evaluator runs
//! the rules against described devices (a Quectel EC25's ports, a Huawei stick's ports, a modem
//! without a USB serial, a USB-serial adapter of another vendor, the modem's USB device node) to
//! prove the symlinks, group, mode, tags and ModemManager flags each one gets. The evaluator
//! implements only what udev(7) says about the keys this file uses; `.ci/run` also feeds the
//! file to the real `udevadm`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

const RULES: &str = include_str!("../udev/60-simgate-modems.rules");

/// The vendors the rules must cover (Huawei, ZTE, Quectel, SIMCom, Sierra Wireless, Telit,
/// u-blox, Fibocom).
const VENDORS: [&str; 8] = [
    "12d1", "19d2", "2c7c", "1e0e", "1199", "1bc7", "1546", "2cb7",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Match,
    NoMatch,
    Assign,
    Add,
    Remove,
    Final,
}

#[derive(Debug, Clone)]
struct Pair {
    key: String,
    attr: Option<String>,
    op: Op,
    value: String,
}

#[derive(Debug, Clone)]
struct Rule {
    line: usize,
    pairs: Vec<Pair>,
}

/// Keys that only compare.
const MATCH_ONLY: &[&str] = &[
    "ACTION",
    "DEVPATH",
    "KERNEL",
    "KERNELS",
    "SUBSYSTEM",
    "SUBSYSTEMS",
    "DRIVER",
    "DRIVERS",
    "ATTRS",
    "TAGS",
    "CONST",
    "TEST",
    "PROGRAM",
    "RESULT",
];
/// Keys that both compare (==, !=) and assign.
const MATCH_OR_ASSIGN: &[&str] = &["NAME", "SYMLINK", "ATTR", "SYSCTL", "ENV", "TAG"];
/// Keys that only assign.
const ASSIGN_ONLY: &[&str] = &[
    "OWNER", "GROUP", "MODE", "SECLABEL", "RUN", "LABEL", "GOTO", "IMPORT", "OPTIONS",
];
/// Keys that need `{...}`.
const NEEDS_ATTR: &[&str] = &[
    "ATTR", "ATTRS", "SYSCTL", "ENV", "CONST", "SECLABEL", "IMPORT",
];
/// Keys that may carry `{...}`.
const MAY_HAVE_ATTR: &[&str] = &["RUN", "TEST"];

fn parse_line(line_no: usize, text: &str) -> Result<Rule, String> {
    let err = |msg: &str| Err(format!("line {line_no}: {msg}: {text}"));
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() {
            return err("expected a key");
        }
        rest = &rest[key_end..];
        let mut attr = None;
        if let Some(after) = rest.strip_prefix('{') {
            let Some(close) = after.find('}') else {
                return err("unclosed {");
            };
            let name = &after[..close];
            if name.is_empty() || name.contains(['"', ' ', '{']) {
                return err("bad {attribute}");
            }
            attr = Some(name.to_owned());
            rest = &after[close + 1..];
        }
        let (op, len) = if rest.starts_with("==") {
            (Op::Match, 2)
        } else if rest.starts_with("!=") {
            (Op::NoMatch, 2)
        } else if rest.starts_with("+=") {
            (Op::Add, 2)
        } else if rest.starts_with("-=") {
            (Op::Remove, 2)
        } else if rest.starts_with(":=") {
            (Op::Final, 2)
        } else if rest.starts_with('=') {
            (Op::Assign, 1)
        } else {
            return err("expected an operator");
        };
        rest = &rest[len..];
        let Some(after) = rest.strip_prefix('"') else {
            return err("value must be quoted");
        };
        let Some(close) = after.find('"') else {
            return err("unbalanced quote");
        };
        let value = after[..close].to_owned();
        rest = after[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
            if rest.is_empty() {
                return err("trailing comma");
            }
        } else if !rest.is_empty() {
            return err("pairs must be separated by commas");
        }
        check_pair(key, attr.as_deref(), op).map_err(|m| format!("line {line_no}: {m}: {text}"))?;
        check_substitutions(&value).map_err(|m| format!("line {line_no}: {m}: {text}"))?;
        pairs.push(Pair {
            key: key.to_owned(),
            attr,
            op,
            value,
        });
    }
    Ok(Rule {
        line: line_no,
        pairs,
    })
}

fn check_pair(key: &str, attr: Option<&str>, op: Op) -> Result<(), String> {
    let is_match = matches!(op, Op::Match | Op::NoMatch);
    if MATCH_ONLY.contains(&key) {
        if !is_match {
            return Err(format!("{key} only compares"));
        }
    } else if ASSIGN_ONLY.contains(&key) {
        if is_match {
            return Err(format!("{key} cannot be compared"));
        }
        if matches!(key, "LABEL" | "GOTO" | "IMPORT") && op != Op::Assign {
            return Err(format!("{key} takes ="));
        }
    } else if !MATCH_OR_ASSIGN.contains(&key) {
        return Err(format!("unknown key {key}"));
    }
    match (
        attr.is_some(),
        NEEDS_ATTR.contains(&key),
        MAY_HAVE_ATTR.contains(&key),
    ) {
        (false, true, _) => Err(format!("{key} needs {{attribute}}")),
        (true, false, false) => Err(format!("{key} takes no {{attribute}}")),
        _ => Ok(()),
    }
}

/// `$env{NAME}` and `$attr{name}` must be closed; no other `$` forms are used here.
fn check_substitutions(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        let tail = &rest[at + 1..];
        let name_end = tail.find('{').ok_or("$ without {")?;
        if !matches!(&tail[..name_end], "env" | "attr") {
            return Err(format!("unknown substitution ${}", &tail[..name_end]));
        }
        let close = tail.find('}').ok_or("unclosed substitution")?;
        rest = &tail[close + 1..];
    }
    Ok(())
}

fn parse(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.ends_with('\\') {
            return Err(format!(
                "line {}: continuation lines are not used here",
                i + 1
            ));
        }
        rules.push(parse_line(i + 1, trimmed)?);
    }
    // LABELs unique; every GOTO jumps forward to one (udev never jumps back).
    let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, rule) in rules.iter().enumerate() {
        for p in rule.pairs.iter().filter(|p| p.key == "LABEL") {
            if labels.insert(&p.value, index).is_some() {
                return Err(format!("line {}: LABEL {} twice", rule.line, p.value));
            }
        }
    }
    for (index, rule) in rules.iter().enumerate() {
        for p in rule.pairs.iter().filter(|p| p.key == "GOTO") {
            match labels.get(p.value.as_str()) {
                Some(&target) if target > index => {}
                Some(_) => return Err(format!("line {}: GOTO {} jumps back", rule.line, p.value)),
                None => return Err(format!("line {}: GOTO {} has no LABEL", rule.line, p.value)),
            }
        }
    }
    Ok(rules)
}

/// fnmatch(3) as udev uses it: `*`, `?`, `[...]` (ranges, `!` negation), and `|` alternatives.
fn glob(pattern: &str, text: &str) -> bool {
    pattern
        .split('|')
        .any(|alt| glob_one(alt.as_bytes(), text.as_bytes()))
}

fn glob_one(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') => (0..=t.len()).any(|i| glob_one(&p[1..], &t[i..])),
        Some(b'?') => !t.is_empty() && glob_one(&p[1..], &t[1..]),
        Some(b'[') => {
            let Some(close) = p.iter().position(|&c| c == b']') else {
                return false;
            };
            let Some(&c) = t.first() else { return false };
            let (negate, set) = match p[1] {
                b'!' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_one(&p[close + 1..], &t[1..])
        }
        Some(&c) => t.first() == Some(&c) && glob_one(&p[1..], &t[1..]),
    }
}

/// A device event as udev would see it.
#[derive(Debug, Clone, Default)]
struct Device {
    action: &'static str,
    subsystem: &'static str,
    kernel: &'static str,
    /// The device's own sysfs attributes (`ATTR{}`).
    attrs: BTreeMap<&'static str, &'static str>,
    /// Attributes of its parents (`ATTRS{}`), e.g. the USB interface's bInterfaceProtocol.
    parent_attrs: BTreeMap<&'static str, &'static str>,
    /// Properties already in the event (DEVTYPE, ...).
    env: BTreeMap<String, String>,
    /// What `IMPORT{builtin}="<name>"` adds, per builtin.
    builtins: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
}

/// What the rules did to a device.
#[derive(Debug, Default)]
struct Outcome {
    env: BTreeMap<String, String>,
    symlinks: BTreeSet<String>,
    tags: BTreeSet<String>,
    group: Option<String>,
    mode: Option<String>,
}

fn substitute(value: &str, env: &BTreeMap<String, String>, attrs: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let open = tail.find('{').unwrap();
        let close = tail.find('}').unwrap();
        let name = &tail[open + 1..close];
        let got = match &tail[..open] {
            "env" => env.get(name).cloned().unwrap_or_default(),
            _ => attrs.get(name).map(|s| s.to_string()).unwrap_or_default(),
        };
        out.push_str(&got);
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    out
}

fn evaluate(rules: &[Rule], device: &Device) -> Outcome {
    let mut out = Outcome {
        env: device.env.clone(),
        ..Outcome::default()
    };
    let mut skip_to: Option<&str> = None;
    for rule in rules {
        if let Some(label) = skip_to {
            if rule
                .pairs
                .iter()
                .any(|p| p.key == "LABEL" && p.value == label)
            {
                skip_to = None;
            } else {
                continue;
            }
        }
        // udev evaluates a line's comparisons before its assignments.
        let matched = rule
            .pairs
            .iter()
            .filter(|p| matches!(p.op, Op::Match | Op::NoMatch))
            .all(|p| {
                let actual: Vec<String> = match p.key.as_str() {
                    "ACTION" => vec![device.action.into()],
                    "SUBSYSTEM" => vec![device.subsystem.into()],
                    "KERNEL" => vec![device.kernel.into()],
                    "ENV" => vec![
                        out.env
                            .get(p.attr.as_deref().unwrap())
                            .cloned()
                            .unwrap_or_default(),
                    ],
                    "ATTR" => vec![
                        device
                            .attrs
                            .get(p.attr.as_deref().unwrap())
                            .map(|s| s.to_string())
                            .unwrap_or_default(),
                    ],
                    "ATTRS" => device
                        .parent_attrs
                        .get(p.attr.as_deref().unwrap())
                        .map(|s| vec![s.to_string()])
                        .unwrap_or_default(),
                    other => panic!("the evaluator does not know {other}; extend it"),
                };
                let hit = actual.iter().any(|a| glob(&p.value, a));
                (p.op == Op::Match) == hit
            });
        if !matched {
            continue;
        }
        for p in rule
            .pairs
            .iter()
            .filter(|p| !matches!(p.op, Op::Match | Op::NoMatch))
        {
            let value = substitute(&p.value, &out.env, &device.attrs);
            match (p.key.as_str(), p.op) {
                ("ENV", Op::Assign) => {
                    out.env.insert(p.attr.clone().unwrap(), value);
                }
                ("IMPORT", Op::Assign) => {
                    assert_eq!(p.attr.as_deref(), Some("builtin"), "line {}", rule.line);
                    if let Some(props) = device.builtins.get(value.as_str()) {
                        for (k, v) in props {
                            out.env.insert(k.to_string(), v.clone());
                        }
                    }
                }
                ("SYMLINK", Op::Add) => {
                    out.symlinks
                        .extend(value.split_whitespace().map(String::from));
                }
                ("TAG", Op::Add) => {
                    out.tags.insert(value);
                }
                ("GROUP", Op::Assign) => out.group = Some(value),
                ("MODE", Op::Assign) => out.mode = Some(value),
                ("GOTO", Op::Assign) => {}
                ("LABEL", Op::Assign) => {}
                (key, op) => panic!("the evaluator does not know {key} {op:?}; extend it"),
            }
        }
        if let Some(goto) = rule.pairs.iter().find(|p| p.key == "GOTO") {
            skip_to = Some(goto.value.as_str());
        }
    }
    out
}

/// A ttyUSB/ttyACM port of a USB modem, with what `usb_id` and `path_id` would report.
fn port(kernel: &'static str, vendor: &str, model: &str, serial: &str, interface: &str) -> Device {
    let mut usb_id = BTreeMap::new();
    usb_id.insert("ID_VENDOR_ID", vendor.to_owned());
    usb_id.insert("ID_MODEL_ID", model.to_owned());
    usb_id.insert("ID_USB_INTERFACE_NUM", interface.to_owned());
    if !serial.is_empty() {
        usb_id.insert("ID_SERIAL_SHORT", serial.to_owned());
    }
    let mut path_id = BTreeMap::new();
    path_id.insert(
        "ID_PATH_TAG",
        format!("platform-fd500000_pcie-pci-0000_01_00_0-usb-0_1_{interface}"),
    );
    Device {
        action: "add",
        subsystem: "tty",
        kernel,
        builtins: BTreeMap::from([("usb_id", usb_id), ("path_id", path_id)]),
        ..Device::default()
    }
}

fn rules() -> Vec<Rule> {
    parse(RULES).unwrap_or_else(|e| panic!("60-simgate-modems.rules: {e}"))
}

fn links(outcome: &Outcome) -> Vec<&str> {
    outcome.symlinks.iter().map(String::as_str).collect()
}

#[test]
fn every_line_is_a_well_formed_rule() {
    let rules = rules();
    assert!(rules.len() > 20, "only {} rules parsed", rules.len());
}

#[test]
fn the_parser_rejects_malformed_rules() {
    let check = |text: &str| {
        assert!(parse(text).is_err(), "accepted: {text}");
    };
    check(r#"KERNEL=="ttyUSB*", MODE="0660"#); // unbalanced quote
    check(r#"KERNEL=="ttyUSB*" MODE="0660""#); // missing comma
    check(r#"KERNAL=="ttyUSB*""#); // unknown key
    check(r#"ENV="1""#); // ENV needs {name}
    check(r#"KERNEL="ttyUSB0""#); // KERNEL only compares
    check(r#"GROUP=="dialout""#); // GROUP cannot be compared
    check(r#"KERNEL=="x", GOTO="nowhere""#); // no such LABEL
    check("LABEL=\"a\"\nKERNEL==\"x\", GOTO=\"a\""); // backwards
    check(r#"KERNEL=="x", SYMLINK+="a-$env{ID""#); // unclosed substitution
    check(r#"KERNEL=="x", MODE="0660","#); // trailing comma
    assert!(parse("# comment\n\nKERNEL==\"x\", GOTO=\"a\"\nLABEL=\"a\"\n").is_ok());
}

#[test]
fn the_glob_follows_fnmatch() {
    assert!(glob("ttyUSB[0-9]*|ttyACM[0-9]*", "ttyACM12"));
    assert!(glob("ttyUSB[0-9]*|ttyACM[0-9]*", "ttyUSB0"));
    assert!(!glob("ttyUSB[0-9]*|ttyACM[0-9]*", "ttyS0"));
    assert!(!glob("ttyUSB[0-9]*", "ttyUSB"));
    assert!(glob("0121|0125", "0125"));
    assert!(glob("?*", "x"));
    assert!(!glob("?*", ""));
    assert!(glob("[!0-4]", "7"));
    assert!(glob("", ""));
}

#[test]
fn quectel_ec25_at_port_gets_both_names() {
    let out = evaluate(&rules(), &port("ttyUSB2", "2c7c", "0125", "7d1f3a2b", "02"));
    assert_eq!(links(&out), ["simgate-modem", "simgate/2c7c-7d1f3a2b-if02"]);
    assert_eq!(out.group.as_deref(), Some("dialout"));
    assert_eq!(out.mode.as_deref(), Some("0660"));
    assert!(out.tags.contains("systemd"));
    assert_eq!(
        out.env.get("ID_MM_DEVICE_IGNORE").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        out.env.get("ID_MM_PORT_IGNORE").map(String::as_str),
        Some("1")
    );
}

#[test]
fn the_other_ports_of_a_known_model_get_only_their_stable_name() {
    for (kernel, interface) in [("ttyUSB0", "00"), ("ttyUSB1", "01"), ("ttyUSB3", "03")] {
        let out = evaluate(
            &rules(),
            &port(kernel, "2c7c", "0125", "7d1f3a2b", interface),
        );
        assert_eq!(
            links(&out),
            [format!("simgate/2c7c-7d1f3a2b-if{interface}")]
        );
        assert_eq!(out.group.as_deref(), Some("dialout"));
    }
}

#[test]
fn known_at_interfaces_per_vendor() {
    // (vendor, model, AT interface, a non-AT interface of the same model)
    let table = [
        ("1e0e", "9001", "02", "03"), // SIMCom SIM7600
        ("19d2", "0031", "03", "01"), // ZTE MF626
        ("1199", "9071", "03", "02"), // Sierra MC7455
        ("1bc7", "1201", "04", "05"), // Telit LE910C1
        ("1546", "1102", "00", "02"), // u-blox SARA-U2
        ("2cb7", "0007", "02", "04"), // Fibocom L850-GL
    ];
    for (vendor, model, at, other) in table {
        let out = evaluate(&rules(), &port("ttyACM0", vendor, model, "S1", at));
        assert!(
            out.symlinks.contains("simgate-modem"),
            "{vendor}:{model} if{at}"
        );
        let out = evaluate(&rules(), &port("ttyACM1", vendor, model, "S1", other));
        assert!(
            !out.symlinks.contains("simgate-modem"),
            "{vendor}:{model} if{other}"
        );
        assert!(
            out.symlinks
                .contains(&format!("simgate/{vendor}-S1-if{other}"))
        );
    }
}

#[test]
fn huawei_ports_are_told_apart_by_interface_protocol() {
    let huawei = |protocol: &'static str| {
        let mut dev = port("ttyUSB0", "12d1", "1506", "", "02");
        dev.parent_attrs = BTreeMap::from([
            ("bInterfaceClass", "ff"),
            ("bInterfaceSubClass", "02"),
            ("bInterfaceProtocol", protocol),
        ]);
        evaluate(&rules(), &dev)
    };
    // PCUI (AT) port; no USB serial, so the link names the USB port path.
    let pcui = huawei("02");
    assert!(pcui.symlinks.contains("simgate-modem"));
    assert!(
        pcui.symlinks
            .contains("simgate/12d1-path-platform-fd500000_pcie-pci-0000_01_00_0-usb-0_1_02-if02"),
        "{:?}",
        pcui.symlinks
    );
    // The PPP "modem" port is not the AT control port.
    assert!(!huawei("01").symlinks.contains("simgate-modem"));
}

#[test]
fn every_vendor_is_covered() {
    for vendor in VENDORS {
        let out = evaluate(&rules(), &port("ttyUSB0", vendor, "ffff", "X", "00"));
        assert_eq!(
            links(&out),
            [format!("simgate/{vendor}-X-if00")],
            "{vendor}"
        );
        assert_eq!(
            out.env.get("ID_MM_DEVICE_IGNORE").map(String::as_str),
            Some("1")
        );
        assert!(out.tags.contains("systemd"), "{vendor}");

        let usb = Device {
            action: "add",
            subsystem: "usb",
            kernel: "1-1.3",
            attrs: BTreeMap::from([("idVendor", vendor)]),
            env: BTreeMap::from([("DEVTYPE".to_owned(), "usb_device".to_owned())]),
            ..Device::default()
        };
        let out = evaluate(&rules(), &usb);
        assert_eq!(out.group.as_deref(), Some("dialout"), "{vendor} usb_device");
        assert_eq!(out.mode.as_deref(), Some("0660"));
        assert_eq!(
            out.env.get("ID_MM_DEVICE_IGNORE").map(String::as_str),
            Some("1")
        );
        assert!(out.symlinks.is_empty());
    }
}

#[test]
fn other_devices_are_left_alone() {
    // An FTDI USB-serial adapter, a Quectel port being removed, a built-in UART.
    let ftdi = port("ttyUSB0", "0403", "6001", "A1", "00");
    let mut removed = port("ttyUSB2", "2c7c", "0125", "7d1f3a2b", "02");
    removed.action = "remove";
    let uart = Device {
        action: "add",
        subsystem: "tty",
        kernel: "ttyS0",
        ..Device::default()
    };
    for dev in [ftdi, removed, uart] {
        let out = evaluate(&rules(), &dev);
        assert!(out.symlinks.is_empty(), "{dev:?}");
        assert_eq!(out.group, None);
        assert!(!out.env.contains_key("ID_MM_DEVICE_IGNORE"));
    }
}

#[test]
fn only_keys_the_evaluator_knows_are_used() {
    // Keeps the evaluator honest: a new key in the rules file needs semantics here first.
    let known: HashSet<&str> = [
        "ACTION",
        "SUBSYSTEM",
        "KERNEL",
        "ENV",
        "ATTR",
        "ATTRS",
        "IMPORT",
        "SYMLINK",
        "TAG",
        "GROUP",
        "MODE",
        "GOTO",
        "LABEL",
    ]
    .into_iter()
    .collect();
    for rule in rules() {
        for p in &rule.pairs {
            assert!(
                known.contains(p.key.as_str()),
                "line {}: {}",
                rule.line,
                p.key
            );
        }
    }
}
