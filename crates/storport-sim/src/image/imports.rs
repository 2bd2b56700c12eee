//! The imports a driver image may bind: storport.sys and the few ntoskrnl.exe routines of
//! `tools/pecheck/allowlist.txt`, each an `extern "win64"` function entered through the import
//! gate, which forwards to the user-mode Storport's export of the same name.
//!
//! Code addresses the image passes in (HW_INITIALIZATION_DATA routines, the MSI routine left in
//! PORT_CONFIGURATION_INFORMATION by HwStorFindAdapter, timer, passive-initialization, DPC and
//! synchronized-access routines) are replaced by callback-gate stubs on the way, so the
//! user-mode Storport only ever calls System V entry points. Register windows are handed out as
//! inaccessible mappings (`mmio`).
//!
//! The three variadic exports are received as fixed-argument Windows x64 functions: under that
//! convention integer and pointer varargs travel exactly like fixed arguments (the first four in
//! RCX, RDX, R8, R9, the rest on the stack after the home space), so `(type, extension, a0, a1,
//! a2, a3)` reads them all. They are then forwarded to the C shim's variadic exports, which
//! unpack them per notification type or function code as for the host build.

#![allow(non_snake_case, reason = "the imports keep Storport's C names")]

use std::ffi::{c_char, c_void};

use super::gate::{self, Kind, import_stub};
use super::mmio;
use crate::abi::{self, HwInitializationData, PortConfigurationInformation};
use crate::exports as sim;

unsafe extern "C" {
    // The C shim's variadic exports (shim.c).
    fn StorPortNotification(ty: u32, devext: *mut c_void, ...);
    fn StorPortExtendedFunction(code: u32, devext: *mut c_void, ...) -> u32;
    fn StorPortDebugPrint(level: u32, format: *const c_char, ...);
}

/// A callback-gate stub for `target`, or a loud end of the process (a driver registering more
/// than `gate::SLOTS` routines is not one this simulator can run).
fn wrap(target: usize, name: &str, kind: Kind) -> usize {
    match gate::callback(target, name, kind) {
        Ok(stub) => stub,
        Err(e) => {
            eprintln!("storport-sim: image: {e}");
            std::process::abort();
        }
    }
}

/// `name (image+0x...)` for a routine of the image.
fn named(name: &str, target: usize) -> String {
    match super::image_of(target) {
        Some(base) => format!("{name} (image+{:#x})", target - base),
        None => format!("{name} ({target:#x})"),
    }
}

fn wrap_named(target: usize, name: &str, kind: Kind) -> usize {
    if target == 0 {
        return 0;
    }
    wrap(target, &named(name, target), kind)
}

/// Turns the image's HwStorFindAdapter result's MSI routine into a callback-gate stub.
pub(super) fn after_find_adapter(config: usize, _result: usize) {
    if config == 0 {
        return;
    }
    let config = config as *mut PortConfigurationInformation;
    // SAFETY: the port passed this PORT_CONFIGURATION_INFORMATION to HwStorFindAdapter and
    // reads it only after the routine (and this) returned.
    let routine = unsafe { (*config).HwMSInterruptRoutine };
    let target = routine.map_or(0, |f| f as usize);
    if target != 0 && super::image_of(target).is_some() {
        let stub = wrap_named(target, "HwMSInterruptRoutine", Kind::Plain);
        // SAFETY: a callback-gate stub takes and returns what the routine does.
        let stub = unsafe { std::mem::transmute::<usize, Option<abi::MsiFn>>(stub) };
        // SAFETY: as above, the structure is the port's and nobody else uses it now.
        unsafe { (*config).HwMSInterruptRoutine = stub };
    }
}

