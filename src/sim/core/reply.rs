//! How a command line ends (V.250 §5.7 result codes, TS 27.007 §9.2 `+CME ERROR`, TS 27.005
//! §3.2.5 `+CMS ERROR`): information lines, then the final result in the form `ATV` and
//! `+CMEE` chose.

use rand::RngExt;

use super::Core;
use crate::sim::Profile;

/// How a command ended (V.250 §5.7, TS 27.007 §9.2, TS 27.005 §3.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Final {
    Ok,
    Error,
    /// V.250 result code 3: no call to answer, or it ended.
    NoCarrier,
    Cme(u16),
    Cms(u16),
    /// `> `: waiting for the message body.
    Prompt,
}

impl Core {
    pub(super) fn finish(&mut self, info: Vec<String>, fin: Final) {
        let mut text = String::new();
        for line in &info {
            if self.settings.verbose {
                text.push_str("\r\n");
            }
            text.push_str(line);
            text.push_str("\r\n");
        }
        // Huawei sticks URCs anywhere, including between an information line and the OK.
        if self.cfg.profile == Profile::Huawei
            && self.settings.curc
            && !info.is_empty()
            && fin != Final::Prompt
            && self.rng.random_bool(0.5)
        {
            let noise = self.noise_line();
            text.push_str(&format!("\r\n{noise}\r\n"));
        }
        text.push_str(&self.final_text(fin));
        self.write(text.as_bytes());
    }

    fn final_text(&self, fin: Final) -> String {
        let v = self.settings.verbose;
        let (word, code) = match fin {
            Final::Ok => ("OK".to_string(), 0),
            Final::Error => ("ERROR".to_string(), 4),
            Final::NoCarrier => ("NO CARRIER".to_string(), 3),
            Final::Cme(n) => match self.settings.cmee {
                0 => ("ERROR".to_string(), 4),
                1 => (format!("+CME ERROR: {n}"), 4),
                _ => (format!("+CME ERROR: {}", cme_text(n)), 4),
            },
            Final::Cms(n) => match self.settings.cmee {
                0 => ("ERROR".to_string(), 4),
                1 => (format!("+CMS ERROR: {n}"), 4),
                _ => (format!("+CMS ERROR: {}", cms_text(n)), 4),
            },
            Final::Prompt => return "\r\n> ".to_string(),
        };
        if v {
            format!("\r\n{word}\r\n")
        } else if word.starts_with('+') {
            // Extended errors stay verbose even in numeric mode (TS 27.007 §9.1).
            format!("{word}\r\n")
        } else {
            format!("{code}\r")
        }
    }
}

/// Verbose `+CME ERROR` texts (TS 27.007 §9.2.1).
fn cme_text(n: u16) -> &'static str {
    match n {
        3 => "operation not allowed",
        4 => "operation not supported",
        10 => "SIM not inserted",
        11 => "SIM PIN required",
        12 => "SIM PUK required",
        16 => "incorrect password",
        30 => "no network service",
        50 => "Incorrect parameters",
        _ => "unknown",
    }
}

/// Verbose `+CMS ERROR` texts (TS 27.005 §3.2.5; 0..=127 are TS 24.011 RP causes).
fn cms_text(n: u16) -> &'static str {
    match n {
        1 => "Unassigned (unallocated) number",
        38 => "Network out of order",
        42 => "Congestion",
        302 => "operation not allowed",
        303 => "operation not supported",
        304 => "invalid PDU mode parameter",
        305 => "invalid text mode parameter",
        310 => "SIM not inserted",
        311 => "SIM PIN required",
        316 => "SIM PUK required",
        321 => "invalid memory index",
        331 => "no network service",
        340 => "no +CNMA acknowledgement expected",
        _ => "unknown error",
    }
}
