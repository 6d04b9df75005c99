//! SMS PDU codec (3GPP TS 23.038 / 23.040, PDU mode of TS 27.005). Pure: no I/O, no clock, no
//! randomness; the caller supplies the concatenation reference.
//!
//! - [`gsm7`]: the GSM 7-bit default alphabet, extension table and septet packing.
//! - [`address`]: address fields and the SMSC prefix.
//! - `text`: choosing GSM-7 or UCS-2, splitting into parts, user data headers, TP-DCS.
//! - `tpdu`: SMS-SUBMIT, SMS-DELIVER and SMS-STATUS-REPORT encode and decode.
//!
//! Decoders never panic: every failure is a [`DecodeError`] naming the field and byte offset.
//! They are also strict where strictness tells a PDU from noise: the bytes must end where the
//! last field ends, and TP-SCTS / TP-DT / absolute TP-VP must be dates a clock can show.

pub mod address;
pub mod gsm7;
mod text;
mod tpdu;

#[cfg(test)]
mod tests;

use std::fmt;

pub use address::{Address, AddressKind};
pub use text::{Plan, plan};
pub use tpdu::{
    decode, decode_announced, decode_hex, encode_deliver, encode_status_report, encode_submit,
    encode_submit_to, validity_minutes, validity_octet,
};

/// How the text of a message is coded (TS 23.038 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GSM 7-bit default alphabet, packed: 160 characters in one SMS.
    Gsm7,
    /// UCS-2 / UTF-16BE: 70 UTF-16 units in one SMS.
    Ucs2,
    /// 8-bit data: binary payloads, no text.
    EightBit,
}

impl Encoding {
    /// A short lowercase name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "gsm7",
            Encoding::Ucs2 => "ucs2",
            Encoding::EightBit => "8bit",
        }
    }
}

/// Options of an SMS-SUBMIT that the caller chooses per message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// TP-SRR: ask the network for a status report (`+CDS`) so delivery can be confirmed.
    pub status_report: bool,
    /// TP-VP relative, in minutes; rounded up to the next representable period so an OTP is
    /// never dropped before it expires. `None` leaves TP-VPF absent (the SMSC default applies).
    pub validity_minutes: Option<u32>,
    /// Class 0 ("flash"): shown at once and not stored, for codes users should not keep.
    pub flash: bool,
    /// An explicit SMSC number; `None` sends the `00` octet so the modem uses the SIM's SMSC.
    pub smsc: Option<String>,
}

/// One encoded SMS-SUBMIT part, ready for `AT+CMGS=<tpdu_len>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPart {
    /// The length `AT+CMGS` wants: octets of the TPDU, the SMSC prefix excluded (TS 27.005 §3.5.1).
    pub tpdu_len: usize,
    /// The whole PDU, SMSC prefix included, exactly as written after the `> ` prompt.
    pub bytes: Vec<u8>,
}

impl EncodedPart {
    /// Uppercase hex, the form PDU mode puts on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(&self.bytes)
    }
}

/// A concatenation element of the user data header (TS 23.040 §9.2.3.24.1 and .8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    /// Reference shared by all parts of one message (8-bit IEI 0x00 or 16-bit IEI 0x08).
    pub reference: u16,
    /// How many parts the message has.
    pub total: u8,
    /// This part's number, starting at 1.
    pub seq: u8,
}

/// A TP-SCTS / TP-DT / absolute TP-VP timestamp (TS 23.040 §9.2.3.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Full year; the PDU carries two digits, read as 20YY (19YY for 90..=99).
    pub year: u16,
    /// 1..=12 in a well-formed PDU.
    pub month: u8,
    /// 1..=31 in a well-formed PDU.
    pub day: u8,
    /// 0..=23 in a well-formed PDU.
    pub hour: u8,
    /// 0..=59 in a well-formed PDU.
    pub minute: u8,
    /// 0..=59 in a well-formed PDU.
    pub second: u8,
    /// Offset from UTC in quarter hours, negative west of Greenwich.
    pub tz_quarter_hours: i8,
}

impl Timestamp {
    /// RFC 3339 with the PDU's own offset, e.g. `2026-11-22T10:33:21+01:00`.
    pub fn to_rfc3339(&self) -> String {
        let q = i32::from(self.tz_quarter_hours);
        let sign = if q < 0 { '-' } else { '+' };
        let minutes = q.abs() * 15;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            sign,
            minutes / 60,
            minutes % 60
        )
    }
}

/// TP-VP in one of its three formats (TS 23.040 §9.2.3.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// §9.2.3.12.1: one octet; see [`validity_minutes`].
    Relative(u8),
    /// §9.2.3.12.2: a timestamp.
    Absolute(Timestamp),
    /// §9.2.3.12.3: seven octets, kept raw.
    Enhanced([u8; 7]),
}

/// A decoded SMS-SUBMIT (TS 23.040 §9.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// The SMSC prefix; `None` for `00` (the SIM's SMSC).
    pub smsc: Option<Address>,
    /// TP-RD: the SMSC may drop a duplicate with the same TP-MR and destination.
    pub reject_duplicates: bool,
    /// TP-SRR: a status report was requested.
    pub status_report_request: bool,
    /// TP-MR as written by the sender (0 when the modem assigns it).
    pub message_reference: u8,
    /// TP-DA.
    pub destination: Address,
    /// TP-PID.
    pub pid: u8,
    /// TP-DCS, raw.
    pub dcs: u8,
    /// The alphabet TP-DCS selects.
    pub encoding: Encoding,
    /// TP-DCS says message class 0.
    pub flash: bool,
    /// TP-VP, when TP-VPF says one is present.
    pub validity: Option<Validity>,
    /// The concatenation element of the UDH, if any.
    pub concat: Option<Concat>,
    /// The decoded text of this part; empty for 8-bit data.
    pub text: String,
    /// The body after the UDH: GSM-7 as unpacked septets, UCS-2 as UTF-16BE, 8-bit raw.
    pub user_data: Vec<u8>,
}

