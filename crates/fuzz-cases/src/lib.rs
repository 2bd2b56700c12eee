//! The bodies of vioblk's fuzz targets, on the stable toolchain.
//!
//! Each module takes one kind of input that comes from outside the driver, as a structured
//! value built by [`arbitrary`] from raw bytes, runs it through the driver's real code, and
//! checks the invariants a user relies on. A broken invariant is a panic naming it: libFuzzer
//! (the `fuzz/` package, nightly) reports the panic as a crash with the input that caused it;
//! the property tests (`tests/properties.rs`, proptest, stable, in the normal suite) report it
//! as a failing case.
//!
//! | module | input | driver code |
//! |---|---|---|
//! | [`scsi`] | a CDB, a parameter list, a buffer size, a disk description | `vioblk::scsi` |
//! | [`ring`] | submissions, drains, resets and arbitrary device writes | `vioblk::virtio::Virtqueue` |
//! | [`bringup`] | PCI configuration, capability list, common and device configuration bytes | HwStorFindAdapter + HwStorInitialize on storport-sim |
//! | [`srb`] | SRB_EX bytes and a scatter-gather list | `storport::Srb`, `vioblk::virtio::RequestBuilder` |

pub use arbitrary;

pub mod bringup;
pub mod ring;
pub mod scsi;
pub mod srb;

/// Runs `run` on the value `bytes` describe; bytes too short for one are not an input.
pub fn with_input<T, F>(bytes: &[u8], run: F)
where
    T: for<'a> arbitrary::Arbitrary<'a>,
    F: FnOnce(&T),
{
    let u = arbitrary::Unstructured::new(bytes);
    if let Ok(input) = T::arbitrary_take_rest(u) {
        run(&input);
    }
}
