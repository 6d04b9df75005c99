//! `simgate pdu`: encode an SMS-SUBMIT exactly as `AT+CMGS` wants it, or decode any PDU we
//! understand into one JSON object. A thin shell over `crate::pdu`; this file owns the JSON.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::pdu::{
    self, Address, AddressKind, Concat, DeliveryOutcome, Encoding, Pdu, SubmitOptions, Timestamp,
    Validity,
};

/// Encode or decode SMS PDUs (3GPP TS 23.040, PDU mode of TS 27.005).
#[derive(Debug, clap::Args)]
pub struct PduArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: PduCommand,
}

/// The two directions of the codec.
#[derive(Debug, clap::Subcommand)]
pub enum PduCommand {
    /// Encode an SMS-SUBMIT: one line `<TPDU length> <HEX PDU>` per part, as after `AT+CMGS=`.
    Encode(EncodeArgs),
    /// Decode an SMS-SUBMIT, SMS-DELIVER or SMS-STATUS-REPORT (with SMSC prefix) to JSON.
    Decode(DecodeArgs),
}

/// Arguments of `simgate pdu encode`.
#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// Destination: +digits (international) or digits, 1 to 20 digits.
    #[arg(long, value_name = "NUMBER", allow_hyphen_values = true)]
    pub to: String,
    /// The message; GSM 7-bit when every character fits, else UCS-2; split when too long.
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    pub text: String,
    /// Ask the network for a status report (TP-SRR).
    #[arg(long)]
    pub status_report: bool,
    /// Relative validity period in minutes, rounded up to the next period TP-VP can express.
    #[arg(long, value_name = "MINUTES")]
    pub validity: Option<u32>,
    /// Concatenation reference shared by the parts of a long text.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub reference: u8,
    /// Send as class 0 ("flash"): shown at once, not stored.
    #[arg(long)]
    pub flash: bool,
    /// Use this SMSC number instead of the SIM's (`00`).
    #[arg(long, value_name = "NUMBER")]
    pub smsc: Option<String>,
}

/// Arguments of `simgate pdu decode`.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The PDU in hex, SMSC length octet first (as `+CMGL`, `+CMGR` and `+CDS` show it).
    #[arg(value_name = "HEX")]
    pub hex: String,
}

/// Runs `simgate pdu`; exit code 2 for input that cannot be encoded or decoded.
pub fn run(args: PduArgs, json: bool) -> ExitCode {
    match args.command {
        PduCommand::Encode(a) => encode(a, json),
        PduCommand::Decode(a) => decode(&a.hex),
    }
}

fn encode(a: EncodeArgs, json: bool) -> ExitCode {
    let opts = SubmitOptions {
        status_report: a.status_report,
        validity_minutes: a.validity,
        flash: a.flash,
        smsc: a.smsc,
    };
    let parts = match pdu::encode_submit(&a.to, &a.text, &opts, a.reference) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("simgate pdu encode: {e}");
            return ExitCode::from(2);
        }
    };
    if json {
        let encoding = pdu::plan(&a.text).encoding.name();
        let parts: Vec<Value> = parts
            .iter()
            .map(|p| json!({"length": p.tpdu_len, "pdu": p.to_hex()}))
            .collect();
        println!("{}", json!({"encoding": encoding, "parts": parts}));
    } else {
        for p in &parts {
            println!("{} {}", p.tpdu_len, p.to_hex());
        }
    }
    ExitCode::SUCCESS
}

fn decode(hex: &str) -> ExitCode {
    match pdu::decode_hex(hex) {
        Ok(p) => {
            println!("{}", pdu_json(&p));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simgate pdu decode: {e}");
            ExitCode::from(2)
        }
    }
}

/// The JSON object `pdu decode` prints. Public so the simulator and tests can show a PDU the
/// same way.
pub fn pdu_json(p: &Pdu) -> Value {
    match p {
        Pdu::Submit(s) => json!({
            "type": "sms-submit",
            "smsc": s.smsc.as_ref().map(address_json),
            "reject_duplicates": s.reject_duplicates,
            "status_report_request": s.status_report_request,
            "message_reference": s.message_reference,
            "destination": address_json(&s.destination),
            "pid": s.pid,
            "dcs": s.dcs,
            "encoding": s.encoding.name(),
            "flash": s.flash,
            "validity": s.validity.as_ref().map(validity_json),
            "concat": s.concat.as_ref().map(concat_json),
            "text": text_json(s.encoding, &s.text),
            "user_data": hex::encode_upper(&s.user_data),
        }),
        Pdu::Deliver(d) => json!({
            "type": "sms-deliver",
            "smsc": d.smsc.as_ref().map(address_json),
            "originator": address_json(&d.originator),
            "pid": d.pid,
            "dcs": d.dcs,
            "encoding": d.encoding.name(),
            "sc_timestamp": d.sc_timestamp.to_rfc3339(),
            "concat": d.concat.as_ref().map(concat_json),
            "text": text_json(d.encoding, &d.text),
            "user_data": hex::encode_upper(&d.user_data),
            "more_messages": d.more_messages,
        }),
        Pdu::StatusReport(r) => json!({
            "type": "sms-status-report",
            "smsc": r.smsc.as_ref().map(address_json),
            "message_reference": r.message_reference,
            "recipient": address_json(&r.recipient),
            "sc_timestamp": r.sc_timestamp.to_rfc3339(),
            "discharge_time": r.discharge_time.to_rfc3339(),
            "status": {"code": r.status, "outcome": outcome_name(r.outcome())},
        }),
    }
}

/// 8-bit data has no character set, so it has no text (`null`); its bytes are in `user_data`.
fn text_json(encoding: Encoding, text: &str) -> Value {
    match encoding {
        Encoding::EightBit => Value::Null,
        _ => Value::String(text.to_string()),
    }
}

fn address_json(a: &Address) -> Value {
    let kind = match a.kind {
        AddressKind::International => "international",
        AddressKind::National => "national",
        AddressKind::Unknown => "unknown",
        AddressKind::Alphanumeric => "alphanumeric",
        AddressKind::Other(_) => "other",
    };
    json!({"value": a.to_string(), "kind": kind, "toa": a.toa})
}

fn concat_json(c: &Concat) -> Value {
    json!({"reference": c.reference, "total": c.total, "seq": c.seq})
}

fn validity_json(v: &Validity) -> Value {
    match v {
        Validity::Relative(o) => {
            json!({"format": "relative", "octet": o, "minutes": pdu::validity_minutes(*o)})
        }
        Validity::Absolute(t) => json!({"format": "absolute", "time": timestamp_json(t)}),
        Validity::Enhanced(raw) => json!({"format": "enhanced", "raw": hex::encode_upper(raw)}),
    }
}

fn timestamp_json(t: &Timestamp) -> Value {
    Value::String(t.to_rfc3339())
}

fn outcome_name(o: DeliveryOutcome) -> &'static str {
    match o {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::StillTrying => "still_trying",
        DeliveryOutcome::PermanentFailure => "permanent_failure",
        DeliveryOutcome::TemporaryFailure => "temporary_failure",
    }
}
