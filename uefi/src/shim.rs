//! The `StorPort*` routines, defined for the driver on UEFI.
//!
//! `crates/storport/src/ffi.rs` declares storport.sys's exports in an `extern "C"` block with no
//! link attribute on UEFI; a UEFI image links statically, so these `#[unsafe(no_mangle)]`
//! definitions are what the driver's calls reach. They implement a polled, single-CPU Storport
//! in crash-dump mode (see `port`): locks are checked (order, pairing, who may take them) but
//! never spun on, DPCs, MSI and performance options are dump-mode errors, memory is identity
//! mapped.
//!
//! # Variadic routines
//!
//! `StorPortNotification`, `StorPortExtendedFunction` and `StorPortDebugPrint` are C variadics,
//! which stable Rust cannot define. On the Microsoft x64 ABI (what `extern "C"` means on
//! x86_64-unknown-uefi) a variadic call passes its arguments exactly as a non-variadic one: the
//! first four in RCX, RDX, R8, R9, the rest in 8-byte stack slots after the 32-byte shadow space.
//! So they are defined here as ordinary functions taking the largest number of pointer-sized
//! arguments any function code uses. Slots a call did not fill hold whatever the caller's frame
//! has there (readable stack memory); only the slots the function code defines are used, and
//! 32-bit arguments are truncated from their 64-bit slots (their upper halves are unspecified).
#![allow(non_snake_case, reason = "the routines keep Storport's exact C names")]

use storport::ffi::{self, BOOLEAN, PCCHAR, PVOID, ULONG};
use storport_rules::Callback;

use crate::pci::Location;
use crate::port::{self, RegionKind, UNCACHED_LIMIT, check, violation, with};
use crate::say;

/// Checks that a routine that names the adapter was given its device extension.
fn own_extension(routine: &str, extension: PVOID) {
    let ours = with(|s| s.extension);
    if ours != 0 && extension as usize != ours {
        violation(format_args!(
            "{routine}: HwDeviceExtension {extension:p} is not the adapter's ({ours:#x})"
        ));
    }
}

/// StorPortInitialize: records the miniport's HW_INITIALIZATION_DATA.
///
/// # Safety
///
/// `data` is NULL or a valid HW_INITIALIZATION_DATA of at least its stated size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortInitialize(
    argument1: PVOID,
    argument2: PVOID,
    data: *mut ffi::HW_INITIALIZATION_DATA,
    _context: PVOID,
) -> ULONG {
    if !argument1.is_null() || !argument2.is_null() {
        violation(format_args!(
            "StorPortInitialize: DriverEntry's arguments were changed"
        ));
    }
    if data.is_null() {
        violation(format_args!(
            "StorPortInitialize: NULL HW_INITIALIZATION_DATA"
        ));
        return 0xC000_000D; // STATUS_INVALID_PARAMETER
    }
    // SAFETY: by this function's `# Safety`; the size field is the first ULONG.
    let size = unsafe { (*data).HwInitializationDataSize };
    if (size as usize) < core::mem::size_of::<ffi::HW_INITIALIZATION_DATA>() {
        say!("StorPortInitialize: HwInitializationDataSize = {size} (older layout)");
        return 0xC000_0004; // STATUS_INFO_LENGTH_MISMATCH: this port only takes the Win8+ layout
    }
    // SAFETY: by this function's `# Safety`, with the full Win8+ size checked above.
    let copy = unsafe { data.read() };
    say!(
        "StorPortInitialize: size={} interface={} DeviceExtensionSize={} SrbExtensionSize={} AccessRanges={} MapBuffers={} SrbTypeFlags={:#x} AddressTypeFlags={:#x} FeatureSupport={:#x} BuildIo={}",
        copy.HwInitializationDataSize,
        copy.AdapterInterfaceType,
        copy.DeviceExtensionSize,
        copy.SrbExtensionSize,
        copy.NumberOfAccessRanges,
        copy.MapBuffers,
        copy.SrbTypeFlags,
        copy.AddressTypeFlags,
        copy.FeatureSupport,
        copy.HwBuildIo.is_some()
    );
    if copy.SrbTypeFlags & ffi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK == 0 {
        violation(format_args!(
            "StorPortInitialize: the miniport does not take SRB_EX"
        ));
    }
    with(|s| {
        s.hw = Some(copy);
        s.initialize_calls += 1;
    });
    0
}

