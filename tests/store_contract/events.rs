//! The store contract: events.

use simgate::store::*;

use crate::contract;
