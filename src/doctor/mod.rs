//! `simgate doctor`: gathers facts about serial ports, ModemManager and modems, then judges them.