extern "win64" fn t_StorPortInitialize(
    argument1: *mut c_void,
    argument2: *mut c_void,
    hw: *mut HwInitializationData,
    context: *mut c_void,
) -> u32 {
    if hw.is_null() {
        // SAFETY: forwards the NULL; the port reports it.
        return unsafe { sim::StorPortInitialize(argument1, argument2, hw.cast(), context) };
    }
    // SAFETY: the image passes its HW_INITIALIZATION_DATA (208 bytes, checked by the port).
    let mut copy = unsafe { hw.read_unaligned() };
    macro_rules! wrap_slots {
        ($($field:ident $name:literal $kind:expr, $ty:ty;)*) => {$(
            let target = copy.$field.map_or(0, |f| f as usize);
            let stub = wrap_named(target, $name, $kind);
            // SAFETY: a callback-gate stub takes and returns what the routine does.
            copy.$field = unsafe { std::mem::transmute::<usize, Option<$ty>>(stub) };
        )*};
    }
    wrap_slots! {
        HwInitialize "HwStorInitialize" Kind::Plain, abi::DevExtBoolFn;
        HwStartIo "HwStorStartIo" Kind::Plain, abi::SrbFn;
        HwInterrupt "HwStorInterrupt" Kind::Plain, abi::DevExtBoolFn;
        HwFindAdapter "HwStorFindAdapter" Kind::FindAdapter, abi::FindAdapterFn;
        HwResetBus "HwStorResetBus" Kind::Plain, abi::ResetBusFn;
        HwAdapterControl "HwStorAdapterControl" Kind::Plain, abi::AdapterControlFn;
        HwBuildIo "HwStorBuildIo" Kind::Plain, abi::SrbFn;
        HwUnitControl "HwStorUnitControl" Kind::Plain, abi::UnitControlFn;
        HwTracingEnabled "HwStorTracingEnabled" Kind::Plain, abi::TracingFn;
    }
    // SAFETY: the port reads the copy during the call only.
    unsafe { sim::StorPortInitialize(argument1, argument2, (&raw mut copy).cast(), context) }
}
import_stub!(storport_sim_imp_initialize, t_StorPortInitialize);

extern "win64" fn t_StorPortNotification(
    ty: u32,
    devext: *mut c_void,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
) {
    let (a0, a1) = match ty {
        abi::REQUEST_TIMER_CALL => (wrap_named(a0, "HwStorTimer", Kind::Plain), a1),
        abi::ENABLE_PASSIVE_INITIALIZATION => (
            wrap_named(a0, "HwStorPassiveInitializeRoutine", Kind::Plain),
            a1,
        ),
        abi::INITIALIZE_DPC => (a0, wrap_named(a1, "HwStorDpcRoutine", Kind::Plain)),
        _ => (a0, a1),
    };
    // SAFETY: forwards the image's arguments; the shim reads as many as `ty` has.
    unsafe { StorPortNotification(ty, devext, a0, a1, a2, a3) }
}
import_stub!(storport_sim_imp_notification, t_StorPortNotification);

extern "win64" fn t_StorPortExtendedFunction(
    code: u32,
    devext: *mut c_void,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
    a6: usize,
    a7: usize,
    a8: usize,
    a9: usize,
    a10: usize,
) -> u32 {
    // The import gate copies nine stack arguments (thirteen in all): enough for the longest
    // extended function the image calls, StorPortEtwEvent2 (eleven after the extension). The
    // shim reads as many as `code` has; the rest are whatever the image's frame holds there.
    // SAFETY: forwards the image's arguments; the shim reads as many as `code` has.
    unsafe { StorPortExtendedFunction(code, devext, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10) }
}
import_stub!(
    storport_sim_imp_extended_function,
    t_StorPortExtendedFunction
);

extern "win64" fn t_StorPortDebugPrint(
    level: u32,
    format: *const c_char,
    a0: usize,
    a1: usize,
    a2: usize,
    a3: usize,
    a4: usize,
    a5: usize,
) {
    // SAFETY: forwards the format and up to six integer or pointer arguments (the import gate
    // copies stack arguments 5 to 13); the shim formats what the format names.
    unsafe { StorPortDebugPrint(level, format, a0, a1, a2, a3, a4, a5) }
}
import_stub!(storport_sim_imp_debug_print, t_StorPortDebugPrint);

extern "win64" fn t_StorPortSynchronizeAccess(
    devext: *mut c_void,
    routine: usize,
    context: *mut c_void,
) -> u8 {
    let stub = wrap_named(routine, "SynchronizedAccessRoutine", Kind::Plain);
    // SAFETY: a callback-gate stub takes and returns what the routine does.
    let routine = unsafe { std::mem::transmute::<usize, Option<abi::SyncFn>>(stub) };
    // SAFETY: the image's arguments, with its routine behind the gate.
    unsafe { sim::StorPortSynchronizeAccess(devext, routine, context) }
}
import_stub!(
    storport_sim_imp_synchronize_access,
    t_StorPortSynchronizeAccess
);

