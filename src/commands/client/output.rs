//! How answers reach the terminal: the JSON as received or a human text with its warnings,
//! column tables, and the small helpers the commands share.

use std::process::ExitCode;

use serde_json::Value;

use super::{ClientError, Exit};

/// Left-aligned columns (right-aligned where `right` says) two spaces apart, each as wide as its
/// widest cell; no trailing blanks.
pub(crate) fn table<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if right[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.join("\n")
}

/// A string member for human output ("" when absent or null).
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Prints an answer (JSON as received, or `human`'s text with each of its `warnings` on stderr)
/// or reports the error.
pub(crate) fn finish(
    res: Result<Value, ClientError>,
    json: bool,
    human: impl Fn(&Value) -> String,
) -> ExitCode {
    match res {
        Ok(v) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", human(&v));
                for w in warnings(&v) {
                    eprintln!("warning: {w}");
                }
            }
            Exit::Success.into()
        }
        Err(e) => e.report(json),
    }
}

/// The answer's `warnings` (no modem ready, a multi-part text, …); none when absent.
fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| match w.as_str() {
            Some(s) => s.to_owned(),
            None => w.to_string(),
        })
        .collect()
}

/// Percent-encodes an id for use as one path segment; ids are ASCII letters, digits and `_`, but a
/// user may paste anything.
pub(super) fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("otp_ABC123"), "otp_ABC123");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn warnings_are_read_when_present() {
        assert!(warnings(&json!({"id": "x"})).is_empty());
        assert_eq!(
            warnings(&json!({"warnings": ["no modem is ready", "two parts"]})),
            ["no modem is ready", "two parts"]
        );
    }
}
