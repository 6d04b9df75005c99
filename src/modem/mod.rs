//! The modem driver: one task owns one port; `ModemHandle` is the only way in.