extern "win64" fn t_StorPortGetDeviceBase(
    devext: *mut c_void,
    bus: u32,
    system_bus: u32,
    address: i64,
    bytes: u32,
    in_io_space: u8,
) -> *mut c_void {
    // SAFETY: the image's arguments.
    let port =
        unsafe { sim::StorPortGetDeviceBase(devext, bus, system_bus, address, bytes, in_io_space) };
    if port.is_null() {
        return port;
    }
    mmio::add_window(devext as usize, port as usize, bytes as usize)
        .map_or(std::ptr::null_mut(), |w| w as *mut c_void)
}
import_stub!(storport_sim_imp_get_device_base, t_StorPortGetDeviceBase);

extern "win64" fn t_StorPortFreeDeviceBase(devext: *mut c_void, mapped: *mut c_void) {
    // An address that is no window goes to the port as it is: it reports it.
    let port = mmio::remove_window(mapped as usize).map_or(mapped, |p| p as *mut c_void);
    // SAFETY: the image's arguments, the window translated to the port's address.
    unsafe { sim::StorPortFreeDeviceBase(devext, port) }
}
import_stub!(storport_sim_imp_free_device_base, t_StorPortFreeDeviceBase);

extern "win64" fn t_StorPortGetUncachedExtension(
    devext: *mut c_void,
    config: *mut c_void,
    bytes: u32,
) -> *mut c_void {
    // SAFETY: the image's arguments.
    unsafe { sim::StorPortGetUncachedExtension(devext, config, bytes) }
}
import_stub!(
    storport_sim_imp_get_uncached_extension,
    t_StorPortGetUncachedExtension
);

extern "win64" fn t_StorPortGetPhysicalAddress(
    devext: *mut c_void,
    srb: *mut c_void,
    address: *mut c_void,
    length: *mut u32,
) -> i64 {
    // SAFETY: the image's arguments.
    unsafe { sim::StorPortGetPhysicalAddress(devext, srb, address, length) }
}
import_stub!(
    storport_sim_imp_get_physical_address,
    t_StorPortGetPhysicalAddress
);

extern "win64" fn t_StorPortGetScatterGatherList(
    devext: *mut c_void,
    srb: *mut c_void,
) -> *mut c_void {
    // SAFETY: the image's arguments.
    unsafe { sim::StorPortGetScatterGatherList(devext, srb) }
}
import_stub!(
    storport_sim_imp_get_scatter_gather_list,
    t_StorPortGetScatterGatherList
);

extern "win64" fn t_StorPortGetBusData(
    devext: *mut c_void,
    ty: u32,
    bus: u32,
    slot: u32,
    buffer: *mut c_void,
    length: u32,
) -> u32 {
    // SAFETY: the image's arguments.
    unsafe { sim::StorPortGetBusData(devext, ty, bus, slot, buffer, length) }
}
import_stub!(storport_sim_imp_get_bus_data, t_StorPortGetBusData);

extern "win64" fn t_StorPortSetBusDataByOffset(
    devext: *mut c_void,
    ty: u32,
    bus: u32,
    slot: u32,
    buffer: *mut c_void,
    offset: u32,
    length: u32,
) -> u32 {
    // SAFETY: the image's arguments.
    unsafe { sim::StorPortSetBusDataByOffset(devext, ty, bus, slot, buffer, offset, length) }
}
import_stub!(
    storport_sim_imp_set_bus_data_by_offset,
    t_StorPortSetBusDataByOffset
);

extern "win64" fn t_StorPortStallExecution(delay: u32) {
    sim::StorPortStallExecution(delay)
}
import_stub!(storport_sim_imp_stall_execution, t_StorPortStallExecution);

extern "win64" fn t_StorPortBusy(devext: *mut c_void, requests: u32) -> u8 {
    sim::StorPortBusy(devext, requests)
}
import_stub!(storport_sim_imp_busy, t_StorPortBusy);

extern "win64" fn t_StorPortReady(devext: *mut c_void) -> u8 {
    sim::StorPortReady(devext)
}
import_stub!(storport_sim_imp_ready, t_StorPortReady);

extern "win64" fn t_StorPortPause(devext: *mut c_void, timeout: u32) -> u8 {
    sim::StorPortPause(devext, timeout)
}
import_stub!(storport_sim_imp_pause, t_StorPortPause);

extern "win64" fn t_StorPortResume(devext: *mut c_void) -> u8 {
    sim::StorPortResume(devext)
}
import_stub!(storport_sim_imp_resume, t_StorPortResume);

