//! Interrupt delivery: one thread per line (MSI-X message, or the INTx line) that runs the
//! miniport's ISR at DIRQL holding that message's lock (PerMessage) or the interrupt lock (All,
//! INTx), as Storport does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::Thread;

use crate::abi::irql;
use crate::adapter::AdapterInner;
use crate::cpu::{self, Callback, LockRef};
use crate::device::InterruptSink;

struct Line {
    pending: AtomicBool,
    thread: OnceLock<Thread>,
}

/// The adapter's interrupt lines; the device's [`InterruptSink`].
pub(crate) struct IrqLines {
    lines: Box<[Line]>,
    adapter: Weak<AdapterInner>,
    /// Interrupts raised (all lines), for tests.
    pub raised: AtomicU64,
}

impl IrqLines {
    pub fn new(n: u32, adapter: Weak<AdapterInner>) -> Self {
        Self {
            lines: (0..n)
                .map(|_| Line {
                    pending: AtomicBool::new(false),
                    thread: OnceLock::new(),
                })
                .collect(),
            adapter,
            raised: AtomicU64::new(0),
        }
    }

    pub fn wake_all(&self) {
        for l in self.lines.iter() {
            crate::sched::notify(l as *const Line as usize);
            if let Some(t) = l.thread.get() {
                t.unpark();
            }
        }
    }
}

impl InterruptSink for IrqLines {
    fn raise(&self, message: u16) {
        self.raised.fetch_add(1, Ordering::Relaxed);
        let Some(a) = self.adapter.upgrade() else {
            return;
        };
        // Line-based interrupts (INTx, or no HwMSInterruptRoutine) all go to line 0.
        let idx = if a.msi_routine().is_some() {
            (message as usize).min(self.lines.len() - 1)
        } else {
            0
        };
        let line = &self.lines[idx];
        line.pending.store(true, Ordering::Release);
        crate::sched::note("interrupt", message.into());
        crate::sched::notify(line as *const Line as usize);
        if let Some(t) = line.thread.get() {
            t.unpark();
        }
    }
}

/// Runs the ISR for line `l` once, with Storport's locks.
pub(crate) fn service(a: &AdapterInner, l: u32) -> bool {
    crate::request::begin_run();
    let claimed = service_once(a, l);
    crate::request::end_run(a);
    a.happened(&a.activity.interrupts);
    claimed
}

fn service_once(a: &AdapterInner, l: u32) -> bool {
    let devext = a.devext_ptr();
    let lvl = if a.dump_mode() {
        irql::HIGH
    } else {
        irql::DIRQL
    };
    if let Some(msi) = a.msi_routine() {
        let lock = if a.per_message() {
            LockRef::Message(l)
        } else {
            LockRef::Interrupt
        };
        // SAFETY: `msi` is the miniport's HwMSInterruptRoutine, given its device extension and
        // a message id it was granted.
        cpu::invoke(a, Callback::MsiInterrupt, lvl, &[lock], || unsafe {
            msi(devext, l)
        }) != 0
    } else if let Some(isr) = a.hw.HwInterrupt {
        // SAFETY: `isr` is the miniport's HwInterrupt.
        cpu::invoke(
            a,
            Callback::Interrupt,
            lvl,
            &[LockRef::Interrupt],
            || unsafe { isr(devext) },
        ) != 0
    } else {
        false
    }
}

pub(crate) fn run_line(a: Arc<AdapterInner>, l: u32) {
    cpu::set_cpu(l % a.cpus());
    let line = &a.irq.lines[l as usize];
    let _ = line.thread.set(std::thread::current());
    loop {
        if a.shutdown.load(Ordering::SeqCst) {
            return;
        }
        if !line.pending.swap(false, Ordering::AcqRel) {
            if crate::sched::active() {
                crate::sched::wait_on(line as *const Line as usize, None);
            } else {
                std::thread::park();
            }
            continue;
        }
        if !a.interrupts_enabled.load(Ordering::SeqCst) {
            continue;
        }
        service(&a, l);
        if a.messages == 0 {
            // Level-triggered INTx: run again while the line stays asserted (bounded).
            let mut n = 0;
            while a.device.intx_asserted() && n < 64 && !a.shutdown.load(Ordering::SeqCst) {
                service(&a, l);
                n += 1;
            }
        }
    }
}
