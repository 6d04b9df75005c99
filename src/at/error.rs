//! Typed final-result errors: `+CMS ERROR` (3GPP TS 27.005 §3.2.5) and `+CME ERROR`
//! (3GPP TS 27.007 §9.2), each with `Other(u16)` for codes the tables do not name (vendor codes
//! from 512 on for CMS, or codes a manufacturer invents).

use std::fmt;

/// A `+CMS ERROR: <err>` code, 3GPP TS 27.005 §3.2.5.
///
/// Codes 0..=127 are the RP-cause values of TS 24.011 §8.2.5.4 (Table 8.4), 128..=255 the
/// TP-Failure-Cause values of TS 23.040 §9.2.3.22; 300..=500 are the ME/TA errors of TS 27.005
/// itself; 512 and above belong to the manufacturer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmsError {
    /// 1: unassigned (unallocated) number.
    UnassignedNumber,
    /// 8: operator determined barring.
    OperatorBarred,
    /// 10: call barred.
    CallBarred,
    /// 17: network failure.
    NetworkFailure,
    /// 21: short message transfer rejected.
    TransferRejected,
    /// 22: congestion (TS 24.011 annex E-2, mobile-originating transfer; the same value means
    /// "memory capacity exceeded" only on the receiving side).
    CongestionNoChannel,
    /// 27: destination out of service.
    DestinationOutOfService,
    /// 28: unidentified subscriber.
    UnidentifiedSubscriber,
    /// 29: facility rejected.
    FacilityRejected,
    /// 30: unknown subscriber.
    UnknownSubscriber,
    /// 38: network out of order.
    NetworkOutOfOrder,
    /// 41: temporary failure.
    TemporaryFailure,
    /// 42: congestion.
    Congestion,
    /// 47: resources unavailable, unspecified.
    ResourcesUnavailable,
    /// 50: requested facility not subscribed.
    FacilityNotSubscribed,
    /// 69: requested facility not implemented.
    FacilityNotImplemented,
    /// 81: invalid short message transfer reference value.
    InvalidTransferReference,
    /// 95: invalid message, unspecified.
    InvalidMessage,
    /// 96: invalid mandatory information.
    InvalidMandatoryInformation,
    /// 97: message type non-existent or not implemented.
    MessageTypeNotImplemented,
    /// 98: message not compatible with short message protocol state.
    MessageNotCompatible,
    /// 99: information element non-existent or not implemented.
    InformationElementNotImplemented,
    /// 111: protocol error, unspecified.
    ProtocolError,
    /// 127: interworking, unspecified.
    Interworking,
    /// 192: SC busy (TS 23.040 TP-FCS).
    ScBusy,
    /// 193: no SC subscription.
    NoScSubscription,
    /// 194: SC system failure.
    ScSystemFailure,
    /// 195: invalid SME address.
    InvalidSmeAddress,
    /// 196: destination SME barred.
    DestinationSmeBarred,
    /// 300: ME failure.
    MeFailure,
    /// 301: SMS service of ME reserved.
    SmsServiceReserved,
    /// 302: operation not allowed.
    OperationNotAllowed,
    /// 303: operation not supported.
    OperationNotSupported,
    /// 304: invalid PDU mode parameter.
    InvalidPduModeParameter,
    /// 305: invalid text mode parameter.
    InvalidTextModeParameter,
    /// 310: SIM not inserted.
    SimNotInserted,
    /// 311: SIM PIN required.
    SimPinRequired,
    /// 312: PH-SIM PIN required.
    PhSimPinRequired,
    /// 313: SIM failure.
    SimFailure,
    /// 314: SIM busy.
    SimBusy,
    /// 315: SIM wrong.
    SimWrong,
    /// 316: SIM PUK required.
    SimPukRequired,
    /// 320: memory failure.
    MemoryFailure,
    /// 322: memory full.
    MemoryFull,
    /// 330: SMSC address unknown.
    SmscAddressUnknown,
    /// 331: no network service.
    NoNetworkService,
    /// 332: network timeout.
    NetworkTimeout,
    /// 340: no +CNMA acknowledgement expected.
    NoCnmaExpected,
    /// 500: unknown error.
    Unknown,
    /// Any other code, including the manufacturer-specific range from 512.
    Other(u16),
}