/// StorPortNotification (variadic: see the module documentation).
///
/// # Safety
///
/// The arguments after `extension` are those `notification` defines (storport.md section 4,
/// layouts.md), passed by a variadic call on the Microsoft x64 ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortNotification(
    notification: ULONG,
    extension: PVOID,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
) {
    own_extension("StorPortNotification", extension);
    match notification {
        ffi::RequestComplete => request_complete(a1),
        ffi::AcquireSpinLock => {
            // SAFETY: AcquireSpinLock passes (STOR_SPINLOCK, context, STOR_LOCK_HANDLE*).
            unsafe {
                acquire(
                    a1 as u32,
                    a2,
                    a3 as *mut ffi::STOR_LOCK_HANDLE,
                    "StorPortAcquireSpinLock",
                )
            };
        }
        ffi::ReleaseSpinLock => {
            // SAFETY: ReleaseSpinLock passes (STOR_LOCK_HANDLE*).
            unsafe { release(a1 as *mut ffi::STOR_LOCK_HANDLE) };
        }
        ffi::ResetDetected => say!("  storport: ResetDetected"),
        ffi::BusChangeDetected => say!("  storport: BusChangeDetected (path {})", a1 as u8),
        ffi::EnablePassiveInitialization => {
            // A dump stack runs no PASSIVE_LEVEL work: the routine is refused (FALSE).
            say!("  storport: EnablePassiveInitialization refused in dump mode");
            if let Some(result) = core::ptr::NonNull::new(a2 as *mut i32) {
                // SAFETY: EnablePassiveInitialization passes (routine, LONG* result).
                unsafe { result.as_ptr().write(0) };
            }
        }
        ffi::InitializeDpc | ffi::IssueDpc => {
            violation(format_args!(
                "StorPortNotification({}) in dump mode: no DPCs in a crash dump (do the work inline)",
                if notification == ffi::InitializeDpc {
                    "InitializeDpc"
                } else {
                    "IssueDpc"
                }
            ));
            if notification == ffi::IssueDpc
                && let Some(result) = core::ptr::NonNull::new(a4 as *mut i32)
            {
                // SAFETY: IssueDpc passes (STOR_DPC*, arg1, arg2, LONG* result): nothing queued.
                unsafe { result.as_ptr().write(0) };
            }
        }
        ffi::NextRequest | ffi::NextLuRequest => {
            violation(format_args!(
                "StorPortNotification(NextRequest/NextLuRequest): Storport ignores them; do not send"
            ));
        }
        ffi::RequestTimerCall => {
            violation(format_args!(
                "StorPortNotification(RequestTimerCall) in dump mode: no timers in a crash dump"
            ));
        }
        other => violation(format_args!(
            "StorPortNotification({other:#x}) not supported in dump mode"
        )),
    }
}

fn request_complete(srb: usize) {
    let callback = with(|s| s.cpu.current());
    if callback.is_none() {
        violation(format_args!(
            "RequestComplete outside any miniport callback"
        ));
    }
    let outstanding = with(|s| s.outstanding);
    let Some(mut o) = outstanding.filter(|o| o.srb == srb) else {
        violation(format_args!(
            "RequestComplete for an SRB the miniport does not own ({srb:#x})"
        ));
        return;
    };
    // SAFETY: `srb` is the port's outstanding SRB (checked), a STORAGE_REQUEST_BLOCK it built.
    let status = unsafe { (*(srb as *const ffi::STORAGE_REQUEST_BLOCK)).SrbStatus };
    if o.completions > 0 {
        violation(format_args!(
            "request completed twice (bug check 0xF1/0x2004)"
        ));
    } else {
        o.status = status;
        o.completed_in = callback;
    }
    if status == ffi::SRB_STATUS_PENDING {
        violation(format_args!("request completed with SRB_STATUS_PENDING"));
    }
    o.completions += 1;
    with(|s| s.outstanding = Some(o));
}

