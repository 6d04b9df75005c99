//! The store contract: messages.

use simgate::store::*;

use crate::contract;
