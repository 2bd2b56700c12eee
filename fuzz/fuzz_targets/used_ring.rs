//! cargo-fuzz target `used_ring`: the body and its invariants are `fuzz_cases::ring`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_cases::with_input(data, fuzz_cases::ring::run);
});
