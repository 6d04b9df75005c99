//! Webhooks: signed, durable delivery of the store's event outbox (`store::events`).
//!
//! `config` validates `[[webhook]]` tables; `sign` renders one event into a signed request
//! (Standard Webhooks; the `Format` trait is where a second wire format would go); `deliver`
//! runs one task per endpoint that walks the outbox from the endpoint's durable cursor.

pub mod config;
pub mod deliver;
pub mod sign;
