//! The HTTP API (axum): routes, JSON DTOs, bearer auth, problem+json errors.
