//! MMIO for a loaded image: register windows are inaccessible mappings, and the fault handler
//! performs each access on the device model.
//!
//! StorPortGetDeviceBase hands the image a fresh `PROT_NONE` mapping as large as the BAR range
//! (the user-mode Storport's own address for the range stays behind it). A register access
//! faults; the SIGSEGV handler (on the thread's alternate stack, see `kstack`) finds the window,
//! checks that the faulting instruction is a register access the way `crates/storport` compiles
//! it for Windows (the 7-byte marker NOP right before it) and one of the eight fixed forms
//! (decoded with iced-x86), performs the access through the user-mode Storport's register
//! routines (which check the address like the Storport verifier and forward to the device
//! model), writes the loaded value into the destination register of the interrupted context and
//! resumes after the instruction.
//!
//! Anything else is a loud failure, never a guess: a window touched by an instruction without
//! the marker, of another form, or from outside the image's code; a fault of image code at an
//! address that is no window (bug check 0x50); a fault in a kernel stack's guard page (bug check
//! 0x7F). Each prints the instruction, its address (absolute and image-relative), the faulting
//! address and the routine that was running, then ends the process.
//!
//! Running the user-mode Storport's code in the handler is sound here because the fault is
//! synchronous: the interrupted instruction is image code, which holds no lock of this process
//! (the image reaches host code only through the import gate), so the handler is in the same
//! position as the call the host build makes at that point (`StorPortReadRegister*`).

use std::ffi::c_void;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use iced_x86::{Code, Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Register};

use super::{gate, kstack};

/// The marker `crates/storport` puts before each register access (`nop dword ptr [rax +
/// 0x4F494D4D]`); held equal to `storport::register::REGISTER_ACCESS_MARKER` by the tests.
pub const MARKER: [u8; 7] = [0x0f, 0x1f, 0x80, 0x4d, 0x4d, 0x49, 0x4f];

/// Exit status after an image fault the emulation refuses (an unknown access form or address,
/// a page fault of image code): PAGE_FAULT_IN_NONPAGED_AREA's bug check code.
pub const IMAGE_FAULT_EXIT_CODE: i32 = 0x50;

const WINDOWS: usize = 256;
const CODE_RANGES: usize = 64;

/// Register windows: (start, len, device extension, the port's address of the range).
static WINDOW: [[AtomicUsize; 4]; WINDOWS] =
    [const { [const { AtomicUsize::new(0) }; 4] }; WINDOWS];
/// Executable ranges of loaded images: (start, end, image base).
static CODE: [[AtomicUsize; 3]; CODE_RANGES] =
    [const { [const { AtomicUsize::new(0) }; 3] }; CODE_RANGES];

/// Accesses emulated, by form (read 8/16/32/64, write 8/16/32/64).
pub static ACCESSES: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

/// Records an executable range `start..end` of the image at `base`.
pub(super) fn add_code(start: usize, end: usize, base: usize) -> Result<(), String> {
    for range in &CODE {
        if range[0]
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            range[2].store(base, Ordering::Release);
            range[1].store(end, Ordering::Release);
            return Ok(());
        }
    }
    Err(format!("more than {CODE_RANGES} executable image sections"))
}

/// The executable range holding `address`: (start, end, image base).
fn code_at(address: usize) -> Option<(usize, usize, usize)> {
    CODE.iter().find_map(|r| {
        let start = r[0].load(Ordering::Acquire);
        let end = r[1].load(Ordering::Acquire);
        (start != 0 && address >= start && address < end)
            .then(|| (start, end, r[2].load(Ordering::Acquire)))
    })
}

/// Makes an inaccessible window of `len` bytes for the port's range at `port_address`.
pub(super) fn add_window(devext: usize, port_address: usize, len: usize) -> Option<usize> {
    let size = len.max(1).next_multiple_of(4096);
    // SAFETY: a fresh anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let start = p as usize;
    for w in &WINDOW {
        if w[0]
            .compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            w[1].store(len, Ordering::Release);
            w[2].store(devext, Ordering::Release);
            w[3].store(port_address, Ordering::Release);
            w[0].store(start, Ordering::Release);
            return Some(start);
        }
    }
    eprintln!("storport-sim: more than {WINDOWS} register windows mapped");
    None
}

/// The window starting at `start`, removed: the port's address of its range. The mapping
/// stays reserved (and inaccessible), so a stale pointer still faults into a loud failure.
pub(super) fn remove_window(start: usize) -> Option<usize> {
    WINDOW.iter().find_map(|w| {
        (w[0].load(Ordering::Acquire) == start && start != 0).then(|| {
            let port = w[3].load(Ordering::Acquire);
            w[1].store(0, Ordering::Release);
            port
        })
    })
}

