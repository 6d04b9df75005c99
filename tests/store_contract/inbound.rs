//! The store contract: inbound.

use simgate::store::*;

use crate::contract;
