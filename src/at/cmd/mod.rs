//! Command lines and answer parameters, built and parsed with the `at-commands` crate.
//!
//! The crate is a single-line builder and a single-line parser; it does not escape strings,
//! silently mis-parses an unquoted value read as a string, ignores trailing garbage and knows only
//! `i32`. This wrapper guards each of those: names and string values are checked before building,
//! and every answer line is first split by our own quote-aware [`fields`] so its shape (how many
//! parameters, which are quoted) is known before the crate extracts the values.
//!
//! The answer parsers stand by command family: [`network`] (registration, operator, signal;
//! TS 27.007 §7-8), [`sim`] (`+CPIN`, TS 27.007 §8.3) and [`sms`] (TS 27.005 §3).

use at_commands::builder::CommandBuilder;
use at_commands::parser::CommandParser;

mod network;
mod sim;
mod sms;

pub use network::{
    parse_cops, parse_csq, parse_reg_stat, reg_is_registered, reg_name, rssi_to_dbm,
};
pub use sim::parse_cpin;
pub use sms::{
    parse_cds_len, parse_cmgl_header, parse_cmgr_len, parse_cmgs, parse_cmt_len,
    parse_csms_service, parse_stored_notice,
};

/// Why a line could not be built or an answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// A command name with characters that would change the command's meaning.
    #[error("invalid command name {0:?}")]
    BadName(String),
    /// A string parameter the modem could not receive intact (quotes and control characters are
    /// not escaped by TS 27.007 §4.1 string syntax as modems implement it).
    #[error("string parameter cannot be sent unescaped")]
    BadString,
    /// An answer that does not have the shape the command defines.
    #[error("unexpected answer {line:?}: {reason}")]
    BadAnswer {
        /// The offending line, for the log (answers never carry secrets).
        line: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// One parameter of a set command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param<'a> {
    /// A numeric parameter.
    Int(i32),
    /// A string parameter, sent in double quotes.
    Str(&'a str),
    /// An omitted parameter (`AT+CMGS=,1` style).
    Empty,
}

fn check_name(name: &str) -> Result<(), CmdError> {
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'=' | b'?' | b'"' | b',' | b';'));
    if ok {
        Ok(())
    } else {
        Err(CmdError::BadName(name.to_string()))
    }
}

/// Runs a builder closure with a buffer that grows until the line fits.
fn build(f: impl Fn(&mut [u8]) -> Result<usize, usize>) -> String {
    let mut size = 64;
    loop {
        let mut buffer = vec![0u8; size];
        match f(&mut buffer) {
            Ok(len) => {
                buffer.truncate(len);
                // Every input was checked to be ASCII, so the line is too.
                return String::from_utf8_lossy(&buffer).into_owned();
            }
            Err(needed) => size = needed.max(size * 2),
        }
    }
}

/// `AT<name>`, e.g. `execute("+CGMI")` → `AT+CGMI`, `execute("")` → `AT`, `execute("E0")`.
pub fn execute(name: &str) -> Result<String, CmdError> {
    check_name(name)?;
    Ok(build(|buf| {
        CommandBuilder::create_execute(buf, true)
            .named(name)
            .finish_with(b"")
            .map(|s| s.len())
    }))
}

/// `AT<name>?`, e.g. `query("+CSQ")` is not a valid CSQ form but `query("+CPIN")` → `AT+CPIN?`.
pub fn query(name: &str) -> Result<String, CmdError> {
    check_name(name)?;
    Ok(build(|buf| {
        CommandBuilder::create_query(buf, true)
            .named(name)
            .finish_with(b"")
            .map(|s| s.len())
    }))
}

/// `AT<name>=?`, the test form that lists supported values.
pub fn test(name: &str) -> Result<String, CmdError> {
    check_name(name)?;
    Ok(build(|buf| {
        CommandBuilder::create_test(buf, true)
            .named(name)
            .finish_with(b"")
            .map(|s| s.len())
    }))
}

