//! Vendor quirks, chosen from `+CGMI` / `+CGMM`, kept in one table.

/// What a modem family needs beyond the standard init sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// The family's name, for the log.
    pub family: &'static str,
    /// Extra commands sent after identification; a failure is logged and ignored, since the
    /// modem works without them (they only reduce noise).
    pub init: &'static [&'static str],
}

/// Matched in order against the lower-cased manufacturer and model; the last entry matches all.
const TABLE: &[(&str, Quirks)] = &[
    (
        "huawei",
        Quirks {
            family: "huawei",
            // ^CURC=0 mutes the periodic ^RSSI/^MODE/^BOOT lines that otherwise arrive every
            // few seconds, in the middle of answers.
            init: &["AT^CURC=0"],
        },
    ),
    (
        "simcom",
        Quirks {
            family: "simcom",
            // Needs nothing: its boot URCs (RDY, +CPIN: READY, SMS Ready) are routed as URCs.
            init: &[],
        },
    ),
    (
        "quectel",
        Quirks {
            family: "quectel",
            // Needs nothing on its AT port; `+QIND` URCs are routed and ignored.
            init: &[],
        },
    ),
];

const GENERIC: Quirks = Quirks {
    family: "generic",
    init: &[],
};

/// The quirks for a modem identified by `manufacturer` and `model`.
pub fn lookup(manufacturer: Option<&str>, model: Option<&str>) -> Quirks {
    let ident = format!(
        "{} {}",
        manufacturer.unwrap_or_default(),
        model.unwrap_or_default()
    )
    .to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(needle, _)| ident.contains(needle))
        .map(|(_, q)| *q)
        .unwrap_or(GENERIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_by_manufacturer_or_model() {
        assert_eq!(lookup(Some("huawei"), Some("E3372")).family, "huawei");
        assert_eq!(lookup(Some("HUAWEI"), None).init, &["AT^CURC=0"]);
        assert_eq!(
            lookup(Some("SIMCOM_Ltd"), Some("SIMCOM_SIM800L")).family,
            "simcom"
        );
        assert_eq!(lookup(None, Some("SIMCOM_SIM7600")).family, "simcom");
        assert_eq!(lookup(Some("Quectel"), Some("EC25")).family, "quectel");
        assert_eq!(
            lookup(Some("simgate"), Some("simgate-sim")).family,
            "generic"
        );
        assert_eq!(lookup(None, None).family, "generic");
    }
}
