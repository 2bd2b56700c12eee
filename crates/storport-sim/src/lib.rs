//! storport-sim: a user-mode Storport that runs a miniport's real code and checks Storport's rules.
#![allow(missing_docs)]

pub mod device;
