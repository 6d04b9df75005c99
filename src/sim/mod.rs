//! The simulated modem: a pseudo-terminal that answers AT commands like a real dongle.
