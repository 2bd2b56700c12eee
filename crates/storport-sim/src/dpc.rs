//! DPCs: STOR_DPC objects (StorPortInitializeDpc / StorPortIssueDpc) and the per-CPU DPC threads
//! that run them at DISPATCH_LEVEL.
//!
//! The miniport's STOR_DPC (72 bytes, opaque) holds the address of the sim's [`DpcObject`] in its
//! first word and a tag in its second, so the port can recognise an initialised DPC.

use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;

use crate::abi::{DpcFn, irql};
use crate::adapter::AdapterInner;
use crate::cpu::{self, Callback, RawSpinLock};
use crate::rules::Rule;

const TAG: u64 = 0x4350_444D_4953_0000;

/// The port's side of one STOR_DPC.
pub(crate) struct DpcObject {
    pub stor_dpc: usize,
    routine: DpcFn,
    pub lock: RawSpinLock,
    queued: AtomicBool,
    args: Mutex<(usize, usize)>,
}

/// One CPU's DPC queue.
#[derive(Default)]
pub(crate) struct CpuQueue {
    q: Mutex<VecDeque<Arc<DpcObject>>>,
    thread: OnceLock<Thread>,
}

impl CpuQueue {
    pub fn wake(&self) {
        crate::sched::notify(self as *const Self as usize);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

fn tag(a: &AdapterInner) -> u64 {
    TAG ^ a.serial
}

/// StorPortInitializeDpc.
pub(crate) fn initialize(a: &AdapterInner, stor_dpc: *mut c_void, routine: Option<DpcFn>) {
    if a.dump_mode() {
        a.report(
            Rule::DumpMode,
            [0; 3],
            "StorPortInitializeDpc in dump mode (do the work inline)".into(),
        );
        return;
    }
    let (Some(routine), false) = (routine, stor_dpc.is_null()) else {
        a.report(
            Rule::InvalidParameter,
            [0; 3],
            "StorPortInitializeDpc with a NULL DPC or routine".into(),
        );
        return;
    };
    let obj = Arc::new(DpcObject {
        stor_dpc: stor_dpc as usize,
        routine,
        lock: RawSpinLock::default(),
        queued: AtomicBool::new(false),
        args: Mutex::new((0, 0)),
    });
    let words = [Arc::as_ptr(&obj) as u64, tag(a)];
    // SAFETY: the miniport passes its STOR_DPC (72 bytes, 8-aligned); the first 16 bytes are the
    // opaque DPC buffer the port owns.
    unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), stor_dpc.cast::<u64>(), 2) };
    a.dpcs.lock().unwrap_or_else(|e| e.into_inner()).push(obj);
}

/// The DPC object behind a miniport STOR_DPC, if it was initialised on this adapter.
pub(crate) fn resolve(a: &AdapterInner, stor_dpc: *mut c_void) -> Option<&DpcObject> {
    if stor_dpc.is_null() {
        return None;
    }
    let mut words = [0u64; 2];
    // SAFETY: the miniport passes its STOR_DPC (at least 16 readable bytes).
    unsafe { std::ptr::copy_nonoverlapping(stor_dpc.cast::<u64>(), words.as_mut_ptr(), 2) };
    if words[1] != tag(a) || words[0] == 0 {
        return None;
    }
    // SAFETY: the tag says the port wrote this word: the address of a DPC object the adapter
    // keeps alive in `dpcs` for its whole life.
    let obj = unsafe { &*(words[0] as *const DpcObject) };
    (obj.stor_dpc == stor_dpc as usize).then_some(obj)
}

/// StorPortIssueDpc: queues the DPC on this CPU; false when it is already queued.
pub(crate) fn issue(a: &AdapterInner, stor_dpc: *mut c_void, a1: usize, a2: usize) -> bool {
    if a.dump_mode() {
        a.report(
            Rule::DumpMode,
            [0; 3],
            "StorPortIssueDpc in dump mode".into(),
        );
        return false;
    }
    let Some(obj) = resolve(a, stor_dpc) else {
        a.report(
            Rule::InvalidParameter,
            [stor_dpc as u64, 0, 0],
            "StorPortIssueDpc on a STOR_DPC never initialised".into(),
        );
        return false;
    };
    if obj.queued.swap(true, Ordering::AcqRel) {
        return false;
    }
    *obj.args.lock().unwrap_or_else(|e| e.into_inner()) = (a1, a2);
    let arc = a
        .dpcs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|o| std::ptr::eq(Arc::as_ptr(o), obj))
        .cloned();
    let Some(arc) = arc else { return false };
    let cpu = cpu::current_cpu(a.cpus()) as usize % a.cpu_queues.len();
    let q = &a.cpu_queues[cpu];
    q.q.lock().unwrap_or_else(|e| e.into_inner()).push_back(arc);
    q.wake();
    true
}

pub(crate) fn run_cpu(a: Arc<AdapterInner>, c: u32) {
    cpu::set_cpu(c);
    let q = &a.cpu_queues[c as usize];
    let _ = q.thread.set(std::thread::current());
    loop {
        let next = q.q.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(obj) = next else {
            if a.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if crate::sched::active() {
                crate::sched::wait_on(q as *const CpuQueue as usize, None);
            } else {
                std::thread::park();
            }
            continue;
        };
        let (a1, a2) = {
            let g = obj.args.lock().unwrap_or_else(|e| e.into_inner());
            obj.queued.store(false, Ordering::Release);
            *g
        };
        let devext = a.devext_ptr();
        let routine = obj.routine;
        let dpc = obj.stor_dpc as *mut c_void;
        crate::request::begin_run();
        // SAFETY: `routine` is the miniport's DPC routine registered with this STOR_DPC.
        cpu::invoke(&a, Callback::Dpc, irql::DISPATCH, &[], || unsafe {
            routine(dpc, devext, a1 as *mut c_void, a2 as *mut c_void)
        });
        a.happened(&a.activity.dpcs);
        crate::request::end_run(&a);
    }
}
