//! The store contract: queue.

use simgate::store::*;

use crate::contract;