/// Takes a lock for the miniport: checks the rules and fills the handle.
///
/// # Safety
///
/// `handle` is NULL or a writable STOR_LOCK_HANDLE.
unsafe fn acquire(
    kind: u32,
    context: usize,
    handle: *mut ffi::STOR_LOCK_HANDLE,
    routine: &str,
) -> ULONG {
    let Some(lock) = port::lock_of(kind, context) else {
        violation(format_args!("{routine}: lock kind {kind} not supported"));
        return ffi::STOR_STATUS_INVALID_PARAMETER;
    };
    if handle.is_null() {
        violation(format_args!("{routine}: NULL lock handle"));
        return ffi::STOR_STATUS_INVALID_PARAMETER;
    }
    check(with(|s| {
        s.lock_calls[0] += 1;
        s.cpu.acquire(lock)
    }));
    let mut filled = ffi::STOR_LOCK_HANDLE::zeroed();
    filled.Lock = kind;
    filled.Context.LockQueue.Lock = context as PVOID;
    // SAFETY: by this function's `# Safety`.
    unsafe { handle.write(filled) };
    ffi::STOR_STATUS_SUCCESS
}

/// Releases a lock the miniport took, named by its handle.
///
/// # Safety
///
/// `handle` is NULL or a readable STOR_LOCK_HANDLE.
unsafe fn release(handle: *mut ffi::STOR_LOCK_HANDLE) {
    if handle.is_null() {
        violation(format_args!("StorPortReleaseSpinLock: NULL lock handle"));
        return;
    }
    // SAFETY: by this function's `# Safety`.
    let filled = unsafe { handle.read() };
    let Some(lock) = port::lock_of(filled.Lock, filled.Context.LockQueue.Lock as usize) else {
        violation(format_args!(
            "StorPortReleaseSpinLock: handle names lock kind {}",
            filled.Lock
        ));
        return;
    };
    check(with(|s| {
        s.lock_calls[1] += 1;
        s.cpu.release(lock)
    }));
}

/// StorPortExtendedFunction (variadic: see the module documentation).
///
/// # Safety
///
/// The arguments after `extension` are those `function` defines (layouts.md), passed by a
/// variadic call on the Microsoft x64 ABI.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortExtendedFunction(
    function: ULONG,
    extension: PVOID,
    a1: usize,
    a2: usize,
    a3: usize,
    _a4: usize,
    _a5: usize,
) -> ULONG {
    own_extension("StorPortExtendedFunction", extension);
    match function {
        ffi::ExtFunctionAcquireSpinLock => {
            // SAFETY: AcquireSpinLockEx passes (STOR_SPINLOCK, context, STOR_LOCK_HANDLE*).
            unsafe {
                acquire(
                    a1 as u32,
                    a2,
                    a3 as *mut ffi::STOR_LOCK_HANDLE,
                    "StorPortAcquireSpinLockEx",
                )
            }
        }
        ffi::ExtFunctionAcquireMSISpinLock | ffi::ExtFunctionReleaseMSISpinLock => {
            violation(format_args!(
                "StorPortAcquire/ReleaseMSISpinLock in dump mode: no MSI in a crash dump"
            ));
            ffi::STOR_STATUS_NOT_IMPLEMENTED
        }
        ffi::ExtFunctionGetMessageInterruptInformation => {
            // Asking is harmless (the answer is "no such message", so the miniport polls); using
            // MSI (HwMSInterruptRoutine, MSI locks) is what a dump forbids, and is checked.
            say!(
                "  storport: note: StorPortGetMSIInfo({}) in dump mode answered: no message",
                a1 as u32
            );
            ffi::STOR_STATUS_INVALID_PARAMETER
        }
        ffi::ExtFunctionInitializePerformanceOptimizations
        | ffi::ExtFunctionGetStartIoPerformanceParameters => {
            violation(format_args!(
                "performance options (extended function {function}) in dump mode"
            ));
            ffi::STOR_STATUS_NOT_IMPLEMENTED
        }
        ffi::ExtFunctionAllocatePool => {
            violation(format_args!(
                "StorPortAllocatePool in dump mode: no pool in a crash dump"
            ));
            ffi::STOR_STATUS_INSUFFICIENT_RESOURCES
        }
        other => {
            say!("  storport: extended function {other} not implemented in dump mode");
            ffi::STOR_STATUS_NOT_IMPLEMENTED
        }
    }
}

