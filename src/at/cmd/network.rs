//! Answers of the network-service commands: `+CREG`/`+CGREG`/`+CEREG` (TS 27.007 §7.2,
//! §10.1.19, §10.1.22), `+COPS` (§7.3) and `+CSQ` (§8.5).

use at_commands::parser::CommandParser;

use super::{CmdError, Field, bad, fields, is_int, u8_of};

/// `+CSQ: <rssi>,<ber>` (TS 27.007 §8.5) → `(rssi, ber)`.
pub fn parse_csq(line: &str) -> Result<(u8, u8), CmdError> {
    let f = fields(line, "+CSQ:")?;
    if f.len() != 2 || !f.iter().all(is_int) {
        return Err(bad(line, "expected <rssi>,<ber>"));
    }
    // The crate reads the whole parameter list in one go once the shape is known.
    let rest = line["+CSQ:".len()..].trim();
    let (rssi, ber) = CommandParser::parse(rest.as_bytes())
        .expect_int_parameter()
        .expect_int_parameter()
        .finish()
        .map_err(|_| bad(line, "expected <rssi>,<ber>"))?;
    let rssi = u8::try_from(rssi).map_err(|_| bad(line, "rssi out of range"))?;
    let ber = u8::try_from(ber).map_err(|_| bad(line, "ber out of range"))?;
    Ok((rssi, ber))
}

/// Signal strength in dBm from a `+CSQ` rssi (TS 27.007 §8.5): 0 → -113, 31 → -51, 99 unknown.
pub fn rssi_to_dbm(rssi: u8) -> Option<i32> {
    match rssi {
        0..=31 => Some(-113 + 2 * i32::from(rssi)),
        _ => None,
    }
}

/// The `<stat>` of `+CREG`/`+CGREG`/`+CEREG` (TS 27.007 §7.2, §10.1.19, §10.1.22).
///
/// `prefix` is e.g. `+CREG:`. Both shapes are accepted: the query answer `<n>,<stat>[,...]` and
/// the unsolicited `<stat>[,<lac>,<ci>...]` (told apart by whether the second field is a bare
/// integer).
pub fn parse_reg_stat(line: &str, prefix: &str) -> Result<u8, CmdError> {
    let f = fields(line, prefix)?;
    match f.as_slice() {
        [stat] => u8_of(line, stat),
        [_n, stat, ..] if is_int(stat) => u8_of(line, stat),
        [stat, _, ..] => u8_of(line, stat),
        [] => Err(bad(line, "no registration status")),
    }
}

/// Whether a `<stat>` means registered: 1 (home) or 5 (roaming).
pub fn reg_is_registered(stat: u8) -> bool {
    matches!(stat, 1 | 5)
}

/// A word for a `<stat>`, as the status API shows it.
pub fn reg_name(stat: u8) -> &'static str {
    match stat {
        0 => "not-registered",
        1 => "home",
        2 => "searching",
        3 => "denied",
        5 => "roaming",
        6 | 7 => "sms-only",
        8 => "emergency-only",
        _ => "unknown",
    }
}

/// `+COPS: <mode>[,<format>,<oper>[,<AcT>]]` (TS 27.007 §7.3) → the operator, if registered.
pub fn parse_cops(line: &str) -> Result<Option<String>, CmdError> {
    let f = fields(line, "+COPS:")?;
    match f.as_slice() {
        [mode] if is_int(mode) => Ok(None),
        [mode, format, Field::Quoted(_), ..] if is_int(mode) && is_int(format) => {
            let rest = line["+COPS:".len()..].trim();
            let (_, _, oper) = CommandParser::parse(rest.as_bytes())
                .expect_int_parameter()
                .expect_int_parameter()
                .expect_string_parameter()
                .finish()
                .map_err(|_| bad(line, "bad operator"))?;
            Ok(Some(oper.to_string()))
        }
        _ => Err(bad(line, "expected <mode>[,<format>,\"<oper>\"]")),
    }
}