/// The window holding `address`: (device extension, the port's address of the byte).
fn window_at(address: usize) -> Option<(usize, usize)> {
    WINDOW.iter().find_map(|w| {
        let start = w[0].load(Ordering::Acquire);
        let len = w[1].load(Ordering::Acquire);
        (start != 0 && start != usize::MAX && address >= start && address - start < len).then(
            || {
                (
                    w[2].load(Ordering::Acquire),
                    w[3].load(Ordering::Acquire) + (address - start),
                )
            },
        )
    })
}

/// Installs the fault handler (once per process).
pub(super) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: an all-zero sigaction is a valid value to fill in.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `action.sa_mask` is a sigset_t owned here.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            let previous = &PREVIOUS[usize::from(signal == libc::SIGBUS)];
            let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: installs a handler with valid arguments; the old one is kept for chaining.
            let r = unsafe { libc::sigaction(signal, &action, old.as_mut_ptr()) };
            assert_eq!(r, 0, "sigaction");
            // SAFETY: `sigaction` succeeded, so it wrote the old action.
            let old = unsafe { old.assume_init() };
            previous[0].store(old.sa_sigaction, Ordering::Release);
            previous[1].store(old.sa_flags as usize, Ordering::Release);
        }
    });
}

/// The handlers that were installed before ours, for faults that are not the image's:
/// (sa_sigaction, sa_flags), SIGSEGV then SIGBUS.
static PREVIOUS: [[AtomicUsize; 2]; 2] = [const { [const { AtomicUsize::new(0) }; 2] }; 2];

/// x86 register number -> `gregs` index.
const GREG: [libc::c_int; 16] = [
    libc::REG_RAX,
    libc::REG_RCX,
    libc::REG_RDX,
    libc::REG_RBX,
    libc::REG_RSP,
    libc::REG_RBP,
    libc::REG_RSI,
    libc::REG_RDI,
    libc::REG_R8,
    libc::REG_R9,
    libc::REG_R10,
    libc::REG_R11,
    libc::REG_R12,
    libc::REG_R13,
    libc::REG_R14,
    libc::REG_R15,
];

/// A general register operand: (x86 number, is AH/CH/DH/BH).
fn gpr(register: Register) -> Option<(usize, bool)> {
    let r = register as usize;
    let (al, ax, eax, rax) = (
        Register::AL as usize,
        Register::AX as usize,
        Register::EAX as usize,
        Register::RAX as usize,
    );
    match r {
        _ if (al..al + 20).contains(&r) => match r - al {
            n @ 0..4 => Some((n, false)),
            n @ 4..8 => Some((n - 4, true)),
            n => Some((n - 4, false)),
        },
        _ if (ax..ax + 16).contains(&r) => Some((r - ax, false)),
        _ if (eax..eax + 16).contains(&r) => Some((r - eax, false)),
        _ if (rax..rax + 16).contains(&r) => Some((r - rax, false)),
        _ => None,
    }
}

