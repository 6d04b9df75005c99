//! simgate: one-time passwords by SMS straight from a SIM card.
//!
//! Data flows one way: `http` → `service` → `store` (queue) → `dispatch` → `modem` → `at` →
//! `transport` (the serial port). Status reports flow back through `store`. See ARCHITECTURE.md
//! for the map of modules and the invariants each one keeps.

pub mod at;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod datadir;
pub mod dispatch;
pub mod doctor;
pub mod expiry;
pub mod fine_sleep;
pub mod http;
pub mod inbound;
pub mod limits;
pub mod log_throttle;
pub mod metrics;
pub mod model;
pub mod modem;
pub mod notify;
pub mod otp;
pub mod pdu;
pub mod service;
pub mod sim;
pub mod store;
pub mod transport;
pub mod webhook;