/// The numbered table both directions read from, so `from_code` and `code` cannot disagree.
const CMS_TABLE: &[(u16, CmsError)] = &[
    (1, CmsError::UnassignedNumber),
    (8, CmsError::OperatorBarred),
    (10, CmsError::CallBarred),
    (17, CmsError::NetworkFailure),
    (21, CmsError::TransferRejected),
    (22, CmsError::CongestionNoChannel),
    (27, CmsError::DestinationOutOfService),
    (28, CmsError::UnidentifiedSubscriber),
    (29, CmsError::FacilityRejected),
    (30, CmsError::UnknownSubscriber),
    (38, CmsError::NetworkOutOfOrder),
    (41, CmsError::TemporaryFailure),
    (42, CmsError::Congestion),
    (47, CmsError::ResourcesUnavailable),
    (50, CmsError::FacilityNotSubscribed),
    (69, CmsError::FacilityNotImplemented),
    (81, CmsError::InvalidTransferReference),
    (95, CmsError::InvalidMessage),
    (96, CmsError::InvalidMandatoryInformation),
    (97, CmsError::MessageTypeNotImplemented),
    (98, CmsError::MessageNotCompatible),
    (99, CmsError::InformationElementNotImplemented),
    (111, CmsError::ProtocolError),
    (127, CmsError::Interworking),
    (192, CmsError::ScBusy),
    (193, CmsError::NoScSubscription),
    (194, CmsError::ScSystemFailure),
    (195, CmsError::InvalidSmeAddress),
    (196, CmsError::DestinationSmeBarred),
    (300, CmsError::MeFailure),
    (301, CmsError::SmsServiceReserved),
    (302, CmsError::OperationNotAllowed),
    (303, CmsError::OperationNotSupported),
    (304, CmsError::InvalidPduModeParameter),
    (305, CmsError::InvalidTextModeParameter),
    (310, CmsError::SimNotInserted),
    (311, CmsError::SimPinRequired),
    (312, CmsError::PhSimPinRequired),
    (313, CmsError::SimFailure),
    (314, CmsError::SimBusy),
    (315, CmsError::SimWrong),
    (316, CmsError::SimPukRequired),
    (320, CmsError::MemoryFailure),
    (322, CmsError::MemoryFull),
    (330, CmsError::SmscAddressUnknown),
    (331, CmsError::NoNetworkService),
    (332, CmsError::NetworkTimeout),
    (340, CmsError::NoCnmaExpected),
    (500, CmsError::Unknown),
];

impl CmsError {
    /// Maps a numeric `<err>` to its name; unnamed codes become `Other`.
    pub fn from_code(code: u16) -> CmsError {
        CMS_TABLE
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, e)| *e)
            .unwrap_or(CmsError::Other(code))
    }

    /// The numeric `<err>` as the modem sent it.
    pub fn code(&self) -> u16 {
        match self {
            CmsError::Other(code) => *code,
            named => CMS_TABLE
                .iter()
                .find(|(_, e)| e == named)
                .map(|(c, _)| *c)
                .unwrap_or(500),
        }
    }

    /// Whether sending the same PDU again later may succeed.
    ///
    /// Permanent are the causes that name the recipient, the subscription or the PDU itself
    /// (retrying cannot change them) and a SIM that needs a human (missing, PIN/PUK, wrong).
    /// Everything else is temporary: network and SC congestion or failure, a busy SIM or ME, the
    /// catch-all 500, every code the table does not name, and every manufacturer code (512 and
    /// up). Erring towards "temporary" costs a few retries until the message deadline; erring the
    /// other way loses a message that would have gone through.
    pub fn is_temporary(&self) -> bool {
        !matches!(
            self,
            CmsError::UnassignedNumber
                | CmsError::OperatorBarred
                | CmsError::CallBarred
                | CmsError::TransferRejected
                | CmsError::UnidentifiedSubscriber
                | CmsError::FacilityRejected
                | CmsError::UnknownSubscriber
                | CmsError::FacilityNotSubscribed
                | CmsError::FacilityNotImplemented
                | CmsError::InvalidMessage
                | CmsError::InvalidMandatoryInformation
                | CmsError::MessageTypeNotImplemented
                | CmsError::InformationElementNotImplemented
                | CmsError::NoScSubscription
                | CmsError::InvalidSmeAddress
                | CmsError::DestinationSmeBarred
                | CmsError::SmsServiceReserved
                | CmsError::OperationNotAllowed
                | CmsError::OperationNotSupported
                | CmsError::InvalidPduModeParameter
                | CmsError::InvalidTextModeParameter
                | CmsError::SimNotInserted
                | CmsError::SimPinRequired
                | CmsError::PhSimPinRequired
                | CmsError::SimFailure
                | CmsError::SimWrong
                | CmsError::SimPukRequired
                | CmsError::SmscAddressUnknown
        ) && !matches!(self, CmsError::Other(128..=191))
    }
}

impl fmt::Display for CmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmsError::Other(code) => write!(f, "+CMS ERROR {code}"),
            named => write!(f, "+CMS ERROR {} ({named:?})", named.code()),
        }
    }
}

/// A `+CME ERROR: <err>` code, 3GPP TS 27.007 §9.2.1 (general) and §9.2.2 (GPRS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmeError {
    /// 0: phone failure.
    PhoneFailure,
    /// 3: operation not allowed.
    OperationNotAllowed,
    /// 4: operation not supported.
    OperationNotSupported,
    /// 5: PH-SIM PIN required.
    PhSimPinRequired,
    /// 10: SIM not inserted.
    SimNotInserted,
    /// 11: SIM PIN required.
    SimPinRequired,
    /// 12: SIM PUK required.
    SimPukRequired,
    /// 13: SIM failure.
    SimFailure,
    /// 14: SIM busy.
    SimBusy,
    /// 15: SIM wrong.
    SimWrong,
    /// 16: incorrect password (a rejected PIN).
    IncorrectPassword,
    /// 17: SIM PIN2 required.
    SimPin2Required,
    /// 18: SIM PUK2 required.
    SimPuk2Required,
    /// 20: memory full.
    MemoryFull,
    /// 21: invalid index.
    InvalidIndex,
    /// 22: not found.
    NotFound,
    /// 23: memory failure.
    MemoryFailure,
    /// 30: no network service.
    NoNetworkService,
    /// 31: network timeout.
    NetworkTimeout,
    /// 32: network not allowed, emergency calls only.
    EmergencyOnly,
    /// 100: unknown.
    Unknown,
    /// Any code the table does not name.
    Other(u16),
}

