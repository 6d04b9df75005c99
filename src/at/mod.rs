//! The AT wire protocol (TS 27.007 / 27.005): line framing, URC routing, one command in flight.
//!
//! Three layers: [`digest`] is pure (bytes → URC | response | prompt | incomplete), [`engine`] owns
//! the read half of a byte stream and the single response slot, [`cmd`] builds command lines and
//! reads answer parameters (by command family). [`urc`] decides once what an unsolicited line
//! means; [`ask`] is the one fatal-or-optional policy. [`error`] holds the typed `+CMS ERROR` /
//! `+CME ERROR` codes.

pub mod ask;
pub mod cmd;
pub mod digest;
pub mod engine;
pub mod error;
pub mod redact;
pub mod urc;

pub use ask::Refusal;
pub use digest::{Digested, Digester, Final, Response, UrcLine};
pub use engine::{AtClient, AtError};
pub use error::{CmeError, CmsError};
pub use urc::Urc;