extern "win64" fn t_StorPortDeviceBusy(
    devext: *mut c_void,
    path: u8,
    target: u8,
    lun: u8,
    requests: u32,
) -> u8 {
    sim::StorPortDeviceBusy(devext, path, target, lun, requests)
}
import_stub!(storport_sim_imp_device_busy, t_StorPortDeviceBusy);

extern "win64" fn t_StorPortDeviceReady(devext: *mut c_void, path: u8, target: u8, lun: u8) -> u8 {
    sim::StorPortDeviceReady(devext, path, target, lun)
}
import_stub!(storport_sim_imp_device_ready, t_StorPortDeviceReady);

extern "win64" fn t_StorPortLogError(
    devext: *mut c_void,
    srb: *mut c_void,
    path: u8,
    target: u8,
    lun: u8,
    code: u32,
    id: u32,
) {
    sim::StorPortLogError(devext, srb, path, target, lun, code, id)
}
import_stub!(storport_sim_imp_log_error, t_StorPortLogError);

extern "win64" fn t_StorPortAllocateRegistryBuffer(
    devext: *mut c_void,
    length: *mut u32,
) -> *mut u8 {
    // SAFETY: the image's arguments (a ULONG pointer or NULL).
    unsafe { sim::StorPortAllocateRegistryBuffer(devext, length) }
}
import_stub!(
    storport_sim_imp_allocate_registry_buffer,
    t_StorPortAllocateRegistryBuffer
);

extern "win64" fn t_StorPortFreeRegistryBuffer(devext: *mut c_void, buffer: *mut u8) {
    sim::StorPortFreeRegistryBuffer(devext, buffer)
}
import_stub!(
    storport_sim_imp_free_registry_buffer,
    t_StorPortFreeRegistryBuffer
);

extern "win64" fn t_StorPortRegistryRead(
    devext: *mut c_void,
    name: *const u8,
    global: u32,
    ty: u32,
    buffer: *mut u8,
    length: *mut u32,
) -> u8 {
    // SAFETY: the image's arguments (a NUL-terminated name, a ULONG pointer).
    unsafe { sim::StorPortRegistryRead(devext, name, global, ty, buffer, length) }
}
import_stub!(storport_sim_imp_registry_read, t_StorPortRegistryRead);

extern "win64" fn t_memcpy(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    // SAFETY: the image's arguments, with memcpy's contract.
    unsafe { libc::memcpy(dst, src, n) }
}
import_stub!(storport_sim_imp_memcpy, t_memcpy);

extern "win64" fn t_memmove(dst: *mut c_void, src: *const c_void, n: usize) -> *mut c_void {
    // SAFETY: the image's arguments, with memmove's contract.
    unsafe { libc::memmove(dst, src, n) }
}
import_stub!(storport_sim_imp_memmove, t_memmove);

extern "win64" fn t_memset(dst: *mut c_void, c: i32, n: usize) -> *mut c_void {
    // SAFETY: the image's arguments, with memset's contract.
    unsafe { libc::memset(dst, c, n) }
}
import_stub!(storport_sim_imp_memset, t_memset);

extern "win64" fn t_memcmp(a: *const c_void, b: *const c_void, n: usize) -> i32 {
    // SAFETY: the image's arguments, with memcmp's contract.
    unsafe { libc::memcmp(a, b, n) }
}
import_stub!(storport_sim_imp_memcmp, t_memcmp);

/// Exit status after the image called KeBugCheckEx (the driver's panic handler).
pub const BUG_CHECK_EXIT_CODE: i32 = 0xE0;

extern "win64" fn t_KeBugCheckEx(code: u32, p1: usize, p2: usize, p3: usize, p4: usize) {
    eprintln!(
        "storport-sim: *** STOP {code:#010x} ({p1:#x}, {p2:#x}, {p3:#x}, {p4:#x}): the driver \
         image called KeBugCheckEx"
    );
    std::process::exit(BUG_CHECK_EXIT_CODE);
}
import_stub!(storport_sim_imp_ke_bug_check_ex, t_KeBugCheckEx);

