//! The two gates between this process's code (System V ABI) and a loaded image (Windows x64 ABI).
//!
//! - **Into the image** ([`callback`]): every code address the image hands to Storport
//!   (DriverEntry, the HW_INITIALIZATION_DATA routines, the MSI routine, DPC, timer, passive-
//!   initialization and synchronized-access routines) is replaced by one of [`SLOTS`] static
//!   stubs before the user-mode Storport sees it. A stub loads its slot number and jumps to
//!   `callback_gate`, which saves the six System V argument registers, asks [`super::kstack`] for
//!   the thread's kernel stack, switches to it, calls the image routine with the Windows x64
//!   convention (RCX, RDX, R8, R9, then the stack after 32 bytes of home space) and switches back.
//! - **Out of the image** ([`import_stub`]): each import the loader binds is a static stub that
//!   loads the address of an `extern "win64"` Rust function and jumps to `import_gate`, which
//!   switches from the kernel stack back to the host stack the callback gate came from (so the
//!   user-mode Storport's own code never runs on the 24 KiB kernel stack), copies stack arguments
//!   5 to 13 (StorPortEtwEvent2 through StorPortExtendedFunction has thirteen), calls the function, and returns to the image on its own stack.
//!
//! The stubs are code in this binary (no memory is made writable and executable at run time).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::kstack;

/// How many distinct image routines can be handed to Storport (a driver registers about a dozen).
pub const SLOTS: usize = 256;

/// What a slot's routine is, for the post-call work some need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Nothing after the call.
    Plain = 0,
    /// HwStorFindAdapter: the MSI routine it left in PORT_CONFIGURATION_INFORMATION is wrapped.
    FindAdapter = 1,
}

/// The image routine of each slot (0 = free).
pub(super) static TARGETS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// The kind of each slot.
static KINDS: [AtomicU8; SLOTS] = [const { AtomicU8::new(0) }; SLOTS];
/// The deepest kernel-stack use seen for each slot (bytes, when it was the outermost routine).
pub(super) static DEEPEST: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// How many times each slot's routine returned.
pub(super) static CALLS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Slot names, and the map from image routine to slot.
static NAMES: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());

/// The slot's routine and kind.
pub(super) fn slot(index: usize) -> (usize, Kind) {
    let kind = match KINDS[index].load(Ordering::Acquire) {
        1 => Kind::FindAdapter,
        _ => Kind::Plain,
    };
    (TARGETS[index].load(Ordering::Acquire), kind)
}

/// The name a slot was registered with ("HwStorStartIo (image+0x1a30)").
pub fn slot_name(index: usize) -> String {
    NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(index)
        .map_or_else(|| format!("slot {index}"), |(_, n)| n.clone())
}

