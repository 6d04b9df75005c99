//! Use cases the HTTP API and CLI call: create/verify/resend/cancel OTPs, send/list messages.