/// StorPortSynchronizeAccess: runs the routine holding the interrupt lock.
///
/// # Safety
///
/// `routine` is NULL or a routine of the miniport that takes (HwDeviceExtension, Context).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortSynchronizeAccess(
    extension: PVOID,
    routine: ffi::PSTOR_SYNCHRONIZED_ACCESS,
    context: PVOID,
) -> BOOLEAN {
    own_extension("StorPortSynchronizeAccess", extension);
    let Some(routine) = routine else {
        violation(format_args!("StorPortSynchronizeAccess: NULL routine"));
        return 0;
    };
    // SAFETY: by this function's `# Safety`; the checker frame holds the interrupt lock.
    port::synchronized(|| unsafe { routine(extension, context) })
}

/// StorPortGetDeviceBase: identity mapping of an access range of the adapter.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortGetDeviceBase(
    extension: PVOID,
    bus_type: ffi::INTERFACE_TYPE,
    bus: ULONG,
    address: ffi::STOR_PHYSICAL_ADDRESS,
    bytes: ULONG,
    in_io_space: BOOLEAN,
) -> PVOID {
    own_extension("StorPortGetDeviceBase", extension);
    let (ranges, count, location) = with(|s| (s.ranges, s.range_count, s.location));
    let inside = ranges.iter().take(count).any(|r| {
        let start = r.RangeStart as u64;
        let end = start.saturating_add(u64::from(r.RangeLength));
        let want = address as u64;
        (r.RangeInMemory != 0) == (in_io_space == 0)
            && want >= start
            && want.saturating_add(u64::from(bytes)) <= end
    });
    let bus_ok = bus_type == ffi::PCIBus && location.is_some_and(|l| u32::from(l.bus) == bus);
    say!(
        "  storport: GetDeviceBase({:#x}, {bytes:#x}, {}) -> {}",
        address,
        if in_io_space != 0 { "I/O" } else { "memory" },
        if inside && bus_ok {
            "mapped"
        } else {
            "refused"
        }
    );
    if !inside || !bus_ok {
        violation(format_args!(
            "StorPortGetDeviceBase for an address outside the access ranges (0xF1/0x2003)"
        ));
        return core::ptr::null_mut();
    }
    address as usize as PVOID
}

/// StorPortFreeDeviceBase: nothing to unmap.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortFreeDeviceBase(extension: PVOID, _mapped: PVOID) {
    own_extension("StorPortFreeDeviceBase", extension);
}

/// StorPortGetUncachedExtension: pages below 4 GiB, deliberately not 1 KiB aligned.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortGetUncachedExtension(
    extension: PVOID,
    config: *mut ffi::PORT_CONFIGURATION_INFORMATION,
    bytes: ULONG,
) -> PVOID {
    own_extension("StorPortGetUncachedExtension", extension);
    let (callback, previous) = with(|s| (s.cpu.current(), s.uncached_bytes));
    if callback != Some(Callback::FindAdapter) {
        violation(format_args!(
            "StorPortGetUncachedExtension outside HwStorFindAdapter (0xF1/0x2002)"
        ));
        return core::ptr::null_mut();
    }
    if config.is_null() {
        violation(format_args!(
            "StorPortGetUncachedExtension: NULL ConfigInfo"
        ));
    }
    if let Some(previous) = previous {
        violation(format_args!(
            "StorPortGetUncachedExtension called again ({previous} then {bytes} bytes)"
        ));
        return core::ptr::null_mut();
    }
    with(|s| s.uncached_bytes = Some(bytes));
    if bytes > UNCACHED_LIMIT {
        say!(
            "  storport: uncached extension of {bytes} bytes refused (dump budget {UNCACHED_LIMIT})"
        );
        violation(format_args!(
            "uncached extension of {bytes} bytes in dump mode"
        ));
        return core::ptr::null_mut();
    }
    let Some(block) = crate::memory::allocate(bytes as usize, crate::memory::MISALIGN) else {
        say!("  storport: no memory for an uncached extension of {bytes} bytes");
        return core::ptr::null_mut();
    };
    say!(
        "  storport: uncached extension {bytes} bytes at {:#x} (page + {})",
        block.physical(),
        crate::memory::MISALIGN
    );
    with(|s| s.add_region(block, RegionKind::Uncached));
    block.start.as_ptr().cast()
}

