//! Any bytes as the JSON body of every `/v1` request type (`simgate::http::dto`), the way the
//! handlers read them (`serde_json::from_slice`), then through the E.164 validator the service
//! applies to each `to`. Nothing may panic; a body that parses must keep its `to` verbatim, and a
//! number the validator accepts must really be E.164 (ITU-T E.164 §6: `+`, 8 to 15 digits, no
//! leading 0).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simgate::http::dto::{CreateOtpBody, SendTextBody, VerifyBody, VerifyByNumberBody};
use simgate::service::Msisdn;

fn check_number(to: &str) {
    if let Ok(n) = Msisdn::parse(to) {
        assert_eq!(n.as_str(), to);
        let digits = to.strip_prefix('+').expect("accepted number starts with +");
        assert!((8..=15).contains(&digits.len()), "accepted {to:?}");
        assert!(
            digits.bytes().all(|b| b.is_ascii_digit()),
            "accepted {to:?}"
        );
        assert!(!digits.starts_with('0'), "accepted {to:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<CreateOtpBody>(data) {
        check_number(&body.to);
        let to = body.to.clone();
        let create: simgate::service::CreateOtp = body.into();
        assert_eq!(create.to, to);
    }
    if let Ok(body) = serde_json::from_slice::<SendTextBody>(data) {
        check_number(&body.to);
    }
    if let Ok(body) = serde_json::from_slice::<VerifyByNumberBody>(data) {
        check_number(&body.to);
    }
    let _ = serde_json::from_slice::<VerifyBody>(data);
});
