//! Twilio's request bodies and query strings: `application/x-www-form-urlencoded` pairs with
//! Twilio's parameter names (`To`, `Body`, `PageSize`).

/// The parameters of one request, in the order sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

/// A parameter sent more than once where Twilio takes one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeated(pub String);

impl Params {
    /// Parses a form body or a query string. Bytes that are not UTF-8 after decoding are
    /// replaced, so a bad value is refused by its own check rather than silently dropped.
    pub fn parse(bytes: &[u8]) -> Params {
        Params(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The one value of `name`; `Ok(None)` when absent.
    pub fn one(&self, name: &str) -> Result<Option<&str>, Repeated> {
        let mut found = self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = found.next();
        if found.next().is_some() {
            return Err(Repeated(name.to_owned()));
        }
        Ok(first.map(String::as_str))
    }

    /// Whether `name` was sent at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// Percent-encodes a value for a query string in a `*_page_uri`.
pub fn encode(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_decoded_and_repeats_refused() {
        let p = Params::parse(b"To=%2B15551234567&Body=hi+there&MediaUrl=a&MediaUrl=b");
        assert_eq!(p.one("To"), Ok(Some("+15551234567")));
        assert_eq!(p.one("Body"), Ok(Some("hi there")));
        assert_eq!(p.one("From"), Ok(None));
        assert_eq!(p.one("MediaUrl"), Err(Repeated("MediaUrl".into())));
        assert!(p.has("MediaUrl"));
        assert_eq!(encode("+1 5"), "%2B1+5");
    }
}