/// StorPortGetPhysicalAddress: identity, for memory the port handed out.
///
/// # Safety
///
/// `length` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetPhysicalAddress(
    extension: PVOID,
    srb: ffi::PSCSI_REQUEST_BLOCK,
    address: PVOID,
    length: *mut ULONG,
) -> ffi::STOR_PHYSICAL_ADDRESS {
    own_extension("StorPortGetPhysicalAddress", extension);
    let region = with(|s| s.region_of(address as usize));
    let contiguous = match region {
        Some((RegionKind::Uncached, len)) => Some(len),
        Some((RegionKind::Request, len)) if !srb.is_null() => Some(len),
        _ => None,
    };
    let Some(contiguous) = contiguous else {
        violation(format_args!(
            "StorPortGetPhysicalAddress({address:p}, srb {srb:p}): not memory Storport gave the miniport"
        ));
        if !length.is_null() {
            // SAFETY: by this function's `# Safety`.
            unsafe { length.write(0) };
        }
        return 0;
    };
    if !length.is_null() {
        // SAFETY: by this function's `# Safety`.
        unsafe { length.write(u32::try_from(contiguous).unwrap_or(u32::MAX)) };
    }
    address as usize as i64
}

/// StorPortGetScatterGatherList: the outstanding request's pages.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortGetScatterGatherList(
    extension: PVOID,
    srb: ffi::PSCSI_REQUEST_BLOCK,
) -> *mut ffi::STOR_SCATTER_GATHER_LIST {
    own_extension("StorPortGetScatterGatherList", extension);
    port::scatter_gather(srb as usize)
}

/// StorPortGetBusData: PCI configuration space through ports 0xCF8/0xCFC.
///
/// # Safety
///
/// `buffer` is valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortGetBusData(
    extension: PVOID,
    bus_data_type: ULONG,
    bus: ULONG,
    slot: ULONG,
    buffer: PVOID,
    length: ULONG,
) -> ULONG {
    own_extension("StorPortGetBusData", extension);
    let ours = with(|s| s.location);
    let Some(at) = Location::from_slot(bus, slot).filter(|l| Some(*l) == ours) else {
        violation(format_args!(
            "StorPortGetBusData for bus {bus} slot {slot:#x}: not the adapter"
        ));
        return 0;
    };
    if bus_data_type != ffi::PCIConfiguration || buffer.is_null() {
        violation(format_args!(
            "StorPortGetBusData: type {bus_data_type}, buffer {buffer:p}"
        ));
        return 0;
    }
    let count = length.min(256);
    // SAFETY: by this function's `# Safety`, `buffer` is valid for `length >= count` bytes.
    let bytes = unsafe { core::slice::from_raw_parts_mut(buffer.cast::<u8>(), count as usize) };
    for (offset, byte) in bytes.iter_mut().enumerate() {
        *byte = at.read8(offset as u8);
    }
    count
}

