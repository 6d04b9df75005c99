//! The only code that knows tokio-serial: opening a port, exclusive access, reconnect backoff.
