//! The AT wire protocol (TS 27.007 / 27.005): line framing, URC routing, one command in flight.