/// A decoded SMS-DELIVER (TS 23.040 §9.2.2.1): a text arriving at the SIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The SMSC that delivered it.
    pub smsc: Option<Address>,
    /// TP-OA: the sender, possibly alphanumeric.
    pub originator: Address,
    /// TP-PID.
    pub pid: u8,
    /// TP-DCS, raw.
    pub dcs: u8,
    /// The alphabet TP-DCS selects.
    pub encoding: Encoding,
    /// TP-SCTS: when the SMSC received it.
    pub sc_timestamp: Timestamp,
    /// The concatenation element of the UDH, if any.
    pub concat: Option<Concat>,
    /// The decoded text of this part; empty for 8-bit data.
    pub text: String,
    /// The body after the UDH: GSM-7 as unpacked septets, UCS-2 as UTF-16BE, 8-bit raw.
    /// [`encode_deliver`] encodes this for 8-bit data and `text` otherwise.
    pub user_data: Vec<u8>,
    /// TP-MMS clear: the SMSC has more messages waiting for this SIM.
    pub more_messages: bool,
}

/// What TP-ST says about a message (TS 23.040 §9.2.3.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// 0x00..=0x1F: delivered (or replaced / forwarded, which count as done).
    Delivered,
    /// 0x20..=0x3F: the SMSC is still trying.
    StillTrying,
    /// 0x40..=0x5F, and reserved values: the SMSC gave up for good.
    PermanentFailure,
    /// 0x60..=0x7F: the SMSC gave up after a temporary error.
    TemporaryFailure,
}

/// A decoded SMS-STATUS-REPORT (TS 23.040 §9.2.2.3): the `+CDS` that says what became of a
/// submitted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The SMSC prefix.
    pub smsc: Option<Address>,
    /// TP-MR of the SUBMIT this reports on: the correlation key.
    pub message_reference: u8,
    /// TP-RA: the recipient of that SUBMIT.
    pub recipient: Address,
    /// TP-SCTS: when the SMSC accepted the SUBMIT.
    pub sc_timestamp: Timestamp,
    /// TP-DT: when the status was reached (delivered, or given up).
    pub discharge_time: Timestamp,
    /// TP-ST, raw; see [`StatusReport::outcome`].
    pub status: u8,
}

impl StatusReport {
    /// TP-ST grouped as TS 23.040 §9.2.3.15 does. Values with bit 7 set are reserved; the spec
    /// says to treat unknown values as "service rejected", a permanent failure.
    pub fn outcome(&self) -> DeliveryOutcome {
        match self.status {
            0x00..=0x1F => DeliveryOutcome::Delivered,
            0x20..=0x3F => DeliveryOutcome::StillTrying,
            0x60..=0x7F => DeliveryOutcome::TemporaryFailure,
            _ => DeliveryOutcome::PermanentFailure,
        }
    }
}

/// Any PDU this codec understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// TP-MTI 01 from the sender's side (what the simulator receives in `AT+CMGS`).
    Submit(Submit),
    /// TP-MTI 00 towards the SIM.
    Deliver(Deliver),
    /// TP-MTI 10 towards the SIM.
    StatusReport(StatusReport),
}

/// Why bytes are not a PDU, with the field and byte offset where decoding stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The TS 23.040 field being read ("TP-UDL", "TP-DA", …).
    pub field: &'static str,
    /// Byte offset of that field from the start of the PDU (the SMSC length octet is 0).
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}: {}", self.field, self.offset, self.reason)
    }
}

impl std::error::Error for DecodeError {}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Not `+digits` or `digits` with 1 to 20 digits (or a bad alphanumeric name).
    #[error("invalid number {0:?}: expected +digits or digits, 1 to 20 digits")]
    InvalidNumber(String),
    /// The SMSC number given in the options is not a valid number.
    #[error("invalid SMSC number {0:?}")]
    InvalidSmsc(String),
    /// Concatenation numbers parts with one octet.
    #[error("text needs {0} parts; at most 255 are possible")]
    TooManyParts(usize),
    /// A single PDU (DELIVER) cannot hold this much user data.
    #[error("user data of {0} units does not fit in one PDU")]
    TooLong(usize),
    /// The text has a character the chosen alphabet lacks.
    #[error("text has a character outside the GSM 7-bit alphabet")]
    NotRepresentable,
    /// `encoding` and `dcs` of a message to encode disagree.
    #[error("TP-DCS 0x{dcs:02X} does not select the {encoding} alphabet")]
    DcsMismatch {
        /// The raw TP-DCS given.
        dcs: u8,
        /// The encoding given.
        encoding: &'static str,
    },
}

/// A cursor over PDU bytes that turns running out of input into a [`DecodeError`].
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn error_at(
        &self,
        field: &'static str,
        offset: usize,
        reason: String,
    ) -> DecodeError {
        DecodeError {
            field,
            offset,
            reason,
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.error_at(
                field,
                self.pos,
                format!(
                    "needs {n} more bytes, only {} left",
                    self.bytes.len() - self.pos
                ),
            )),
        }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}