/// The forms, in [`ACCESSES`] order: (code, width in bytes, is a write).
const FORMS: [(Code, usize, bool); 8] = [
    (Code::Movzx_r32_rm8, 1, false),
    (Code::Movzx_r32_rm16, 2, false),
    (Code::Mov_r32_rm32, 4, false),
    (Code::Mov_r64_rm64, 8, false),
    (Code::Mov_rm8_r8, 1, true),
    (Code::Mov_rm16_r16, 2, true),
    (Code::Mov_rm32_r32, 4, true),
    (Code::Mov_rm64_r64, 8, true),
];

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let siginfo = unsafe { &*info };
    // SAFETY: a SIGSEGV or SIGBUS siginfo_t carries si_addr.
    let address = unsafe { siginfo.si_addr() } as usize;
    let uc = context.cast::<libc::ucontext_t>();
    // SAFETY: the kernel passes the interrupted context; nothing else refers to it now.
    let gregs = unsafe { &mut (*uc).uc_mcontext.gregs };
    let rip = gregs[libc::REG_RIP as usize] as usize;

    if let Some(slot) = kstack::guard_hit(address) {
        let routine = slot.map_or_else(|| "no routine".to_owned(), gate::slot_name);
        eprintln!(
            "storport-sim: *** STOP 0x0000007F (0x8, 0, 0, 0) UNEXPECTED_KERNEL_MODE_TRAP: double \
             fault, kernel stack overflow in {routine}: {address:#x} is the guard page below its \
             {} KiB kernel stack (instruction at {})",
            kstack::KERNEL_STACK_SIZE >> 10,
            where_is(rip)
        );
        // SAFETY: ends the process without running anything else on this broken thread.
        unsafe { libc::_exit(kstack::STACK_OVERFLOW_EXIT_CODE) };
    }

    let code = code_at(rip);
    if let Some((devext, port_address)) = window_at(address) {
        match code {
            Some((start, end, _)) => {
                emulate(gregs, rip, start, end, address, devext, port_address);
                return;
            }
            None => fail(format!(
                "register window address {address:#x} touched by code outside the image at \
                 {rip:#x} (a register window may only be accessed by the image's register \
                 access instructions)"
            )),
        }
    }
    if code.is_some() {
        let routine = current_routine();
        fail(format!(
            "*** STOP 0x00000050 ({address:#x}, 0, {rip:#x}, 0) PAGE_FAULT_IN_NONPAGED_AREA: \
             `{}` at {} in {routine} touched {address:#x}, which is neither image memory it may \
             use nor a register window",
            disassemble(rip, code.map_or(rip, |c| c.1)),
            where_is(rip)
        ));
    }
    if rip == address
        && let Some(slot) = kstack::current()
    {
        // The fetch of the instruction itself faulted: execution went to an address that is no
        // code. When the return address on top of the image routine's stack is image code, the
        // image called through a bad function pointer (a null or stale callback); on Windows
        // that is a bug check too, so it is the image's fault, reported as one.
        let rsp = gregs[libc::REG_RSP as usize] as usize;
        let caller = kstack::holds(rsp, 8).then(|| {
            // SAFETY: `rsp..rsp + 8` lies in this thread's mapped kernel stack (`holds`).
            unsafe { std::ptr::read_unaligned(rsp as *const usize) }
        });
        if let Some(caller) = caller.filter(|&c| code_at(c).is_some()) {
            fail(format!(
                "*** STOP 0x00000050 ({address:#x}, 8, {address:#x}, 0) \
                 PAGE_FAULT_IN_NONPAGED_AREA: {} jumped to {address:#x}, which is no code: a \
                 call through a bad function pointer, returning to {}",
                gate::slot_name(slot),
                where_is(caller)
            ));
        }
    }
    chain(signal, info, context);
}

fn emulate(
    gregs: &mut [libc::greg_t; 23],
    rip: usize,
    code_start: usize,
    code_end: usize,
    address: usize,
    devext: usize,
    port_address: usize,
) {
    let marked = rip >= code_start + MARKER.len() && {
        // SAFETY: `rip - 7..rip` lies inside the image's mapped, readable code section.
        let before = unsafe { std::slice::from_raw_parts((rip - MARKER.len()) as *const u8, 7) };
        before == MARKER
    };
    let bytes = code_bytes(rip, code_end);
    let mut decoder = Decoder::with_ip(64, bytes, rip as u64, DecoderOptions::NONE);
    let instruction = decoder.decode();
    let form = FORMS.iter().position(|f| f.0 == instruction.code());
    let plain = instruction.memory_index() == Register::None
        && instruction.memory_displacement64() == 0
        && gpr(instruction.memory_base()).is_some();
    if !marked
        && super::peer::plain_enabled()
        && let Some(access) = super::peer::decode(&instruction)
    {
        emulate_plain(gregs, rip, &instruction, access, devext, port_address);
        return;
    }
    let (Some(form), true, true) = (form, plain, marked) else {
        fail(format!(
            "unknown register access: `{}` at {} in {} touched register window address \
             {address:#x}; {}",
            format_instruction(&instruction),
            where_is(rip),
            current_routine(),
            if marked {
                "not one of the fixed mov/movzx [reg] forms"
            } else {
                "the instruction is not a register access of crates/storport (no marker before it)"
            }
        ));
    };
    let (_, width, write) = FORMS[form];
    let other = if write {
        instruction.op1_register()
    } else {
        instruction.op0_register()
    };
    let Some((reg, high)) = gpr(other) else {
        fail(format!(
            "register access `{}` at {}: no general register operand",
            format_instruction(&instruction),
            where_is(rip)
        ));
    };
    let ext = devext as *mut c_void;
    let g = &mut gregs[GREG[reg] as usize];
    if write {
        let value = if high {
            (*g as u64 >> 8) & 0xFF
        } else {
            *g as u64
        };
        let at = port_address as *mut c_void;
        match width {
            1 => crate::exports::StorPortWriteRegisterUchar(ext, at.cast(), value as u8),
            2 => crate::exports::StorPortWriteRegisterUshort(ext, at.cast(), value as u16),
            4 => crate::exports::StorPortWriteRegisterUlong(ext, at.cast(), value as u32),
            _ => crate::exports::StorPortWriteRegisterUlong64(ext, at.cast(), value),
        }
    } else {
        let at = port_address as *mut c_void;
        // A 32-bit destination zero-extends into the full register, as the CPU does.
        let value = match width {
            1 => u64::from(crate::exports::StorPortReadRegisterUchar(ext, at.cast())),
            2 => u64::from(crate::exports::StorPortReadRegisterUshort(ext, at.cast())),
            4 => u64::from(crate::exports::StorPortReadRegisterUlong(ext, at.cast())),
            _ => crate::exports::StorPortReadRegisterUlong64(ext, at.cast()),
        };
        *g = value as i64;
    }
    ACCESSES[form].fetch_add(1, Ordering::Relaxed);
    gregs[libc::REG_RIP as usize] = (rip + instruction.len()) as i64;
}