/// StorPortSetBusDataByOffset: writes PCI configuration space.
///
/// # Safety
///
/// `buffer` is valid for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortSetBusDataByOffset(
    extension: PVOID,
    bus_data_type: ULONG,
    bus: ULONG,
    slot: ULONG,
    buffer: PVOID,
    offset: ULONG,
    length: ULONG,
) -> ULONG {
    own_extension("StorPortSetBusDataByOffset", extension);
    let ours = with(|s| s.location);
    let Some(at) = Location::from_slot(bus, slot).filter(|l| Some(*l) == ours) else {
        violation(format_args!(
            "StorPortSetBusDataByOffset for bus {bus} slot {slot:#x}: not the adapter"
        ));
        return 0;
    };
    if bus_data_type != ffi::PCIConfiguration
        || buffer.is_null()
        || offset.saturating_add(length) > 256
    {
        violation(format_args!(
            "StorPortSetBusDataByOffset: type {bus_data_type}, {length} bytes at {offset:#x}"
        ));
        return 0;
    }
    // SAFETY: by this function's `# Safety`, `buffer` is valid for `length` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) };
    for (i, &byte) in bytes.iter().enumerate() {
        at.write8((offset as usize + i) as u8, byte);
    }
    say!("  storport: SetBusDataByOffset({offset:#x}, {length} bytes)");
    length
}

/// StorPortStallExecution: the firmware's stall; over 100 ms is a verifier violation.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortStallExecution(delay: ULONG) {
    if delay > 100_000 {
        violation(format_args!(
            "StorPortStallExecution({delay} us) > 0.1 s (0xF1/0x2001)"
        ));
    }
    uefi::boot::stall(core::time::Duration::from_micros(u64::from(
        delay.min(100_000),
    )));
}

/// StorPortBusy.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortBusy(extension: PVOID, requests: ULONG) -> BOOLEAN {
    own_extension("StorPortBusy", extension);
    say!("  storport: Busy({requests})");
    with(|s| s.busy = true);
    1
}

/// StorPortReady.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortReady(extension: PVOID) -> BOOLEAN {
    own_extension("StorPortReady", extension);
    with(|s| s.busy = false);
    1
}

/// StorPortPause.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortPause(extension: PVOID, seconds: ULONG) -> BOOLEAN {
    own_extension("StorPortPause", extension);
    say!("  storport: Pause({seconds})");
    1
}

/// StorPortResume.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortResume(extension: PVOID) -> BOOLEAN {
    own_extension("StorPortResume", extension);
    1
}

/// StorPortDeviceBusy.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortDeviceBusy(
    extension: PVOID,
    path: u8,
    target: u8,
    lun: u8,
    requests: ULONG,
) -> BOOLEAN {
    own_extension("StorPortDeviceBusy", extension);
    say!("  storport: DeviceBusy({path}/{target}/{lun}, {requests})");
    1
}

/// StorPortDeviceReady.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortDeviceReady(
    extension: PVOID,
    _path: u8,
    _target: u8,
    _lun: u8,
) -> BOOLEAN {
    own_extension("StorPortDeviceReady", extension);
    1
}

/// StorPortDebugPrint (variadic: see the module documentation): a small printf.
///
/// # Safety
///
/// `format` is NULL or a NUL-terminated string whose conversions match the arguments passed by a
/// variadic call on the Microsoft x64 ABI (at most six are read).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn StorPortDebugPrint(
    level: ULONG,
    format: PCCHAR,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
) {
    if format.is_null() {
        return;
    }
    let args = [a1, a2, a3, a4, a5, a6];
    crate::serial::write_fmt(format_args!("  driver[{level}]: "));
    // SAFETY: by this function's `# Safety`.
    unsafe { printf(format.cast(), &args) };
    crate::serial::write_fmt(format_args!("\n"));
}

