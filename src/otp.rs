//! OTP policy: codes from the OS CSPRNG, HMAC at rest, constant-time verify, expiry, attempts.