/// An unmarked `mov`/`movzx` access of an image not built with `crates/storport` (see
/// `peer.rs`; only with `accept_plain_register_accesses`). The fault address is the access's
/// address whatever the addressing mode.
fn emulate_plain(
    gregs: &mut [libc::greg_t; 23],
    rip: usize,
    instruction: &Instruction,
    access: super::peer::Plain,
    devext: usize,
    port_address: usize,
) {
    use super::peer::Plain;
    let ext = devext as *mut c_void;
    let at = port_address as *mut c_void;
    let register = |operand: Register| match gpr(operand) {
        Some(r) => r,
        None => fail(format!(
            "register access `{}` at {}: no general register operand",
            format_instruction(instruction),
            where_is(rip)
        )),
    };
    match access {
        Plain::Load {
            width,
            dest_width,
            zero_upper,
        } => {
            let (reg, high) = register(instruction.op0_register());
            let value = super::peer::read(ext, at, width);
            let g = &mut gregs[GREG[reg] as usize];
            let old = *g as u64;
            *g = if zero_upper {
                value as i64
            } else if high {
                ((old & !0xFF00) | ((value & 0xFF) << 8)) as i64
            } else {
                let mask = (1u64 << (dest_width * 8)) - 1;
                ((old & !mask) | (value & mask)) as i64
            };
            super::peer::PLAIN_ACCESSES[0].fetch_add(1, Ordering::Relaxed);
        }
        Plain::StoreReg { width } => {
            let (reg, high) = register(instruction.op1_register());
            let g = gregs[GREG[reg] as usize] as u64;
            let value = if high { (g >> 8) & 0xFF } else { g };
            super::peer::write(ext, at, width, value);
            super::peer::PLAIN_ACCESSES[1].fetch_add(1, Ordering::Relaxed);
        }
        Plain::StoreImm { width, value } => {
            super::peer::write(ext, at, width, value);
            super::peer::PLAIN_ACCESSES[2].fetch_add(1, Ordering::Relaxed);
        }
    }
    gregs[libc::REG_RIP as usize] = (rip + instruction.len()) as i64;
}

fn code_bytes(rip: usize, code_end: usize) -> &'static [u8] {
    let len = (code_end - rip).min(15);
    // SAFETY: `rip..rip + len` lies inside a mapped, readable code section of a loaded image,
    // and images stay mapped for the life of the process.
    unsafe { std::slice::from_raw_parts(rip as *const u8, len) }
}

fn disassemble(rip: usize, code_end: usize) -> String {
    let mut decoder = Decoder::with_ip(
        64,
        code_bytes(rip, code_end),
        rip as u64,
        DecoderOptions::NONE,
    );
    format_instruction(&decoder.decode())
}

fn format_instruction(instruction: &Instruction) -> String {
    let mut text = String::new();
    IntelFormatter::new().format(instruction, &mut text);
    text
}

/// `0x7f12...(image+0x1a2b)`.
fn where_is(rip: usize) -> String {
    match code_at(rip) {
        Some((_, _, base)) => format!("{rip:#x} (image+{:#x})", rip - base),
        None => format!("{rip:#x}"),
    }
}

fn current_routine() -> String {
    kstack::current().map_or_else(|| "no image routine".to_owned(), gate::slot_name)
}

/// Prints the failure and ends the process.
fn fail(message: String) -> ! {
    eprintln!("storport-sim: image fault: {message}");
    // SAFETY: ends the process at once; the faulting thread cannot continue.
    unsafe { libc::_exit(IMAGE_FAULT_EXIT_CODE) }
}

/// Not the image's fault: hand it to the handler that was there before (Rust's stack-overflow
/// reporter, or the default action).
fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let previous = &PREVIOUS[usize::from(signal == libc::SIGBUS)];
    let handler = previous[0].load(Ordering::Acquire);
    let flags = previous[1].load(Ordering::Acquire) as libc::c_int;
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN && flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature.
        let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(handler) };
        previous(signal, info, context);
        return;
    }
    // SAFETY: restores the default action; returning re-runs the instruction, which faults again
    // and ends the process with the signal, as without this handler.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}
