//! Answers and notices of the SMS commands (TS 27.005): `+CMGS`, `+CMGR`, `+CSMS`, and the
//! `+CDS`/`+CMT`/`+CMTI`/`+CDSI` headers.

use super::{CmdError, Field, bad, fields, int_of, is_int, u8_of};

/// `+CMGS: <mr>[,<scts>]` (TS 27.005 §3.5.1) → the TP-Message-Reference.
pub fn parse_cmgs(line: &str) -> Result<u8, CmdError> {
    let f = fields(line, "+CMGS:")?;
    match f.first() {
        Some(mr) if is_int(mr) => u8_of(line, mr),
        _ => Err(bad(line, "expected <mr>")),
    }
}

/// The length of a PDU-mode `+CDS: <length>` header (TS 27.005 §3.4.1); `None` when the line is
/// the text-mode form, which carries no PDU line.
pub fn parse_cds_len(line: &str) -> Result<Option<usize>, CmdError> {
    let f = fields(line, "+CDS:")?;
    match f.as_slice() {
        [len] if is_int(len) => Ok(Some(usize::from(u8_of(line, len)?))),
        _ => Ok(None),
    }
}

/// The length of a PDU-mode `+CMT: [<alpha>],<length>` header (TS 27.005 §3.4.1); `None` for the
/// text-mode form.
pub fn parse_cmt_len(line: &str) -> Result<Option<usize>, CmdError> {
    let f = fields(line, "+CMT:")?;
    match f.as_slice() {
        [Field::Empty | Field::Quoted(_), len] if is_int(len) => {
            Ok(Some(usize::from(u8_of(line, len)?)))
        }
        _ => Ok(None),
    }
}

/// `+CMTI: <mem>,<index>` / `+CDSI: <mem>,<index>` (TS 27.005 §3.4.1) → `(mem, index)`.
pub fn parse_stored_notice(line: &str, prefix: &str) -> Result<(String, u16), CmdError> {
    let f = fields(line, prefix)?;
    match f.as_slice() {
        [Field::Quoted(mem), index] if is_int(index) => {
            let index =
                u16::try_from(int_of(line, index)?).map_err(|_| bad(line, "index out of range"))?;
            Ok((mem.to_string(), index))
        }
        _ => Err(bad(line, "expected \"<mem>\",<index>")),
    }
}

/// `+CMGR: <stat>,[<alpha>],<length>` (TS 27.005 §3.4.3, PDU mode) → the TPDU length.
pub fn parse_cmgr_len(line: &str) -> Result<usize, CmdError> {
    let f = fields(line, "+CMGR:")?;
    match f.as_slice() {
        [stat, _alpha, len] if is_int(stat) && is_int(len) => Ok(usize::from(u8_of(line, len)?)),
        _ => Err(bad(line, "expected <stat>,[<alpha>],<length>")),
    }
}

/// `+CMGL: <index>,<stat>,[<alpha>],<length>` (TS 27.005 §3.4.2, PDU mode) → `(index, TPDU
/// length)`. The index is the modem's own: some number storage from 0, others from 1.
pub fn parse_cmgl_header(line: &str) -> Result<(u16, usize), CmdError> {
    let f = fields(line, "+CMGL:")?;
    match f.as_slice() {
        [index, stat, _alpha, len] if is_int(index) && is_int(stat) && is_int(len) => {
            let index =
                u16::try_from(int_of(line, index)?).map_err(|_| bad(line, "index out of range"))?;
            Ok((index, usize::from(u8_of(line, len)?)))
        }
        _ => Err(bad(line, "expected <index>,<stat>,[<alpha>],<length>")),
    }
}

/// `+CSMS: <service>,<mt>,<mo>,<bm>` (TS 27.005 §3.2.1) → `<service>` (0 or 1).
pub fn parse_csms_service(line: &str) -> Result<u8, CmdError> {
    let f = fields(line, "+CSMS:")?;
    match f.first() {
        Some(service) if is_int(service) && f.len() == 4 => u8_of(line, service),
        _ => Err(bad(line, "expected <service>,<mt>,<mo>,<bm>")),
    }
}
