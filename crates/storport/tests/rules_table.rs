//! The type-level lock table (`rules!` in `src/lock.rs`, what the compiler enforces on the driver)
//! and `storport-rules` (what the user-mode and UEFI Storports check at run time) are the same
//! table: every row of one is held to the other, so the two cannot drift apart.

use storport::context::{
    AdapterControl, BuildIo, Dpc, FindAdapter, FullDuplex, HalfDuplex, Initialize, Interrupt,
    MessageInterrupt, MessageInterruptPerMessage, PassiveInitialize, ResetBus, StartIoConcurrent,
    StartIoSerialized, StateChange, Synchronized, Timer, TracingEnabled, UnitControl,
};
use storport::lock::{DpcLevel, Held, InterruptLevel, Rules, StartIoLevel, verdicts};
use storport_rules::{Callback, Cpu, Lock, Model, may_acquire};

/// The locks of the three columns, as the run-time table names them.
const COLUMNS: [Lock; 3] = [Lock::StartIo, Lock::Dpc(0x1000), Lock::Interrupt];

const HALF: Model = Model {
    half_duplex: true,
    concurrent_channels: 1,
    per_message: false,
};
const FULL_ONE_CHANNEL: Model = Model::FULL_DUPLEX;
const FULL_CONCURRENT: Model = Model {
    half_duplex: false,
    concurrent_channels: 4,
    per_message: false,
};
const FULL_PER_MESSAGE: Model = Model {
    half_duplex: false,
    concurrent_channels: 4,
    per_message: true,
};

/// Checks the row of token `C` against `callback` under each model the token stands for.
fn row<C: Rules>(token: &str, callback: Callback, models: &[Model]) -> usize {
    let types = verdicts::<C>();
    for model in models {
        let run_time = COLUMNS.map(|lock| may_acquire(callback, lock, *model));
        assert_eq!(
            types, run_time,
            "{token}: the type-level row (StartIo, DPC, Interrupt) differs from storport-rules' \
             may_acquire({callback:?}, .., {model:?})"
        );
    }
    models.len()
}

/// Every model a callback whose token does not depend on the model can run under.
const ANY: [Model; 4] = [HALF, FULL_ONE_CHANNEL, FULL_CONCURRENT, FULL_PER_MESSAGE];

#[test]
fn every_callback_row_matches_storport_rules() {
    let mut checked = 0;
    checked += row::<FindAdapter>("FindAdapter", Callback::FindAdapter, &ANY);
    checked += row::<Initialize>("Initialize", Callback::Initialize, &ANY);
    checked +=
        row::<PassiveInitialize<'static>>("PassiveInitialize", Callback::PassiveInitialize, &ANY);
    checked += row::<BuildIo>("BuildIo", Callback::BuildIo, &ANY);
    checked += row::<StartIoSerialized<FullDuplex>>(
        "StartIoSerialized<FullDuplex>",
        Callback::StartIo,
        &[FULL_ONE_CHANNEL],
    );
    checked += row::<StartIoSerialized<HalfDuplex>>(
        "StartIoSerialized<HalfDuplex>",
        Callback::StartIo,
        &[HALF],
    );
    checked += row::<StartIoConcurrent>(
        "StartIoConcurrent",
        Callback::StartIo,
        &[FULL_CONCURRENT, FULL_PER_MESSAGE],
    );
    checked += row::<Interrupt>("Interrupt", Callback::Interrupt, &ANY);
    checked += row::<MessageInterrupt>(
        "MessageInterrupt",
        Callback::MsiInterrupt,
        &[FULL_ONE_CHANNEL, FULL_CONCURRENT],
    );
    // With per-message locks the routine may take MSI message locks (msi.rs), never the
    // all-messages interrupt lock that the Interrupt column names.
    checked += row::<MessageInterruptPerMessage>(
        "MessageInterruptPerMessage",
        Callback::MsiInterrupt,
        &[FULL_PER_MESSAGE],
    );
    checked += row::<Dpc>("Dpc", Callback::Dpc, &ANY);
    for (full, half, callback) in [
        (
            verdicts::<Timer<FullDuplex>>(),
            verdicts::<Timer<HalfDuplex>>(),
            Callback::Timer,
        ),
        (
            verdicts::<ResetBus<FullDuplex>>(),
            verdicts::<ResetBus<HalfDuplex>>(),
            Callback::ResetBus,
        ),
        (
            verdicts::<StateChange<FullDuplex>>(),
            verdicts::<StateChange<HalfDuplex>>(),
            Callback::StateChange,
        ),
    ] {
        for model in [FULL_ONE_CHANNEL, FULL_CONCURRENT, FULL_PER_MESSAGE] {
            assert_eq!(
                full,
                COLUMNS.map(|l| may_acquire(callback, l, model)),
                "{callback:?} full duplex"
            );
        }
        assert_eq!(
            half,
            COLUMNS.map(|l| may_acquire(callback, l, HALF)),
            "{callback:?} half duplex"
        );
        checked += 4;
    }
    checked += row::<AdapterControl>("AdapterControl", Callback::AdapterControl, &ANY);
    checked += row::<UnitControl>("UnitControl", Callback::UnitControl, &ANY);
    checked += row::<Synchronized>("Synchronized", Callback::SynchronizedAccess, &ANY);
    checked += row::<TracingEnabled>("TracingEnabled", Callback::TracingEnabled, &ANY);
    assert_eq!(checked, 59, "every row under every model it stands for");
}

/// What the run-time checker says about taking each column's lock while holding `held` in a
/// callback that may take every lock (a DPC).
fn while_holding(held: Lock) -> [bool; 3] {
    COLUMNS.map(|lock| {
        let mut cpu = Cpu::<4, 4>::new(FULL_CONCURRENT);
        cpu.enter(Callback::Dpc).expect("a DPC enters");
        cpu.acquire(held).expect("a DPC takes any one lock");
        // A second DPC lock is another STOR_DPC's.
        let lock = match (held, lock) {
            (Lock::Dpc(a), Lock::Dpc(_)) => Lock::Dpc(a + 0x1000),
            _ => lock,
        };
        cpu.acquire(lock).is_ok()
    })
}

#[test]
fn every_held_level_row_matches_storport_rules() {
    assert_eq!(
        verdicts::<Held<StartIoLevel>>(),
        while_holding(Lock::StartIo)
    );
    assert_eq!(
        verdicts::<Held<DpcLevel>>(),
        while_holding(Lock::Dpc(0x1000))
    );
    assert_eq!(
        verdicts::<Held<InterruptLevel>>(),
        while_holding(Lock::Interrupt)
    );
}

/// The comparison can fail: a row that is not the table's is caught.
#[test]
#[should_panic(expected = "differs from storport-rules")]
fn a_row_that_differs_is_caught() {
    // BuildIo's row (may take everything) held to the ISR's run-time row (may take nothing).
    row::<BuildIo>("BuildIo as the ISR", Callback::Interrupt, &ANY);
}
