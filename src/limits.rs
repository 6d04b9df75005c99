//! Rate limits (governor, clock injected) and `Retry-After` computation.
