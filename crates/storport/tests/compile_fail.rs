//! The lock discipline of seed 003 as compile errors (trybuild).
//!
//! Every file in `compile_fail/` breaks one rule of the two seed-003 tables (or of the cells) and
//! its `.stderr` shows the compiler naming the rule; every file in `pass/` takes each allowed lock
//! once, so the rules forbid no more than the tables do. Regenerate the expected messages with
//! `TRYBUILD=overwrite cargo test -p storport --test compile_fail` and review the diff.

#[test]
fn lock_discipline() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
    cases.pass("tests/pass/*.rs");
}