/// Every registered slot: (name, calls, deepest stack use in bytes).
pub fn slots() -> Vec<(String, usize, usize)> {
    NAMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .enumerate()
        .map(|(i, (_, name))| {
            (
                name.clone(),
                CALLS[i].load(Ordering::Relaxed),
                DEEPEST[i].load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// A System V entry point for the image routine at `target` (0 stays 0), named `name`.
///
/// The same routine always gets the same stub.
pub fn callback(target: usize, name: &str, kind: Kind) -> Result<usize, String> {
    if target == 0 {
        return Ok(0);
    }
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let index = match names.iter().position(|(t, _)| *t == target) {
        Some(index) => index,
        None => {
            let index = names.len();
            if index == SLOTS {
                return Err(format!(
                    "more than {SLOTS} distinct image routines handed to Storport"
                ));
            }
            names.push((target, name.to_owned()));
            KINDS[index].store(kind as u8, Ordering::Release);
            TARGETS[index].store(target, Ordering::Release);
            index
        }
    };
    Ok(stub_address(index))
}

/// The address of stub `index`.
fn stub_address(index: usize) -> usize {
    // Only the address of the stubs' symbol (code of the `global_asm!` below) is taken.
    let first = std::ptr::addr_of!(image_callback_stubs) as usize;
    first + index * STUB_BYTES
}

/// Each callback stub is `lea r11, [rip - 7]` (its own address, 7 bytes) and `jmp` (at most 5),
/// padded to 16; the gate turns the address into the slot number.
const STUB_BYTES: usize = 16;

unsafe extern "C" {
    /// The first of [`SLOTS`] callback stubs (code, not data).
    static image_callback_stubs: u8;
}

/// Called by `callback_gate` (System V): the kernel stack pointer to run on and the routine.
#[repr(C)]
struct Entry {
    kernel_rsp: usize,
    target: usize,
}

/// `callback_gate`'s first call: enter slot `index` with the host stack at `host_rsp`.
extern "sysv64" fn gate_enter(index: usize, host_rsp: usize) -> Entry {
    let (target, _) = slot(index);
    let kernel_rsp = kstack::enter(index, host_rsp);
    Entry { kernel_rsp, target }
}

/// `callback_gate`'s last call: the routine returned `result`; `args` are the six arguments.
extern "sysv64" fn gate_exit(args: *const [usize; 6], result: usize) {
    let index = kstack::exit();
    if slot(index).1 == Kind::FindAdapter {
        // SAFETY: the gate passes its save area of the six arguments, alive during this call.
        let args = unsafe { args.read() };
        super::imports::after_find_adapter(args[4], result);
    }
}

/// `import_gate`'s first call (Windows x64): the image is at `image_rsp`; the host stack to use.
extern "win64" fn gate_to_host(image_rsp: usize) -> usize {
    kstack::to_host(image_rsp)
}

std::arch::global_asm!(
    ".pushsection .text.storport_sim_image_gates,\"ax\",@progbits",
    ".p2align 4",
    ".globl image_callback_stubs",
    "image_callback_stubs:",
    ".rept {slots}",
    "    lea r11, [rip - 7]",
    "    jmp 2f",
    "    .p2align 4",
    ".endr",
    // callback_gate: System V arguments in RDI, RSI, RDX, RCX, R8, R9; the stub in R11.
    "2:",
    "    lea rax, [rip + image_callback_stubs]",
    "    sub r11, rax",
    "    shr r11, 4",
    "    push rbp",
    "    mov rbp, rsp",
    "    push rbx",
    "    push r12",
    "    push r13",
    "    push r14",
    "    sub rsp, 48",
    "    mov [rsp], rdi",
    "    mov [rsp + 8], rsi",
    "    mov [rsp + 16], rdx",
    "    mov [rsp + 24], rcx",
    "    mov [rsp + 32], r8",
    "    mov [rsp + 40], r9",
    "    mov r12, rsp",
    "    mov rdi, r11",
    "    mov rsi, rsp",
    "    call {enter}",
    "    mov r13, rdx",
    "    mov rsp, rax",
    "    sub rsp, 48",
    "    mov rax, [r12 + 32]",
    "    mov [rsp + 32], rax",
    "    mov rax, [r12 + 40]",
    "    mov [rsp + 40], rax",
    "    mov rcx, [r12]",
    "    mov rdx, [r12 + 8]",
    "    mov r8, [r12 + 16]",
    "    mov r9, [r12 + 24]",
    "    call r13",
    "    mov rsp, r12",
    "    mov rbx, rax",
    "    mov rdi, r12",
    "    mov rsi, rax",
    "    call {exit}",
    "    mov rax, rbx",
    "    add rsp, 48",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    // import_gate: Windows x64 arguments in RCX, RDX, R8, R9, [rsp + 40...]; the function in R11.
    ".p2align 4",
    ".globl storport_sim_import_gate",
    "storport_sim_import_gate:",
    "    push rbp",
    "    mov rbp, rsp",
    "    push rbx",
    "    push r12",
    "    mov [rbp + 16], rcx",
    "    mov [rbp + 24], rdx",
    "    mov [rbp + 32], r8",
    "    mov [rbp + 40], r9",
    "    mov rbx, r11",
    "    mov rcx, rsp",
    "    sub rsp, 32",
    "    call {to_host}",
    "    mov r12, rsp",
    "    mov rsp, rax",
    "    sub rsp, 112",
    "    mov rax, [rbp + 48]",
    "    mov [rsp + 32], rax",
    "    mov rax, [rbp + 56]",
    "    mov [rsp + 40], rax",
    "    mov rax, [rbp + 64]",
    "    mov [rsp + 48], rax",
    "    mov rax, [rbp + 72]",
    "    mov [rsp + 56], rax",
    "    mov rax, [rbp + 80]",
    "    mov [rsp + 64], rax",
    "    mov rax, [rbp + 88]",
    "    mov [rsp + 72], rax",
    "    mov rax, [rbp + 96]",
    "    mov [rsp + 80], rax",
    "    mov rax, [rbp + 104]",
    "    mov [rsp + 88], rax",
    "    mov rax, [rbp + 112]",
    "    mov [rsp + 96], rax",
    "    mov rcx, [rbp + 16]",
    "    mov rdx, [rbp + 24]",
    "    mov r8, [rbp + 32]",
    "    mov r9, [rbp + 40]",
    "    call rbx",
    "    mov rsp, r12",
    "    add rsp, 32",
    "    pop r12",
    "    pop rbx",
    "    pop rbp",
    "    ret",
    ".popsection",
    slots = const SLOTS,
    enter = sym gate_enter,
    exit = sym gate_exit,
    to_host = sym gate_to_host,
);

/// Defines a static import stub `$stub` that enters `$function` (an `extern "win64"` Rust
/// function) through the import gate.
macro_rules! import_stub {
    ($stub:ident, $function:path) => {
        std::arch::global_asm!(
            ".pushsection .text.storport_sim_image_gates,\"ax\",@progbits",
            ".p2align 4",
            concat!(".globl ", stringify!($stub)),
            concat!(stringify!($stub), ":"),
            "    lea r11, [rip + {function}]",
            "    jmp storport_sim_import_gate",
            ".popsection",
            function = sym $function,
        );
    };
}
pub(super) use import_stub;
