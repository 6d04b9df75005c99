//! Prometheus metrics (prometheus-client registry, no globals).
