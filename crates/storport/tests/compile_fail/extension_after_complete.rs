//! An SRB extension is Storport's memory only until its request completes: the view borrows the
//! request, so it cannot be used after the request is completed (a use after free).
use storport::Srb;
use storport::srb::Status;

fn start_io(srb: Srb) -> Option<()> {
    let region = srb.extension()?;
    let _ = srb.complete(Status::Success);
    region.zero();
    Some(())
}

fn main() {}