unsafe extern "C" {
    static storport_sim_imp_initialize: u8;
    static storport_sim_imp_notification: u8;
    static storport_sim_imp_extended_function: u8;
    static storport_sim_imp_debug_print: u8;
    static storport_sim_imp_synchronize_access: u8;
    static storport_sim_imp_get_device_base: u8;
    static storport_sim_imp_free_device_base: u8;
    static storport_sim_imp_get_uncached_extension: u8;
    static storport_sim_imp_get_physical_address: u8;
    static storport_sim_imp_get_scatter_gather_list: u8;
    static storport_sim_imp_get_bus_data: u8;
    static storport_sim_imp_set_bus_data_by_offset: u8;
    static storport_sim_imp_stall_execution: u8;
    static storport_sim_imp_busy: u8;
    static storport_sim_imp_ready: u8;
    static storport_sim_imp_pause: u8;
    static storport_sim_imp_resume: u8;
    static storport_sim_imp_device_busy: u8;
    static storport_sim_imp_device_ready: u8;
    static storport_sim_imp_log_error: u8;
    static storport_sim_imp_allocate_registry_buffer: u8;
    static storport_sim_imp_free_registry_buffer: u8;
    static storport_sim_imp_registry_read: u8;
    static storport_sim_imp_memcpy: u8;
    static storport_sim_imp_memmove: u8;
    static storport_sim_imp_memset: u8;
    static storport_sim_imp_memcmp: u8;
    static storport_sim_imp_ke_bug_check_ex: u8;
}

/// The Windows x64 entry point for `dll!function`, or `None` for an import this port does not
/// provide (the load then fails naming it).
pub(super) fn bind(dll: &str, function: &str) -> Option<usize> {
    macro_rules! table {
        ($($dll:literal $name:literal => $stub:ident,)*) => {
            match (dll, function) {
                // Only the address of a static import stub is taken.
                $(($dll, $name) => Some(std::ptr::addr_of!($stub) as usize),)*
                // Imports of images built outside this project (viostor): `peer.rs`.
                _ => super::peer::bind(dll, function),
            }
        };
    }
    table! {
        "storport.sys" "StorPortInitialize" => storport_sim_imp_initialize,
        "storport.sys" "StorPortNotification" => storport_sim_imp_notification,
        "storport.sys" "StorPortExtendedFunction" => storport_sim_imp_extended_function,
        "storport.sys" "StorPortDebugPrint" => storport_sim_imp_debug_print,
        "storport.sys" "StorPortSynchronizeAccess" => storport_sim_imp_synchronize_access,
        "storport.sys" "StorPortGetDeviceBase" => storport_sim_imp_get_device_base,
        "storport.sys" "StorPortFreeDeviceBase" => storport_sim_imp_free_device_base,
        "storport.sys" "StorPortGetUncachedExtension" => storport_sim_imp_get_uncached_extension,
        "storport.sys" "StorPortGetPhysicalAddress" => storport_sim_imp_get_physical_address,
        "storport.sys" "StorPortGetScatterGatherList" => storport_sim_imp_get_scatter_gather_list,
        "storport.sys" "StorPortGetBusData" => storport_sim_imp_get_bus_data,
        "storport.sys" "StorPortSetBusDataByOffset" => storport_sim_imp_set_bus_data_by_offset,
        "storport.sys" "StorPortStallExecution" => storport_sim_imp_stall_execution,
        "storport.sys" "StorPortBusy" => storport_sim_imp_busy,
        "storport.sys" "StorPortReady" => storport_sim_imp_ready,
        "storport.sys" "StorPortPause" => storport_sim_imp_pause,
        "storport.sys" "StorPortResume" => storport_sim_imp_resume,
        "storport.sys" "StorPortDeviceBusy" => storport_sim_imp_device_busy,
        "storport.sys" "StorPortDeviceReady" => storport_sim_imp_device_ready,
        "storport.sys" "StorPortLogError" => storport_sim_imp_log_error,
        "storport.sys" "StorPortAllocateRegistryBuffer" => storport_sim_imp_allocate_registry_buffer,
        "storport.sys" "StorPortFreeRegistryBuffer" => storport_sim_imp_free_registry_buffer,
        "storport.sys" "StorPortRegistryRead" => storport_sim_imp_registry_read,
        "ntoskrnl.exe" "memcpy" => storport_sim_imp_memcpy,
        "ntoskrnl.exe" "memmove" => storport_sim_imp_memmove,
        "ntoskrnl.exe" "memset" => storport_sim_imp_memset,
        "ntoskrnl.exe" "memcmp" => storport_sim_imp_memcmp,
        "ntoskrnl.exe" "KeBugCheckEx" => storport_sim_imp_ke_bug_check_ex,
    }
}
