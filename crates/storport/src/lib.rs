//! The safe Storport layer: declarations, the `Miniport` trait and its trampolines, context
//! tokens, lock cells, SRBs, DPCs, registers and DMA. Device-agnostic; all the unsafe code of the
//! driver lives here.
#![no_std]
