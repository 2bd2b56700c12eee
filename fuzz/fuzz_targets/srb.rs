//! cargo-fuzz target `srb`: the body and its invariants are `fuzz_cases::srb`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_cases::with_input(data, fuzz_cases::srb::run);
});
