//! Splitting one AT command line into commands (ITU-T V.250 §5.3 as used by TS 27.007 §4).
//!
//! A line such as `AT+CMGF=0;+CNMI=2,1,0,1,0` or `ATE0V1` carries several commands after one
//! `AT` prefix: basic commands are a letter (or `&` and a letter) with an optional number,
//! extended commands start with `+` or `^` (Huawei) and run to the next `;` outside quotes.
//! Pure: no state, no I/O.

/// How an extended command was invoked (TS 27.007 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `+CMD`: execute.
    Exec,
    /// `+CMD?`: read the current setting.
    Read,
    /// `+CMD=?`: list the supported values.
    Test,
    /// `+CMD=<args>`: set; the raw text after `=`.
    Set(String),
}

/// One command taken from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// A basic command: upper-cased name (`E`, `Z`, `&F`, `S0`) and its optional value.
    Basic {
        /// Upper-cased name, e.g. `E` or `&F`.
        name: String,
        /// The digits after the name (`1` in `ATE1`) or after `=` for S-registers.
        value: Option<String>,
        /// True for `ATS0?`: an S-register read.
        read: bool,
    },
    /// An extended command: upper-cased name with its prefix (`+CMGF`, `^CURC`) and its form.
    Extended {
        /// Upper-cased name including `+` or `^`.
        name: String,
        /// How it was invoked.
        form: Form,
    },
}

/// Splits the text after `AT` into commands; `None` when the line cannot be parsed at all
/// (a real modem answers `ERROR` then).
pub fn split(rest: &str) -> Option<Vec<Cmd>> {
    let bytes = rest.as_bytes();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b' ' || c == b';' {
            i += 1;
            continue;
        }
        if c == b'+' || c == b'^' || c == b'#' || c == b'$' || c == b'*' || c == b'%' {
            let start = i;
            let mut in_quotes = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => in_quotes = !in_quotes,
                    b';' if !in_quotes => break,
                    _ => {}
                }
                i += 1;
            }
            cmds.push(extended(&rest[start..i]));
        } else if c.is_ascii_alphabetic() || c == b'&' {
            let start = i;
            i += if c == b'&' { 2 } else { 1 };
            if i > bytes.len() {
                return None;
            }
            let name = rest[start..i].to_ascii_uppercase();
            if name == "S" {
                // S-register: `S0=0`, `S0?`.
                let num_start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let reg = format!("S{}", &rest[num_start..i]);
                if i < bytes.len() && bytes[i] == b'?' {
                    i += 1;
                    cmds.push(Cmd::Basic {
                        name: reg,
                        value: None,
                        read: true,
                    });
                } else if i < bytes.len() && bytes[i] == b'=' {
                    i += 1;
                    let v = i;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                    cmds.push(Cmd::Basic {
                        name: reg,
                        value: Some(rest[v..i].to_string()),
                        read: false,
                    });
                } else {
                    return None;
                }
            } else {
                let v = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                let value = (i > v).then(|| rest[v..i].to_string());
                cmds.push(Cmd::Basic {
                    name,
                    value,
                    read: false,
                });
            }
        } else {
            return None;
        }
    }
    Some(cmds)
}

fn extended(text: &str) -> Cmd {
    let end = text.find(['=', '?']).unwrap_or(text.len());
    let name = text[..end].trim().to_ascii_uppercase();
    let tail = &text[end..];
    let form = if tail.is_empty() {
        Form::Exec
    } else if tail.starts_with("=?") {
        Form::Test
    } else if tail.starts_with('?') {
        Form::Read
    } else {
        Form::Set(tail[1..].to_string())
    };
    Cmd::Extended { name, form }
}

/// Splits set arguments at commas outside quotes; quoted values lose their quotes (spaces
/// around them are ignored), bare values are trimmed. An empty argument (`2,,1`) is `None`.
pub fn args(text: &str) -> Vec<Option<String>> {
    let mut segments = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    for (i, ch) in text.char_indices() {
        match ch {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                segments.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    segments.push(&text[start..]);
    segments
        .into_iter()
        .map(|seg| {
            let t = seg.trim();
            if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
                Some(t[1..t.len() - 1].to_string())
            } else if t.is_empty() {
                None
            } else {
                Some(t.to_string())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str, form: Form) -> Cmd {
        Cmd::Extended {
            name: name.into(),
            form,
        }
    }

    fn basic(name: &str, value: Option<&str>) -> Cmd {
        Cmd::Basic {
            name: name.into(),
            value: value.map(Into::into),
            read: false,
        }
    }

    #[test]
    fn splits_extended_commands_at_semicolons_outside_quotes() {
        assert_eq!(
            split("+CMGF=0;+CNMI=2,1,0,1,0").unwrap(),
            vec![
                ext("+CMGF", Form::Set("0".into())),
                ext("+CNMI", Form::Set("2,1,0,1,0".into()))
            ]
        );
        assert_eq!(
            split("+CSCA=\"+1;5\";+cmgf?").unwrap(),
            vec![
                ext("+CSCA", Form::Set("\"+1;5\"".into())),
                ext("+CMGF", Form::Read)
            ]
        );
        assert_eq!(split("+CPMS=?").unwrap(), vec![ext("+CPMS", Form::Test)]);
        assert_eq!(
            split("^curc=0").unwrap(),
            vec![ext("^CURC", Form::Set("0".into()))]
        );
    }

    #[test]
    fn splits_basic_commands_and_mixes() {
        assert_eq!(
            split("e0v1").unwrap(),
            vec![basic("E", Some("0")), basic("V", Some("1"))]
        );
        assert_eq!(split("Z").unwrap(), vec![basic("Z", None)]);
        assert_eq!(
            split("&FE0+CMEE=1").unwrap(),
            vec![
                basic("&F", None),
                basic("E", Some("0")),
                ext("+CMEE", Form::Set("1".into()))
            ]
        );
        assert_eq!(
            split("S0=0").unwrap(),
            vec![Cmd::Basic {
                name: "S0".into(),
                value: Some("0".into()),
                read: false
            }]
        );
        assert_eq!(split("").unwrap(), vec![]);
        assert_eq!(split("!"), None);
    }

    #[test]
    fn splits_arguments() {
        assert_eq!(
            args("\"SM\", \"ME\",,3"),
            vec![Some("SM".into()), Some("ME".into()), None, Some("3".into())]
        );
        assert_eq!(args("\"\""), vec![Some(String::new())]);
        assert_eq!(args("\"a,b\""), vec![Some("a,b".into())]);
    }
}
