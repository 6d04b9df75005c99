use super::*;
use std::path::PathBuf;
use std::time::Duration;

use crate::modem::discovery::{self, DeviceIdentity};
use crate::otp::{self};

#[test]
fn listen_takes_an_ip_and_a_port_and_says_so() {
    assert_eq!(
        parse_listen("[::1]:9000"),
        Ok("[::1]:9000".parse().unwrap())
    );
    for (bad, needle) in [
        (
            "localhost:8787",
            "names the host \"localhost\": api.listen takes an IP address and a port, not a \
             host name",
        ),
        ("localhost:8787", "\"127.0.0.1:8787\""),
        ("gateway.lan:80", "not a host name"),
        ("127.0.0.1", "has no port"),
        ("::1", "\"[::1]:8787\""),
        ("localhost", "is not an IP address with a port"),
        ("127.0.0.1:99999", "is not an IP address with a port"),
    ] {
        let e = parse_listen(bad).unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn log_filters_must_name_levels_and_leave_simgate_on() {
    for good in [
        "info",
        "debug",
        "WARN",
        "off",
        "simgate=debug,info",
        "simgate=trace",
        "info,tower_http=off",
        "simgate::dispatch=debug,warn",
    ] {
        assert_eq!(check_log_filter(good), Ok(()), "{good}");
    }
    for (bad, needle) in [
        ("verbose", "not a log level"),
        ("", "shows no simgate log line"),
        ("simgate=loud", "\"loud\" is not a log level"),
        ("tower_http=debug", "shows no simgate log line"),
        ("simgate=off", "shows no simgate log line"),
        ("=debug", "names no target"),
        ("loud[", "not a log level"),
    ] {
        let e = check_log_filter(bad).unwrap_err();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml")
}

#[test]
fn empty_file_is_the_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.api.listen, "127.0.0.1:8787".parse().unwrap());
    assert_eq!(c.otp.length.get(), 6);
    assert_eq!(c.otp.ttl, Duration::from_secs(300));
    assert_eq!(c.modems.len(), 1);
    assert_eq!(c.modems[0].id, "modem0");
    assert_eq!(c.modems[0].device, PathBuf::from(DEFAULT_DEVICE));
    assert!(c.warnings().is_empty());
}

#[test]
fn otp_part_cap_resends_and_pending_rule() {
    let c = parse("").unwrap();
    assert_eq!(c.otp.max_parts, 3);
    assert_eq!(c.otp.max_resends, 2);
    assert_eq!(c.otp.on_pending, otp::OnPending::Reuse);
    let c = parse("[otp]\nmax_parts = 1\nmax_resends = 0\non_pending = \"supersede\"\n").unwrap();
    assert_eq!(
        (c.otp.max_parts, c.otp.max_resends, c.otp.on_pending),
        (1, 0, otp::OnPending::Supersede)
    );
    for (text, key, says) in [
        ("[otp]\nmax_parts = 0\n", "otp.max_parts", "out of range"),
        ("[otp]\nmax_parts = 11\n", "otp.max_parts", "out of range"),
        (
            "[otp]\nmax_resends = 101\n",
            "otp.max_resends",
            "out of range",
        ),
        (
            "[otp]\non_pending = \"replace\"\n",
            "otp.on_pending",
            "\"supersede\"",
        ),
        (
            "[otp]\nmax_parts = 1\ntemplate = \"{code} 😀 and a long tail of words that \
             needs more than seventy characters in UCS-2\"\n",
            "otp.template",
            "more than otp.max_parts = 1",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{text}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn modem_ids_default_by_position() {
    let c = parse(
        "[[modem]]\ndevice = \"/dev/a\"\n[[modem]]\nid = \"spare\"\ndevice = \"/dev/b\"\n\
         [[modem]]\ndevice = \"/dev/c\"\n",
    )
    .unwrap();
    let ids: Vec<_> = c.modems.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["modem0", "spare", "modem2"]);
}

#[test]
fn errors_name_key_and_position() {
    let e = parse("[limits]\notp_per_number = \"3/10w\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("limits.otp_per_number"));
    assert_eq!(e.position, Some((2, 18)));
    assert!(
        e.to_string()
            .starts_with("test.toml:2:18: limits.otp_per_number: "),
        "{e}"
    );

    let e = parse("[[modem]]\n[[modem]]\ndevice = \"/dev/x\"\nbaud = \"fast\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("modem[1].baud"));
    assert_eq!(e.position, Some((4, 8)));

    let e = parse("[api]\nlisten = \n").unwrap_err();
    assert_eq!(e.key, None);
    assert_eq!(e.position.map(|p| p.0), Some(2));

    let e = parse("[api]\nlistn = \"x\"\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("api.listn"));
    let e = parse("[[modem]]\npn = 1\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("modem[0].pn"));
    assert!(
        e.reason.contains("`pin_file`") && !e.reason.contains("`pin`"),
        "{e}"
    );
    let e = parse("colour = 1\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("colour"));
}

#[test]
fn token_is_not_echoed() {
    let e = parse("[api]\ntokens = [\"short secret\"]\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("api.tokens[0]"));
    assert!(!e.to_string().contains("short secret"));
    let c = parse("[api]\ntokens = [\"0123456789abcdefXYZ\"]\n").unwrap();
    assert!(!format!("{c:?}").contains("0123456789abcdefXYZ"));
}

#[test]
fn non_loopback_listen_warns() {
    let c = parse("[api]\nlisten = \"0.0.0.0:8787\"\n").unwrap();
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].contains("0.0.0.0:8787"));
    let c = parse("[api]\nlisten = \"[::1]:9000\"\n").unwrap();
    assert!(c.warnings().is_empty());
}

#[test]
fn modems_may_be_named_by_identity() {
    let c = parse(
        "[[modem]]\nimei = \"356938035643809\"\n\
         [[modem]]\niccid = \"8944500102198304826f\"\nscan = [\"/dev/serial/by-id/*\"]\n\
         [[modem]]\ndevice = \"/dev/ttyUSB7\"\nusb_serial = \"0123456789ABCDEF\"\n\
         [[modem]]\n",
    )
    .unwrap();
    let m = &c.modems;
    assert_eq!(m[0].device, PathBuf::new(), "no device: found by identity");
    assert_eq!(
        m[0].identity,
        Some(DeviceIdentity::Imei("356938035643809".into()))
    );
    assert_eq!(m[0].scan, discovery::DEFAULT_SCAN);
    assert_eq!(
        m[1].identity,
        Some(DeviceIdentity::Iccid("8944500102198304826F".into()))
    );
    assert_eq!(m[1].scan, ["/dev/serial/by-id/*"]);
    assert_eq!(m[2].device, PathBuf::from("/dev/ttyUSB7"));
    assert_eq!(
        m[2].identity,
        Some(DeviceIdentity::UsbSerial("0123456789ABCDEF".into()))
    );
    assert_eq!(m[3].device, PathBuf::from(DEFAULT_DEVICE));
    assert_eq!(m[3].identity, None);
}

#[test]
fn identity_errors_name_the_key() {
    let cases = [
        (
            "[[modem]]\nimei = \"356938035643809\"\niccid = \"8944500102198304826\"\n",
            "modem[0].iccid",
            "one identity",
        ),
        (
            "[[modem]]\nimei = \"35693803564380x\"\n",
            "modem[0].imei",
            "IMEI",
        ),
        ("[[modem]]\niccid = \"12345\"\n", "modem[0].iccid", "ICCID"),
        (
            "[[modem]]\nusb_serial = \"a b\"\n",
            "modem[0].usb_serial",
            "USB serial",
        ),
        (
            "[[modem]]\nimei = \"356938035643809\"\n[[modem]]\nimei = \"356938035643809\"\n",
            "modem[1].imei",
            "another modem",
        ),
        (
            "[[modem]]\nimei = \"356938035643809\"\nscan = []\n",
            "modem[0].scan",
            "at least one",
        ),
        (
            "[[modem]]\nimei = \"356938035643809\"\nscan = [\"/dev/*/ttyUSB0\"]\n",
            "modem[0].scan",
            "last path component",
        ),
        (
            "[[modem]]\nimei = \"356938035643809\"\nscan = [\"ttyUSB*\"]\n",
            "modem[0].scan",
            "absolute",
        ),
        ("[[modem]]\ndevice = \"\"\n", "modem[0].device", "empty"),
    ];
    for (text, key, reason) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{text}");
        assert!(e.reason.contains(reason), "{text}: {}", e.reason);
    }
    // Two modems found by identity have no device; that is no clash.
    assert!(
        parse("[[modem]]\nimei = \"356938035643809\"\n[[modem]]\nimei = \"356938035643808\"\n")
            .is_ok()
    );
}

#[test]
fn set_devices_replaces_modems() {
    let mut c = Config::default();
    c.set_devices(&[]);
    assert_eq!(c.modems.len(), 1);
    c.set_devices(&[PathBuf::from("/dev/ttyUSB2"), PathBuf::from("/dev/ttyUSB5")]);
    assert_eq!(c.modems[1], ModemSettings::new("modem1", "/dev/ttyUSB5"));
}

#[test]
fn pin_sources() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut m = ModemSettings::new("modem0", "/dev/x");
    assert_eq!(m.pin_with_env(None).unwrap(), None);
    assert_eq!(m.pin_with_env(Some("".into())).unwrap(), None);
    assert_eq!(
        m.pin_with_env(Some("1234".into())).unwrap().as_deref(),
        Some("1234")
    );
    assert!(
        matches!(m.pin_with_env(Some("12a4".into())), Err(PinError::Format(s)) if s == PIN_ENV)
    );

    let f = dir.path().join("pin");
    std::fs::write(&f, "  5678\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    m.pin_file = Some(f.clone());
    let e = m.pin_with_env(None).unwrap_err();
    assert!(matches!(e, PinError::Permissions(_)), "{e}");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    m.pin_file = Some(f.clone());
    // The file wins over the environment.
    assert_eq!(
        m.pin_with_env(Some("1234".into())).unwrap().as_deref(),
        Some("5678")
    );
    std::fs::write(&f, "123").unwrap();
    let e = m.pin_with_env(None).unwrap_err();
    assert!(!e.to_string().contains("123\""), "{e}");
    m.pin_file = Some(dir.path().join("missing"));
    assert!(matches!(m.pin_with_env(None), Err(PinError::Read { .. })));
}

#[test]
fn line_col_counts_chars() {
    assert_eq!(line_col("ab\ncd", 0), (1, 1));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("é\nx", 3), (2, 1));
}

#[test]
fn the_store_backend_is_sqlite_unless_postgres_is_asked_for_whole() {
    assert_eq!(parse("").unwrap().store.backend, StoreBackend::Sqlite);
    let c = parse(
        "[store]\nbackend = \"postgres\"\nurl = \"postgresql://simgate:pw@db.lan/simgate\"\n\
         node_id = \"rack-1.a\"\nlease_seconds = 12\npool_size = 8\n",
    )
    .unwrap();
    let StoreBackend::Postgres(pg) = &c.store.backend else {
        panic!("{:?}", c.store.backend)
    };
    assert_eq!(pg.node_id, "rack-1.a");
    assert_eq!(pg.lease, Duration::from_secs(12));
    assert_eq!(pg.pool_size, 8);
    // The password never reaches a Debug print (logs, `config check --json`).
    assert!(!format!("{c:?}").contains("pw@"), "{c:?}");
    // In a cluster the number and range rates move to the database.
    assert!(c.service_settings().shared_rates.is_some());
    assert_eq!(c.limiter_rates().otp_per_number, crate::limits::Rate::Off);
    assert!(parse("").unwrap().service_settings().shared_rates.is_none());
    // The host name is the default node id.
    let c = parse("[store]\nbackend = \"postgres\"\nurl = \"host=/run/postgresql dbname=s\"\n")
        .unwrap();
    let StoreBackend::Postgres(pg) = &c.store.backend else {
        panic!()
    };
    assert!(!pg.node_id.is_empty());

    for (text, key, needle) in [
        (
            "[store]\nurl = \"postgresql://h/db\"\n",
            "store.backend",
            "write backend = \"postgres\"",
        ),
        (
            "[store]\nbackend = \"postgres\"\n",
            "store.url",
            "needs store.url",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://h/db\"\nurl_file = \"/x\"\n",
            "store.url_file",
            "not both",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://h\"\n",
            "store.url",
            "names no database",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://h/db\"\nnode_id = \"a b\"\n",
            "store.node_id",
            "is not a node id",
        ),
        (
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://h/db\"\nlease_seconds = 1\n",
            "store.lease_seconds",
            "out of range",
        ),
        (
            "[store]\nbackend = \"mysql\"\n",
            "store.backend",
            "not a store back end",
        ),
    ] {
        let e = parse(text).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
        assert!(e.reason.contains(needle), "{text}: {e}");
    }
}