/// `AT<name>=<p1>,<p2>...`.
pub fn set(name: &str, params: &[Param<'_>]) -> Result<String, CmdError> {
    check_name(name)?;
    for p in params {
        if let Param::Str(s) = p
            && !s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"')
        {
            return Err(CmdError::BadString);
        }
    }
    Ok(build(|buf| {
        let mut b = CommandBuilder::create_set(buf, true).named(name);
        for p in params {
            b = match p {
                Param::Int(i) => b.with_int_parameter(*i),
                Param::Str(s) => b.with_string_parameter(s),
                Param::Empty => b.with_empty_parameter(),
            };
        }
        // The crate ends every parameter with a comma and drops the last one here, so a trailing
        // `Empty` still leaves the separator that keeps the parameter count.
        b.finish_with(b"").map(|s| s.len())
    }))
}

/// The shape of one parameter in an answer line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// A double-quoted string, without its quotes.
    Quoted(&'a str),
    /// An unquoted value (a number or a bare word such as `READY`).
    Bare(&'a str),
    /// Nothing between two commas.
    Empty,
}

/// Splits the parameters of `line` after `prefix` (e.g. `+CREG:`), honouring double quotes.
///
/// This is the guard the crate lacks: it tells how many parameters there are and which are quoted,
/// so the typed extraction below is never asked to read something of another shape.
pub fn fields<'a>(line: &'a str, prefix: &str) -> Result<Vec<Field<'a>>, CmdError> {
    let bad = |reason| CmdError::BadAnswer {
        line: line.to_string(),
        reason,
    };
    let rest = line
        .strip_prefix(prefix)
        .ok_or_else(|| bad("missing prefix"))?
        .trim();
    let mut out = Vec::new();
    if rest.is_empty() {
        return Ok(out);
    }
    let bytes = rest.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'"' {
            let start = i + 1;
            let end = rest[start..]
                .find('"')
                .map(|e| start + e)
                .ok_or_else(|| bad("unterminated string"))?;
            out.push(Field::Quoted(&rest[start..end]));
            i = end + 1;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
        } else {
            let end = rest[i..].find(',').map(|e| i + e).unwrap_or(bytes.len());
            let value = rest[i..end].trim();
            if value.contains('"') {
                return Err(bad("stray quote"));
            }
            out.push(if value.is_empty() {
                Field::Empty
            } else {
                Field::Bare(value)
            });
            i = end;
        }
        if i >= bytes.len() {
            return Ok(out);
        }
        if bytes[i] != b',' {
            return Err(bad("garbage after a parameter"));
        }
        i += 1;
        if i >= bytes.len() {
            out.push(Field::Empty);
            return Ok(out);
        }
    }
}

fn bad(line: &str, reason: &'static str) -> CmdError {
    CmdError::BadAnswer {
        line: line.to_string(),
        reason,
    }
}

fn is_int(f: &Field<'_>) -> bool {
    matches!(f, Field::Bare(v) if v.parse::<i32>().is_ok())
}

/// Reads one integer with the crate, from a field already known to be a bare integer.
fn int_of(line: &str, f: &Field<'_>) -> Result<i32, CmdError> {
    match f {
        Field::Bare(v) => CommandParser::parse(v.as_bytes())
            .expect_int_parameter()
            .finish()
            .map(|(i,)| i)
            .map_err(|_| bad(line, "not an integer")),
        _ => Err(bad(line, "expected an integer")),
    }
}

