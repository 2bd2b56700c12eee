//! SRB_STATUS_PENDING says a request is still in progress: it is no status to complete one with,
//! so the completion statuses have no such value.
use storport::Srb;
use storport::srb::{Completed, Status};

fn start_io(srb: Srb) -> Completed {
    srb.complete(Status::Pending)
}

fn main() {}
