//! Guards, held-level tokens and callback tokens stay on their CPU: not `Send`.
use storport::context::Dpc;
use storport::lock::{Guard, Held, StartIoLevel};

fn assert_send<T: Send>() {}

fn main() {
    assert_send::<Guard<'static, StartIoLevel, u32>>();
    assert_send::<Held<StartIoLevel>>();
    assert_send::<Dpc>();
}
