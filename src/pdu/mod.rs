//! SMS PDU codec (3GPP TS 23.038 / 23.040). Pure: no I/O.
