//! The CPU view of an SRB extension borrows the request like the DMA view does: it cannot be
//! read after the request is completed (a use after free).
use storport::Srb;
use storport::srb::Status;

fn dpc(srb: Srb) -> Option<u64> {
    let words = srb.extension_memory()?;
    let _ = srb.complete(Status::Success);
    Some(words[0].load(core::sync::atomic::Ordering::Relaxed))
}

fn main() {}
