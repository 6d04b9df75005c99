//! Answers of the SIM commands: `+CPIN` (TS 27.007 §8.3).

use at_commands::parser::CommandParser;

use super::{CmdError, Field, bad, fields};

/// `+CPIN: <code>` (TS 27.007 §8.3) → e.g. `READY`, `SIM PIN`, `SIM PUK`.
pub fn parse_cpin(line: &str) -> Result<String, CmdError> {
    let f = fields(line, "+CPIN:")?;
    match f.as_slice() {
        [Field::Bare(_)] | [Field::Quoted(_)] => {}
        _ => return Err(bad(line, "expected one <code>")),
    }
    let rest = line["+CPIN:".len()..].trim().trim_matches('"');
    let (code,) = CommandParser::parse(rest.as_bytes())
        .expect_raw_string()
        .finish()
        .map_err(|_| bad(line, "bad <code>"))?;
    Ok(code.trim().to_string())
}
