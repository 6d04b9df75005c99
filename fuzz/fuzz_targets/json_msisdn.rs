//! Any string through the E.164 validator `simgate::service::Msisdn::parse`: it returns, never
//! panics (it slices by byte offset after checking digits, so multi-byte characters are the
//! risk), and accepts exactly `+` then 8 to 15 ASCII digits with no leading 0 (ITU-T E.164 §6).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::service::Msisdn;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let expected = s.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    });
    match Msisdn::parse(s) {
        Ok(n) => {
            assert!(expected, "accepted {s:?}");
            assert_eq!(n.as_str(), s);
        }
        Err(reason) => {
            assert!(!expected, "refused {s:?}: {reason}");
            assert!(!reason.is_empty());
        }
    }
});
