//! The store contract: otps.

use simgate::store::*;

use crate::contract;
