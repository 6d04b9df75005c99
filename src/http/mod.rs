//! The HTTP API (axum): routes, JSON DTOs, bearer auth, body limit, problem+json errors, OpenAPI.
//!
//! **Invariant:** the only module that knows the API's JSON and HTTP; it calls [`crate::service`]
//! for every use case and never touches the store directly.

pub mod auth;
pub mod extract;
pub mod problem;