fn u8_of(line: &str, f: &Field<'_>) -> Result<u8, CmdError> {
    u8::try_from(int_of(line, f)?).map_err(|_| bad(line, "integer out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_lines() {
        assert_eq!(execute("").unwrap(), "AT");
        assert_eq!(execute("E0").unwrap(), "ATE0");
        assert_eq!(execute("+CGMI").unwrap(), "AT+CGMI");
        assert_eq!(query("+CPIN").unwrap(), "AT+CPIN?");
        assert_eq!(test("+CNMI").unwrap(), "AT+CNMI=?");
        assert_eq!(
            set(
                "+CNMI",
                &[
                    Param::Int(2),
                    Param::Int(1),
                    Param::Int(0),
                    Param::Int(1),
                    Param::Int(0)
                ]
            )
            .unwrap(),
            "AT+CNMI=2,1,0,1,0"
        );
        assert_eq!(
            set("+CPIN", &[Param::Str("1234")]).unwrap(),
            "AT+CPIN=\"1234\""
        );
        assert_eq!(set("^CURC", &[Param::Int(0)]).unwrap(), "AT^CURC=0");
        assert_eq!(set("+CMGS", &[Param::Int(-1)]).unwrap(), "AT+CMGS=-1");
        assert_eq!(
            set("+X", &[Param::Int(1), Param::Empty, Param::Int(2)]).unwrap(),
            "AT+X=1,,2"
        );
        assert_eq!(
            set("+X", &[Param::Int(1), Param::Empty]).unwrap(),
            "AT+X=1,"
        );
        let long = "9".repeat(200);
        assert_eq!(
            set("+CPIN", &[Param::Str(&long)]).unwrap(),
            format!("AT+CPIN=\"{long}\"")
        );
    }

    #[test]
    fn refuses_what_cannot_be_sent_unescaped() {
        assert_eq!(
            set("+CPIN", &[Param::Str("12\"34")]),
            Err(CmdError::BadString)
        );
        assert_eq!(
            set("+CPIN", &[Param::Str("12\r34")]),
            Err(CmdError::BadString)
        );
        assert!(matches!(execute("+CSQ;+CGMI"), Err(CmdError::BadName(_))));
        assert!(matches!(query("+C=1"), Err(CmdError::BadName(_))));
        assert!(matches!(execute("+C\r"), Err(CmdError::BadName(_))));
    }

    #[test]
    fn splits_fields() {
        assert_eq!(
            fields("+COPS: 0,0,\"Op, Inc\",7", "+COPS:").unwrap(),
            vec![
                Field::Bare("0"),
                Field::Bare("0"),
                Field::Quoted("Op, Inc"),
                Field::Bare("7")
            ]
        );
        assert_eq!(
            fields("+CMT: ,24", "+CMT:").unwrap(),
            vec![Field::Empty, Field::Bare("24")]
        );
        assert_eq!(
            fields("+CPIN: READY", "+CPIN:").unwrap(),
            vec![Field::Bare("READY")]
        );
        assert!(fields("+CMTI: \"SM,3", "+CMTI:").is_err());
        assert!(fields("+CMTI: \"SM\"x,3", "+CMTI:").is_err());
        assert!(fields("+CSQ: 1,2", "+CREG:").is_err());
    }

    #[test]
    fn parses_answers() {
        assert_eq!(parse_csq("+CSQ: 21,99").unwrap(), (21, 99));
        assert_eq!(parse_csq("+CSQ:99,99").unwrap(), (99, 99));
        assert!(parse_csq("+CSQ: 21").is_err());
        assert!(parse_csq("+CSQ: 21,99,3").is_err(), "trailing garbage");
        assert!(parse_csq("+CSQ: \"21\",99").is_err());
        assert_eq!(rssi_to_dbm(0), Some(-113));
        assert_eq!(rssi_to_dbm(21), Some(-71));
        assert_eq!(rssi_to_dbm(31), Some(-51));
        assert_eq!(rssi_to_dbm(99), None);

        assert_eq!(parse_reg_stat("+CREG: 0,1", "+CREG:").unwrap(), 1);
        assert_eq!(
            parse_reg_stat("+CREG: 2,5,\"00C3\",\"0000A1B2\",7", "+CREG:").unwrap(),
            5
        );
        assert_eq!(parse_reg_stat("+CREG: 1", "+CREG:").unwrap(), 1);
        assert_eq!(
            parse_reg_stat("+CREG: 5,\"00C3\",\"0000A1B2\"", "+CREG:").unwrap(),
            5
        );
        assert_eq!(parse_reg_stat("+CEREG: 0,2", "+CEREG:").unwrap(), 2);
        assert!(parse_reg_stat("+CREG: ", "+CREG:").is_err());
        assert!(reg_is_registered(1) && reg_is_registered(5) && !reg_is_registered(2));
        assert_eq!(reg_name(5), "roaming");

        assert_eq!(
            parse_cops("+COPS: 0,0,\"T-Mobile\",7").unwrap(),
            Some("T-Mobile".to_string())
        );
        assert_eq!(parse_cops("+COPS: 0").unwrap(), None);
        assert!(
            parse_cops("+COPS: 0,0,T-Mobile").is_err(),
            "unquoted operator"
        );

        assert_eq!(parse_cpin("+CPIN: READY").unwrap(), "READY");
        assert_eq!(parse_cpin("+CPIN: SIM PIN").unwrap(), "SIM PIN");
        assert_eq!(parse_cpin("+CPIN: \"SIM PUK\"").unwrap(), "SIM PUK");

        assert_eq!(parse_cmgs("+CMGS: 12").unwrap(), 12);
        assert_eq!(
            parse_cmgs("+CMGS: 255,\"26/11/22,10:00:00+00\"").unwrap(),
            255
        );
        assert!(parse_cmgs("+CMGS: 256").is_err());
        assert!(parse_cmgs("+CMGS: x").is_err());

        assert_eq!(parse_cds_len("+CDS: 25").unwrap(), Some(25));
        assert_eq!(parse_cds_len("+CDS: 6,12,\"+1555\",145").unwrap(), None);
        assert_eq!(parse_cmt_len("+CMT: ,24").unwrap(), Some(24));
        assert_eq!(parse_cmt_len("+CMT: \"Bob\",30").unwrap(), Some(30));
        assert_eq!(
            parse_stored_notice("+CMTI: \"SM\",3", "+CMTI:").unwrap(),
            ("SM".to_string(), 3)
        );
        assert!(parse_stored_notice("+CMTI: SM,3", "+CMTI:").is_err());
        assert_eq!(parse_cmgr_len("+CMGR: 0,,24").unwrap(), 24);
        assert_eq!(parse_cmgl_header("+CMGL: 0,1,,24").unwrap(), (0, 24));
        assert_eq!(
            parse_cmgl_header("+CMGL: 12,0,\"Mum\",151").unwrap(),
            (12, 151)
        );
        assert!(parse_cmgl_header("+CMGL: 1,\"REC READ\",\"+1555\",,\"24/01/01\"").is_err());
        assert!(parse_cmgl_header("+CMGL: 1,0,24").is_err());
        assert_eq!(parse_csms_service("+CSMS: 1,1,1,1").unwrap(), 1);
        assert!(parse_csms_service("+CSMS: 1,1,1").is_err());
    }
}
