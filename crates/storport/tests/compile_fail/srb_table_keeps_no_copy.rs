//! A request put in an `SrbTable` is moved into it: the handle given up cannot be completed
//! as well (the table's request would be completed twice).
use storport::Srb;
use storport::srb::{SrbTable, Status};

fn start_io(table: &mut SrbTable<4>, srb: Srb) {
    let _ = table.insert(0, srb);
    let _ = srb.complete(Status::Success);
}

fn main() {}