const CME_TABLE: &[(u16, CmeError, &str)] = &[
    (0, CmeError::PhoneFailure, "phone failure"),
    (3, CmeError::OperationNotAllowed, "operation not allowed"),
    (
        4,
        CmeError::OperationNotSupported,
        "operation not supported",
    ),
    (5, CmeError::PhSimPinRequired, "PH-SIM PIN required"),
    (10, CmeError::SimNotInserted, "SIM not inserted"),
    (11, CmeError::SimPinRequired, "SIM PIN required"),
    (12, CmeError::SimPukRequired, "SIM PUK required"),
    (13, CmeError::SimFailure, "SIM failure"),
    (14, CmeError::SimBusy, "SIM busy"),
    (15, CmeError::SimWrong, "SIM wrong"),
    (16, CmeError::IncorrectPassword, "incorrect password"),
    (17, CmeError::SimPin2Required, "SIM PIN2 required"),
    (18, CmeError::SimPuk2Required, "SIM PUK2 required"),
    (20, CmeError::MemoryFull, "memory full"),
    (21, CmeError::InvalidIndex, "invalid index"),
    (22, CmeError::NotFound, "not found"),
    (23, CmeError::MemoryFailure, "memory failure"),
    (30, CmeError::NoNetworkService, "no network service"),
    (31, CmeError::NetworkTimeout, "network timeout"),
    (
        32,
        CmeError::EmergencyOnly,
        "network not allowed - emergency calls only",
    ),
    (100, CmeError::Unknown, "unknown"),
];

impl CmeError {
    /// Maps a numeric `<err>` to its name; unnamed codes become `Other`.
    pub fn from_code(code: u16) -> CmeError {
        CME_TABLE
            .iter()
            .find(|(c, _, _)| *c == code)
            .map(|(_, e, _)| *e)
            .unwrap_or(CmeError::Other(code))
    }

    /// Maps the verbose form (`AT+CMEE=2`, which some firmware uses regardless) to its name.
    pub fn from_text(text: &str) -> CmeError {
        let text = text.trim();
        CME_TABLE
            .iter()
            .find(|(_, _, t)| t.eq_ignore_ascii_case(text))
            .map(|(_, e, _)| *e)
            .unwrap_or(CmeError::Unknown)
    }

    /// The numeric `<err>`.
    pub fn code(&self) -> u16 {
        match self {
            CmeError::Other(code) => *code,
            named => CME_TABLE
                .iter()
                .find(|(_, e, _)| e == named)
                .map(|(c, _, _)| *c)
                .unwrap_or(100),
        }
    }
}

impl fmt::Display for CmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmeError::Other(code) => write!(f, "+CME ERROR {code}"),
            named => write!(f, "+CME ERROR {} ({named:?})", named.code()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cms_codes_round_trip() {
        for (code, err) in CMS_TABLE {
            assert_eq!(CmsError::from_code(*code), *err);
            assert_eq!(err.code(), *code);
        }
        assert_eq!(CmsError::from_code(513), CmsError::Other(513));
        assert_eq!(CmsError::Other(513).code(), 513);
    }

    #[test]
    fn cms_classification() {
        let temporary = [
            17, 22, 27, 38, 41, 42, 47, 98, 111, 192, 194, 300, 314, 331, 332, 500,
        ];
        let permanent = [
            1, 8, 10, 21, 28, 29, 30, 50, 96, 128, 176, 195, 196, 304, 305, 310, 311, 316, 330,
        ];
        for code in temporary {
            assert!(CmsError::from_code(code).is_temporary(), "{code}");
        }
        for code in permanent {
            assert!(!CmsError::from_code(code).is_temporary(), "{code}");
        }
        // Manufacturer codes are unknowable in general: retry them.
        for code in [512, 513, 600, 65535] {
            assert!(CmsError::from_code(code).is_temporary(), "{code}");
        }
    }

    #[test]
    fn cme_codes_and_text() {
        for (code, err, text) in CME_TABLE {
            assert_eq!(CmeError::from_code(*code), *err);
            assert_eq!(err.code(), *code);
            assert_eq!(CmeError::from_text(text), *err);
        }
        assert_eq!(
            CmeError::from_text("sim not inserted"),
            CmeError::SimNotInserted
        );
        assert_eq!(CmeError::from_code(262), CmeError::Other(262));
    }
}