/// Reads a NUL-terminated string of at most `limit` bytes.
///
/// # Safety
///
/// `s` is NULL or NUL-terminated (or readable for `limit` bytes).
unsafe fn c_str<'a>(s: *const u8, limit: usize) -> &'a [u8] {
    if s.is_null() {
        return b"(null)";
    }
    let mut len = 0;
    // SAFETY: by this function's `# Safety`, bytes up to the NUL are readable.
    while len < limit && unsafe { s.wrapping_add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes were just read.
    unsafe { core::slice::from_raw_parts(s, len) }
}

/// The conversions of `printf` the miniport may use: `%s %d %i %u %x %X %p %c %%`, with `l`,
/// `ll`, `I64`, `z` length modifiers and a width (ignored).
///
/// # Safety
///
/// As for [`StorPortDebugPrint`].
unsafe fn printf(format: *const u8, args: &[usize]) {
    // SAFETY: by this function's `# Safety`.
    let format = unsafe { c_str(format, 512) };
    let mut next = args.iter().copied();
    let mut i = 0;
    let text = |bytes: &[u8]| {
        for &b in bytes {
            let c = if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            };
            crate::serial::write_fmt(format_args!("{c}"));
        }
    };
    while let Some(&b) = format.get(i) {
        i += 1;
        if b != b'%' {
            if b != b'\n' {
                text(&[b]);
            }
            continue;
        }
        let mut wide = false;
        while let Some(&m) = format.get(i) {
            match m {
                b'0'..=b'9' | b'-' | b'.' | b'h' => i += 1,
                b'l' | b'z' => {
                    wide |= m == b'z' || format.get(i + 1) == Some(&b'l');
                    i += 1;
                }
                b'I' if format.get(i + 1..i + 3) == Some(b"64") => {
                    wide = true;
                    i += 3;
                }
                _ => break,
            }
        }
        let Some(&conversion) = format.get(i) else {
            break;
        };
        i += 1;
        let value = match conversion {
            b'%' => {
                text(b"%");
                continue;
            }
            _ => next.next().unwrap_or(0),
        };
        let narrow = value as u32;
        match conversion {
            // SAFETY: a `%s` argument is a NUL-terminated string (this function's `# Safety`).
            b's' => text(unsafe { c_str(value as *const u8, 256) }),
            b'd' | b'i' if wide => crate::serial::write_fmt(format_args!("{}", value as i64)),
            b'd' | b'i' => crate::serial::write_fmt(format_args!("{}", narrow as i32)),
            b'u' if wide => crate::serial::write_fmt(format_args!("{value}")),
            b'u' => crate::serial::write_fmt(format_args!("{narrow}")),
            b'x' | b'X' if wide => crate::serial::write_fmt(format_args!("{value:x}")),
            b'x' | b'X' => crate::serial::write_fmt(format_args!("{narrow:x}")),
            b'p' => crate::serial::write_fmt(format_args!("{value:#x}")),
            b'c' => text(&[value as u8]),
            other => text(&[b'%', other]),
        }
    }
}

/// StorPortAllocateRegistryBuffer: PASSIVE_LEVEL only, never in a dump stack (whose
/// HwStorFindAdapter runs at HIGH_LEVEL): a violation, and NULL.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortAllocateRegistryBuffer(extension: PVOID, _length: *mut ULONG) -> *mut u8 {
    own_extension("StorPortAllocateRegistryBuffer", extension);
    violation(format_args!(
        "StorPortAllocateRegistryBuffer in dump mode: no registry at HIGH_LEVEL"
    ));
    core::ptr::null_mut()
}

/// StorPortFreeRegistryBuffer: as StorPortAllocateRegistryBuffer.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortFreeRegistryBuffer(extension: PVOID, _buffer: *mut u8) {
    own_extension("StorPortFreeRegistryBuffer", extension);
    violation(format_args!(
        "StorPortFreeRegistryBuffer in dump mode: no registry at HIGH_LEVEL"
    ));
}

/// StorPortRegistryRead: as StorPortAllocateRegistryBuffer; FALSE.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortRegistryRead(
    extension: PVOID,
    _name: *mut u8,
    _global: ULONG,
    _ty: ULONG,
    _buffer: *mut u8,
    _length: *mut ULONG,
) -> BOOLEAN {
    own_extension("StorPortRegistryRead", extension);
    violation(format_args!(
        "StorPortRegistryRead in dump mode: no registry at HIGH_LEVEL"
    ));
    0
}

/// StorPortLogError: a transcript line.
#[unsafe(no_mangle)]
pub extern "C" fn StorPortLogError(
    extension: PVOID,
    _srb: ffi::PSCSI_REQUEST_BLOCK,
    path: u8,
    target: u8,
    lun: u8,
    error_code: ULONG,
    unique_id: ULONG,
) {
    own_extension("StorPortLogError", extension);
    say!("  storport: LogError({path}/{target}/{lun}, code {error_code:#x}, id {unique_id:#x})");
}
