//! The `Miniport` trait and the `extern "C"` trampolines Storport calls.
//!
//! A driver implements [`Miniport`] for its adapter type; [`driver_entry`] builds a complete
//! `HW_INITIALIZATION_DATA` from the trait (as the kernel's `OperationsVTable<T>` builds blk-mq's
//! vtable) and registers it with `StorPortInitialize`. Storport then calls the trampolines here,
//! which find the adapter in the device extension, make the context token of the callback kind and
//! call the trait method. Storport values (BOOLEAN, SP_RETURN_*, SCSI_ADAPTER_CONTROL_STATUS) appear
//! only here.
//!
//! # The device extension
//!
//! Storport allocates `DeviceExtensionSize` zeroed bytes per adapter. This crate lays it out as
//! [`Extension<M>`]: a small header the layer itself uses (the SRB extension size, whether
//! Storport granted concurrent channels, dump mode), then the miniport's `M`. HwStorFindAdapter's
//! trampoline writes `M::INITIAL` in place (no large value on the kernel stack) and then calls
//! [`Miniport::find_adapter`] with `&mut M`; every later callback gets `&M`.

use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::config::PortConfiguration;
use crate::context;
use crate::ffi;
use crate::port::Port;
use crate::srb::{Address, Completed, Srb};

/// What HwStorFindAdapter reports (SP_RETURN_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FindAdapterStatus {
    /// SP_RETURN_FOUND: the adapter is ours and configured.
    Found,
    /// SP_RETURN_NOT_FOUND: no adapter of ours here.
    NotFound,
    /// SP_RETURN_ERROR: the adapter is ours but failed to start.
    Error,
    /// SP_RETURN_BAD_CONFIG: the resources Storport gave are unusable.
    BadConfig,
}

impl FindAdapterStatus {
    fn to_sp_return(self) -> ffi::ULONG {
        match self {
            Self::Found => ffi::SP_RETURN_FOUND,
            Self::NotFound => ffi::SP_RETURN_NOT_FOUND,
            Self::Error => ffi::SP_RETURN_ERROR,
            Self::BadConfig => ffi::SP_RETURN_BAD_CONFIG,
        }
    }
}

/// What HwStorBuildIo decided for a request.
#[must_use]
pub enum BuildIoOutcome {
    /// Pass the request on to HwStorStartIo (BuildIo returns TRUE): the handle goes back to
    /// Storport, which hands it to StartIo.
    StartIo(Srb),
    /// The request was completed in BuildIo (BuildIo returns FALSE).
    Completed(Completed),
}

/// An adapter-control request (HwStorAdapterControl).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterControl {
    /// ScsiStopAdapter: stop the adapter (power down, PnP stop); DIRQL.
    Stop,
    /// ScsiRestartAdapter: re-initialise the adapter after a stop; DIRQL.
    Restart,
    /// Any other type the miniport listed in [`Miniport::ADAPTER_CONTROL_TYPES`].
    Other(AdapterControlType),
}

/// Which data buffers Storport maps to system virtual addresses (`MapBuffers`, STOR_MAP_*), for
/// [`crate::Srb::data_buffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapBuffers {
    /// STOR_MAP_NO_BUFFERS.
    None,
    /// STOR_MAP_NON_READ_WRITE_BUFFERS: every buffer but those of READ and WRITE.
    NonReadWrite,
    /// STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE: every buffer (a miniport that copies data itself).
    AllIncludingReadWrite,
}

impl MapBuffers {
    const fn to_raw(self) -> u8 {
        match self {
            Self::None => ffi::STOR_MAP_NO_BUFFERS,
            Self::NonReadWrite => ffi::STOR_MAP_NON_READ_WRITE_BUFFERS,
            Self::AllIncludingReadWrite => ffi::STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE,
        }
    }
}

/// An adapter-control type a miniport may support besides stop and restart
/// (SCSI_ADAPTER_CONTROL_TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterControlType(u32);

impl AdapterControlType {
    /// ScsiSetBootConfig.
    pub const SET_BOOT_CONFIG: Self = Self(ffi::ScsiSetBootConfig);
    /// ScsiSetRunningConfig.
    pub const SET_RUNNING_CONFIG: Self = Self(ffi::ScsiSetRunningConfig);
    /// ScsiPowerSettingNotification.
    pub const POWER_SETTING_NOTIFICATION: Self = Self(ffi::ScsiPowerSettingNotification);
    /// ScsiAdapterPower.
    pub const ADAPTER_POWER: Self = Self(ffi::ScsiAdapterPower);
    /// ScsiAdapterPrepareForBusReScan.
    pub const PREPARE_FOR_BUS_RESCAN: Self = Self(ffi::ScsiAdapterPrepareForBusReScan);
    /// ScsiAdapterSurpriseRemoval: the adapter is gone.
    pub const SURPRISE_REMOVAL: Self = Self(ffi::ScsiAdapterSurpriseRemoval);
}

/// A unit-control type a miniport may support (SCSI_UNIT_CONTROL_TYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnitControlType(u32);

impl UnitControlType {
    /// ScsiUnitUsage.
    pub const USAGE: Self = Self(ffi::ScsiUnitUsage);
    /// ScsiUnitStart.
    pub const START: Self = Self(ffi::ScsiUnitStart);
    /// ScsiUnitPower.
    pub const POWER: Self = Self(ffi::ScsiUnitPower);
    /// ScsiUnitRemove: delivered as [`UnitControl::Remove`].
    pub const REMOVE: Self = Self(ffi::ScsiUnitRemove);
    /// ScsiUnitSurpriseRemoval: delivered as [`UnitControl::SurpriseRemoval`].
    pub const SURPRISE_REMOVAL: Self = Self(ffi::ScsiUnitSurpriseRemoval);
}

/// The token of HwMSInterruptRoutine, by the interrupt synchronization mode the miniport chose.
pub enum MessageContext<'a> {
    /// InterruptSynchronizeAll: Storport holds the one interrupt lock.
    All(&'a mut context::MessageInterrupt),
    /// InterruptSynchronizePerMessage: Storport holds only this message's lock.
    PerMessage(&'a mut context::MessageInterruptPerMessage),
}

/// A unit's device power state (STOR_DEVICE_POWER_STATE) in ScsiUnitPower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitPowerState {
    /// StorPowerDeviceD0: working.
    D0,
    /// StorPowerDeviceD1.
    D1,
    /// StorPowerDeviceD2.
    D2,
    /// StorPowerDeviceD3: off (system sleep, hibernation, shutdown, or idle power-down).
    D3,
    /// StorPowerDeviceUnspecified or a value outside the enumeration.
    Unspecified(u32),
}

impl UnitPowerState {
    fn from_raw(value: ffi::ULONG) -> Self {
        match value {
            ffi::StorPowerDeviceD0 => Self::D0,
            ffi::StorPowerDeviceD1 => Self::D1,
            ffi::StorPowerDeviceD2 => Self::D2,
            ffi::StorPowerDeviceD3 => Self::D3,
            other => Self::Unspecified(other),
        }
    }
}

/// A unit-control request (HwStorUnitControl) for one logical unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitControl {
    /// ScsiUnitStart: the unit is starting (PnP start of the disk).
    Start(Option<Address>),
    /// ScsiUnitPower: the unit moves to a device power state.
    Power {
        /// The unit.
        address: Option<Address>,
        /// STOR_POWER_ACTION (the system action behind it: none, sleep, hibernate, shutdown...).
        action: u32,
        /// The device power state.
        state: UnitPowerState,
    },
    /// ScsiUnitRemove: the unit is being removed in an orderly way.
    Remove(Option<Address>),
    /// ScsiUnitSurpriseRemoval: the unit is gone (the device vanished).
    SurpriseRemoval(Option<Address>),
    /// Any other type the miniport listed in [`Miniport::UNIT_CONTROL_TYPES`].
    Other(UnitControlType),
}

/// Whether a unit-control request succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitControlStatus {
    /// ScsiUnitControlSuccess.
    Success,
    /// ScsiUnitControlUnsuccessful.
    Unsuccessful,
}

/// Whether an adapter-control request succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterControlStatus {
    /// ScsiAdapterControlSuccess.
    Success,
    /// ScsiAdapterControlUnsuccessful.
    Unsuccessful,
}

/// A Storport miniport: the callbacks of one adapter type.
///
/// The implementing type lives in the device extension (see the module documentation); it
/// must be `Sync` because Storport runs callbacks on several CPUs at once. Shared mutable state
/// goes in the lock cells of [`crate::sync`].
pub trait Miniport: Sized + Sync + 'static {
    /// The synchronization model: [`context::FullDuplex`] (what SDV's SpDuplex rule asks for) or
    /// [`context::HalfDuplex`].
    ///
    /// The HwStorFindAdapter trampoline declares it to Storport (`SynchronizationModel`), and the
    /// StartIo, Timer and ResetBus trampolines hand out the tokens of this model, so the locks a
    /// token claims are the ones Storport holds under the model it was told.
    type Duplex: context::Duplex;
    /// The adapter's state before HwStorFindAdapter, written in place into the zeroed device
    /// extension.
    const INITIAL: Self;
    /// Bytes of per-request DMA-able memory (`SrbExtensionSize`).
    const SRB_EXTENSION_SIZE: u32;
    /// Number of access ranges the adapter uses (`NumberOfAccessRanges`).
    const ACCESS_RANGES: u32 = 6;
    /// `HW_INITIALIZATION_DATA.FeatureSupport` (STOR_FEATURE_*).
    const FEATURE_SUPPORT: u32 = 0;
    /// `MapBuffers`: by default, system addresses for non-read/write buffers.
    const MAP_BUFFERS: MapBuffers = MapBuffers::NonReadWrite;
    /// The adapter-control types the miniport supports besides stop and restart (which are
    /// mandatory and always reported).
    const ADAPTER_CONTROL_TYPES: &'static [AdapterControlType] = &[];
    /// The unit-control types the miniport supports (ScsiQuerySupportedUnitControlTypes).
    const UNIT_CONTROL_TYPES: &'static [UnitControlType] = &[];

    /// HwStorFindAdapter: claim and configure the adapter described by `config`.
    fn find_adapter(
        &mut self,
        ctx: &mut context::FindAdapter,
        port: Port,
        config: &mut PortConfiguration<'_>,
    ) -> FindAdapterStatus;

    /// HwStorInitialize: bring the hardware to a state ready for requests.
    fn initialize(&self, ctx: &mut context::Initialize) -> bool;

    /// HwStorPassiveInitializeRoutine, when enabled with
    /// [`enable_passive_initialization`] from [`Miniport::initialize`].
    ///
    /// `'a` is the device extension's lifetime: objects Storport keeps the address of (a
    /// [`crate::dpc::StorDpc`]) are registered here.
    fn passive_initialize<'a>(&'a self, ctx: &mut context::PassiveInitialize<'a>) -> bool {
        let _ = ctx;
        true
    }

    /// HwStorBuildIo: per-request work that needs no shared state.
    fn build_io(&self, ctx: &mut context::BuildIo, srb: Srb) -> BuildIoOutcome;

    /// HwStorStartIo: start (or complete) the request.
    fn start_io(&self, ctx: context::StartIo<'_, Self::Duplex>, srb: Srb);

    /// HwStorInterrupt (line-based or single-message interrupts). Returns whether the
    /// adapter interrupted.
    fn interrupt(&self, ctx: &mut context::Interrupt) -> bool;

    /// HwMSInterruptRoutine, registered by [`PortConfiguration::use_message_interrupts`].
    fn message_interrupt(&self, ctx: MessageContext<'_>, message_id: u32) -> bool {
        let _ = (ctx, message_id);
        false
    }

    /// HwStorResetBus: reset the bus; every outstanding request must be completed.
    fn reset_bus(&self, ctx: &mut context::ResetBus<Self::Duplex>, path_id: u32) -> bool;

    /// HwStorAdapterControl for stop, restart and the types in `ADAPTER_CONTROL_TYPES`.
    fn adapter_control(
        &self,
        ctx: &mut context::AdapterControl,
        control: AdapterControl,
    ) -> AdapterControlStatus;

    /// HwStorUnitControl for the types in `UNIT_CONTROL_TYPES`.
    fn unit_control(
        &self,
        ctx: &mut context::UnitControl,
        control: UnitControl,
    ) -> UnitControlStatus {
        let _ = (ctx, control);
        UnitControlStatus::Unsuccessful
    }

    /// HwStorTracingEnabled: an ETW session enabled (`true`) or disabled the miniport's
    /// tracing; per-I/O events are worth publishing only while it is on.
    fn tracing_enabled(&self, ctx: &mut context::TracingEnabled, enabled: bool) {
        let _ = (ctx, enabled);
    }

    /// HwStorTimer, after [`request_timer`] asked for it.
    fn timer(&self, ctx: &mut context::Timer<Self::Duplex>) {
        let _ = ctx;
    }
}

/// The header the layer keeps at the start of every device extension.
#[repr(C)]
pub(crate) struct ExtensionHeader {
    /// `M::SRB_EXTENSION_SIZE`, for SRB extension views.
    pub(crate) srb_extension_size: AtomicU32,
    /// Whether Storport may have more than one concurrent channel in force (StartIo runs
    /// unserialised). Set before asking Storport for channels, cleared only after Storport
    /// confirmed one channel (see `perf::initialize`), so it is never false while StartIo runs
    /// in parallel.
    pub(crate) concurrent_channels: AtomicBool,
    /// Whether the miniport declared half duplex (`M::Duplex`): no concurrent channels then.
    pub(crate) half_duplex: AtomicBool,
    /// Whether the adapter runs in a crash-dump or hibernation stack.
    pub(crate) dump_mode: AtomicBool,
    /// Whether message interrupts use InterruptSynchronizePerMessage (one lock per message).
    pub(crate) per_message: AtomicBool,
    /// The adapter's system I/O bus number and slot (PCI configuration access).
    pub(crate) pci_bus: AtomicU32,
    pub(crate) pci_slot: AtomicU32,
    /// What the running instance hands its dump instance (SRB_FUNCTION_DUMP_POINTERS).
    pub(crate) dump_data: crate::dump::DumpDataCell,
}

/// The device extension: the layer's header, then the miniport.
#[repr(C)]
pub struct Extension<M> {
    pub(crate) header: ExtensionHeader,
    miniport: M,
}

impl<M: Miniport> Extension<M> {
    const SIZE: u32 = {
        assert!(core::mem::size_of::<Self>() <= u32::MAX as usize);
        // Storport's device extension comes from nonpaged pool: 16-byte aligned on x64.
        assert!(core::mem::align_of::<Self>() <= 16);
        core::mem::size_of::<Self>() as u32
    };
}

/// Reads the layer's header of the adapter `port` names.
pub(crate) fn header(port: &Port) -> &ExtensionHeader {
    // SAFETY: every device extension of a miniport registered through `driver_entry` starts with
    // an `ExtensionHeader` (repr(C), first field), written by the FindAdapter trampoline before
    // any `Port` for it exists; it lives as long as the adapter.
    unsafe { &*port.extension().cast::<ExtensionHeader>() }
}

/// The miniport in the device extension.
///
/// # Safety
///
/// `extension` is the HwDeviceExtension of an adapter of `M` whose FindAdapter trampoline has run.
unsafe fn miniport<'a, M: Miniport>(extension: *mut c_void) -> &'a M {
    // SAFETY: by this function's `# Safety`, `extension` points at an initialised `Extension<M>`.
    unsafe { &(*extension.cast::<Extension<M>>()).miniport }
}

/// The `HW_INITIALIZATION_DATA` that registers `M`: every callback, SRB_EX only, BTL8 addresses.
pub const fn hw_initialization_data<M: Miniport>() -> ffi::HW_INITIALIZATION_DATA {
    let mut data = ffi::HW_INITIALIZATION_DATA::zeroed();
    data.HwInitializationDataSize = core::mem::size_of::<ffi::HW_INITIALIZATION_DATA>() as u32;
    data.AdapterInterfaceType = ffi::PCIBus;
    data.HwInitialize = Some(initialize_trampoline::<M>);
    data.HwStartIo = Some(start_io_trampoline::<M>);
    data.HwInterrupt = Some(interrupt_trampoline::<M>);
    data.HwFindAdapter = Some(find_adapter_trampoline::<M>);
    data.HwResetBus = Some(reset_bus_trampoline::<M>);
    data.HwAdapterControl = Some(adapter_control_trampoline::<M>);
    data.HwBuildIo = Some(build_io_trampoline::<M>);
    data.HwUnitControl = Some(unit_control_trampoline::<M>);
    data.HwTracingEnabled = Some(tracing_enabled_trampoline::<M>);
    data.DeviceExtensionSize = Extension::<M>::SIZE;
    data.SpecificLuExtensionSize = 0;
    data.SrbExtensionSize = M::SRB_EXTENSION_SIZE;
    data.NumberOfAccessRanges = M::ACCESS_RANGES;
    data.MapBuffers = M::MAP_BUFFERS.to_raw();
    data.NeedPhysicalAddresses = 1;
    data.TaggedQueuing = 1;
    data.AutoRequestSense = 1;
    data.MultipleRequestPerLu = 1;
    data.FeatureSupport = M::FEATURE_SUPPORT;
    data.SrbTypeFlags = ffi::SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK;
    data.AddressTypeFlags = ffi::ADDRESS_TYPE_FLAG_BTL8;
    data
}

/// DriverEntry's work: registers `M` with Storport through `StorPortInitialize`.
///
/// `driver_object` and `registry_path` are DriverEntry's arguments, passed through untouched
/// (both NULL when a crash-dump or hibernation stack loads the driver). Returns Storport's
/// NTSTATUS.
#[expect(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the pointers are passed through untouched to StorPortInitialize, which expects DriverEntry's own arguments"
)]
pub fn driver_entry<M: Miniport>(driver_object: *mut c_void, registry_path: *mut c_void) -> u32 {
    let mut data = hw_initialization_data::<M>();
    // SAFETY: `data` is a complete HW_INITIALIZATION_DATA whose callbacks are this module's
    // trampolines for `M`; Storport copies it before returning. The two arguments are DriverEntry's
    // own, which StorPortInitialize expects unchanged.
    unsafe {
        ffi::StorPortInitialize(
            driver_object,
            registry_path,
            &mut data,
            core::ptr::null_mut(),
        )
    }
}

/// Asks Storport to call [`Miniport::passive_initialize`] at PASSIVE_LEVEL after
/// HwStorInitialize returns. Only valid from HwStorInitialize, which the token proves.
pub fn enable_passive_initialization<M: Miniport>(_ctx: &context::Initialize, port: Port) -> bool {
    let mut result: ffi::LONG = 0;
    let routine: ffi::PHW_PASSIVE_INITIALIZE_ROUTINE = Some(passive_initialize_trampoline::<M>);
    // SAFETY: EnablePassiveInitialization takes (routine, LONG* result) after the extension
    // (layouts.md); `port` is this adapter and `result` outlives the call.
    unsafe {
        ffi::StorPortNotification(
            ffi::EnablePassiveInitialization,
            port.extension(),
            routine,
            &mut result as *mut ffi::LONG,
        )
    };
    result != 0
}

/// Asks Storport to call [`Miniport::timer`] once, in `microseconds` (RequestTimerCall); a new
/// request replaces the pending one, and 0 cancels it. Any callback may ask.
pub fn request_timer<M: Miniport>(port: Port, microseconds: u32) {
    let routine: ffi::PHW_TIMER = Some(timer_trampoline::<M>);
    // SAFETY: RequestTimerCall takes (PHW_TIMER, ULONG MiniportTimerValue) after the extension
    // (storport.md s.4); `port` is this adapter.
    unsafe {
        ffi::StorPortNotification(
            ffi::RequestTimerCall,
            port.extension(),
            routine,
            microseconds,
        )
    };
}

/// Whether a BOOLEAN is TRUE.
fn boolean(value: bool) -> ffi::BOOLEAN {
    ffi::BOOLEAN::from(value)
}

/// The extension pointer Storport passed, or `None` if it passed NULL.
fn extension(ptr: ffi::PVOID) -> Option<NonNull<c_void>> {
    NonNull::new(ptr)
}

/// HwStorFindAdapter for `M`: lays out the device extension, then [`Miniport::find_adapter`].
///
/// # Safety
///
/// Called by Storport as HwStorFindAdapter of a miniport registered through [`driver_entry`]
/// for `M`, before any other callback of this adapter: `device_extension` is NULL or this
/// adapter's DeviceExtensionSize (`size_of::<Extension<M>>()`) bytes, suitably aligned and not
/// referenced elsewhere; `config_info` is NULL or the PORT_CONFIGURATION_INFORMATION of this call;
/// `argument_string` is NULL or NUL-terminated; `again` is NULL or a writable BOOLEAN.
unsafe extern "C" fn find_adapter_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    _hw_context: ffi::PVOID,
    _bus_information: ffi::PVOID,
    argument_string: ffi::PCHAR,
    config_info: *mut ffi::PORT_CONFIGURATION_INFORMATION,
    again: *mut ffi::BOOLEAN,
) -> ffi::ULONG {
    if !again.is_null() {
        // SAFETY: Storport passes a valid BOOLEAN out-parameter (checked non-NULL).
        unsafe { again.write(0) };
    }
    let (Some(ext), Some(config_info)) = (extension(device_extension), NonNull::new(config_info))
    else {
        return ffi::SP_RETURN_ERROR;
    };
    let raw = ext.as_ptr().cast::<Extension<M>>();
    let header = ExtensionHeader {
        srb_extension_size: AtomicU32::new(M::SRB_EXTENSION_SIZE),
        concurrent_channels: AtomicBool::new(false),
        half_duplex: AtomicBool::new(!<M::Duplex as context::Duplex>::CONCURRENT_CHANNELS),
        dump_mode: AtomicBool::new(false),
        per_message: AtomicBool::new(false),
        pci_bus: AtomicU32::new(0),
        pci_slot: AtomicU32::new(0),
        dump_data: crate::dump::DumpDataCell::new(),
    };
    // SAFETY: Storport allocated DeviceExtensionSize = size_of::<Extension<M>>() bytes for this
    // adapter, suitably aligned (asserted in `Extension::SIZE`), and calls FindAdapter before any
    // other callback of the adapter, so nothing else references the memory yet.
    // `header` is the first field of the repr(C) extension.
    unsafe { raw.cast::<ExtensionHeader>().write(header) };
    // `M::INITIAL` is written in place, without a large stack temporary in optimised builds.
    let miniport_ptr = raw
        .cast::<u8>()
        .wrapping_add(core::mem::offset_of!(Extension<M>, miniport))
        .cast::<M>();
    // SAFETY: as above (the pointer is the `miniport` field's place).
    unsafe { miniport_ptr.write(M::INITIAL) };
    // SAFETY: the extension was just initialised and nothing else can run for this adapter
    // until FindAdapter returns, so this is the only reference.
    let miniport = unsafe { &mut *miniport_ptr };
    // SAFETY: `ext` is this adapter's HwDeviceExtension.
    let port = unsafe { Port::new(ext) };
    // SAFETY: Storport passes a valid PORT_CONFIGURATION_INFORMATION for the duration of the call
    // and a NUL-terminated (or NULL) argument string.
    let mut config = unsafe { PortConfiguration::new(config_info, argument_string, port) };
    header_dump_mode(&port, config.dump_mode().is_some());
    let (bus, slot) = config.bus_slot();
    self::header(&port).pci_bus.store(bus, Ordering::Relaxed);
    self::header(&port).pci_slot.store(slot, Ordering::Relaxed);
    // SAFETY: this is the HwStorFindAdapter trampoline.
    let mut ctx = unsafe { context::FindAdapter::new() };
    let status = miniport.find_adapter(&mut ctx, port, &mut config);
    // The model is the miniport type's, declared here and nowhere else, so the tokens the other
    // trampolines hand out (by `M::Duplex`) hold to what Storport was told.
    config.set_synchronization_model(<M::Duplex as context::Duplex>::MODEL);
    status.to_sp_return()
}

fn header_dump_mode(port: &Port, dump: bool) {
    header(port).dump_mode.store(dump, Ordering::Relaxed);
}

/// HwStorInitialize for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorInitialize (DIRQL, interrupt lock held) for an adapter of `M`
/// whose FindAdapter trampoline returned found: `device_extension` is its initialised
/// `Extension<M>`.
unsafe extern "C" fn initialize_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
) -> ffi::BOOLEAN {
    // SAFETY: Storport calls HwStorInitialize only after FindAdapter succeeded for this extension.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorInitialize trampoline.
    let mut ctx = unsafe { context::Initialize::new() };
    boolean(miniport.initialize(&mut ctx))
}

/// HwStorPassiveInitializeRoutine for `M`, registered by [`enable_passive_initialization`].
///
/// # Safety
///
/// Called by Storport at PASSIVE_LEVEL after HwStorInitialize asked for it: `device_extension`
/// is the initialised `Extension<M>` of the adapter, which lives as long as the adapter.
unsafe extern "C" fn passive_initialize_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
) -> ffi::BOOLEAN {
    // SAFETY: registered by `enable_passive_initialization` from HwStorInitialize, after
    // FindAdapter initialised the extension.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorPassiveInitializeRoutine trampoline.
    let mut ctx = unsafe { context::PassiveInitialize::new() };
    boolean(miniport.passive_initialize(&mut ctx))
}

/// HwStorBuildIo for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorBuildIo (DISPATCH_LEVEL, no lock held) for an adapter of `M`
/// that was found: `device_extension` is its initialised `Extension<M>`; `srb` is a request of
/// this adapter that Storport hands over until BuildIo returns (and, on TRUE, to StartIo).
unsafe extern "C" fn build_io_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    srb: ffi::PSCSI_REQUEST_BLOCK,
) -> ffi::BOOLEAN {
    let Some(ext) = extension(device_extension) else {
        return 0;
    };
    // SAFETY: Storport calls HwStorBuildIo only after FindAdapter succeeded for this extension.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: `ext` is this adapter's HwDeviceExtension.
    let port = unsafe { Port::new(ext) };
    // SAFETY: Storport hands BuildIo an SRB it owns until StartIo or completion; with
    // SrbTypeFlags = STORAGE_REQUEST_BLOCK it is an SRB_EX.
    let Some(request) = (unsafe { Srb::from_raw(srb, port) }) else {
        // Not an SRB_EX: Storport never sends one to a miniport registered for SRB_EX only.
        return 1;
    };
    // SAFETY: this is the HwStorBuildIo trampoline.
    let mut ctx = unsafe { context::BuildIo::new() };
    match miniport.build_io(&mut ctx, request) {
        BuildIoOutcome::StartIo(request) => {
            // The SRB goes on to StartIo, which receives its own handle.
            request.forget();
            1
        }
        BuildIoOutcome::Completed(_) => 0,
    }
}

/// HwStorStartIo for `M`: the token follows `M::Duplex` and the channels in force.
///
/// # Safety
///
/// Called by Storport as HwStorStartIo for an adapter of `M` that was found, under the model
/// `M::Duplex` that the FindAdapter trampoline declared: `device_extension` is its initialised
/// `Extension<M>`; `srb` is a request of this adapter the miniport owns until it completes it;
/// Storport holds the StartIo lock unless it granted more than one concurrent channel (which
/// `perf::initialize` records before asking).
unsafe extern "C" fn start_io_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    srb: ffi::PSCSI_REQUEST_BLOCK,
) -> ffi::BOOLEAN {
    let Some(ext) = extension(device_extension) else {
        return 1;
    };
    // SAFETY: Storport calls HwStorStartIo only after FindAdapter succeeded for this extension.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: `ext` is this adapter's HwDeviceExtension.
    let port = unsafe { Port::new(ext) };
    // SAFETY: Storport hands StartIo an SRB_EX the miniport owns until it completes it.
    let Some(request) = (unsafe { Srb::from_raw(srb, port) }) else {
        return 1;
    };
    // Acquire: pairs with the store `perf::initialize` makes before it asks Storport for
    // channels, which happens before Storport runs StartIo in parallel.
    if <M::Duplex as context::Duplex>::CONCURRENT_CHANNELS
        && header(&port).concurrent_channels.load(Ordering::Acquire)
    {
        // SAFETY: this is the HwStorStartIo trampoline of a full-duplex miniport for which
        // Storport may have more than one concurrent channel in force; the token claims no lock,
        // which holds either way.
        let mut ctx = unsafe { context::StartIoConcurrent::new() };
        miniport.start_io(context::StartIo::Concurrent(&mut ctx), request);
    } else {
        // SAFETY: this is the HwStorStartIo trampoline, under the model `M::Duplex` that the
        // FindAdapter trampoline declared, with one channel in force (`concurrent_channels` is
        // set before any request for more, and never in half duplex): Storport holds the
        // StartIo lock (and in half duplex the interrupt lock).
        let mut ctx = unsafe { context::StartIoSerialized::<M::Duplex>::new() };
        miniport.start_io(context::StartIo::Serialized(&mut ctx), request);
    }
    1
}

/// HwStorInterrupt for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorInterrupt (DIRQL, interrupt lock held) for an adapter of `M`
/// that was found: `device_extension` is its initialised `Extension<M>`.
unsafe extern "C" fn interrupt_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
) -> ffi::BOOLEAN {
    // SAFETY: Storport connects the interrupt only after FindAdapter succeeded.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorInterrupt trampoline; Storport holds the interrupt lock.
    let mut ctx = unsafe { context::Interrupt::new() };
    boolean(miniport.interrupt(&mut ctx))
}

/// The HwMSInterruptRoutine trampoline, installed by `PortConfiguration::use_message_interrupts`.
///
/// # Safety
///
/// Called by Storport as HwMSInterruptRoutine (DIRQL) for message `message_id` of an adapter of
/// `M` that was found: `device_extension` is its initialised `Extension<M>`; Storport holds the
/// interrupt lock (InterruptSynchronizeAll) or this message's lock (InterruptSynchronizePerMessage),
/// as the header's `per_message` recorded from the same call that chose the mode.
pub(crate) unsafe extern "C" fn message_interrupt_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    message_id: ffi::ULONG,
) -> ffi::BOOLEAN {
    // SAFETY: Storport connects message interrupts only after FindAdapter succeeded.
    let miniport = unsafe { miniport::<M>(device_extension) };
    let Some(ext) = extension(device_extension) else {
        return 0;
    };
    // SAFETY: `ext` is this adapter's HwDeviceExtension.
    let port = unsafe { Port::new(ext) };
    if header(&port).per_message.load(Ordering::Relaxed) {
        // SAFETY: this is the HwMSInterruptRoutine trampoline of a miniport that declared
        // InterruptSynchronizePerMessage: Storport holds this message's lock.
        let mut ctx = unsafe { context::MessageInterruptPerMessage::new(message_id) };
        boolean(miniport.message_interrupt(MessageContext::PerMessage(&mut ctx), message_id))
    } else {
        // SAFETY: this is the HwMSInterruptRoutine trampoline with InterruptSynchronizeAll:
        // Storport holds the one interrupt lock.
        let mut ctx = unsafe { context::MessageInterrupt::new() };
        boolean(miniport.message_interrupt(MessageContext::All(&mut ctx), message_id))
    }
}

/// HwStorResetBus for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorResetBus for an adapter of `M` that was found, under the model
/// `M::Duplex` the FindAdapter trampoline declared (StartIo lock held; in half duplex the
/// interrupt lock too): `device_extension` is its initialised `Extension<M>`.
unsafe extern "C" fn reset_bus_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    path_id: ffi::ULONG,
) -> ffi::BOOLEAN {
    // SAFETY: Storport resets only an adapter that was found.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorResetBus trampoline under the model `M::Duplex` that the
    // FindAdapter trampoline declared (StartIo lock held; in half duplex the interrupt lock too).
    let mut ctx = unsafe { context::ResetBus::<M::Duplex>::new() };
    boolean(miniport.reset_bus(&mut ctx, path_id))
}

/// HwStorTimer for `M`, registered by [`request_timer`].
///
/// # Safety
///
/// Called by Storport as the HwStorTimer that [`request_timer`] registered for an adapter of `M`,
/// under the model `M::Duplex` the FindAdapter trampoline declared (StartIo lock held; in half
/// duplex the interrupt lock too): `device_extension` is its initialised `Extension<M>`.
unsafe extern "C" fn timer_trampoline<M: Miniport>(device_extension: ffi::PVOID) {
    // SAFETY: registered by `request_timer`, after FindAdapter initialised the extension.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorTimer trampoline under the model `M::Duplex` that the
    // FindAdapter trampoline declared (StartIo lock held; in half duplex the interrupt lock too).
    let mut ctx = unsafe { context::Timer::<M::Duplex>::new() };
    miniport.timer(&mut ctx);
}

/// HwStorUnitControl for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorUnitControl (PASSIVE or DISPATCH, no lock held) for an adapter of
/// `M`: `device_extension` is its initialised `Extension<M>` for every type but the query, which
/// may come first; `parameters` has the shape `control_type` names (the type list for
/// ScsiQuerySupportedUnitControlTypes, a STOR_ADDRESS or NULL for the removals).
unsafe extern "C" fn unit_control_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    control_type: ffi::SCSI_UNIT_CONTROL_TYPE,
    parameters: ffi::PVOID,
) -> ffi::SCSI_UNIT_CONTROL_STATUS {
    if control_type == ffi::ScsiQuerySupportedUnitControlTypes {
        // SAFETY: for ScsiQuerySupportedUnitControlTypes Storport passes a
        // SCSI_SUPPORTED_CONTROL_TYPE_LIST followed by MaxControlType BOOLEANs.
        return unsafe {
            report_supported_types(parameters, &[], M::UNIT_CONTROL_TYPES.iter().map(|t| t.0))
        };
    }
    if !M::UNIT_CONTROL_TYPES.contains(&UnitControlType(control_type)) {
        return ffi::ScsiUnitControlUnsuccessful;
    }
    // SAFETY: Storport sends unit controls only after FindAdapter succeeded.
    let miniport = unsafe { miniport::<M>(device_extension) };
    let control = match control_type {
        ffi::ScsiUnitStart => {
            // SAFETY: for ScsiUnitStart Storport passes the unit's STOR_ADDRESS (or NULL).
            UnitControl::Start(unsafe { unit_address(parameters) })
        }
        ffi::ScsiUnitPower => {
            let power = parameters.cast::<ffi::STOR_UNIT_CONTROL_POWER>();
            if power.is_null() {
                return ffi::ScsiUnitControlUnsuccessful;
            }
            // SAFETY: for ScsiUnitPower Storport passes a STOR_UNIT_CONTROL_POWER.
            let power = unsafe { power.read_unaligned() };
            UnitControl::Power {
                // SAFETY: its Address is NULL or the unit's STOR_ADDRESS.
                address: unsafe { unit_address(power.Address.cast()) },
                action: power.PowerAction,
                state: UnitPowerState::from_raw(power.PowerState),
            }
        }
        ffi::ScsiUnitRemove | ffi::ScsiUnitSurpriseRemoval => {
            // SAFETY: for these types Storport passes the unit's STOR_ADDRESS (or NULL).
            let address = unsafe { unit_address(parameters) };
            if control_type == ffi::ScsiUnitRemove {
                UnitControl::Remove(address)
            } else {
                UnitControl::SurpriseRemoval(address)
            }
        }
        other => UnitControl::Other(UnitControlType(other)),
    };
    // SAFETY: this is the HwStorUnitControl trampoline.
    let mut ctx = unsafe { context::UnitControl::new() };
    match miniport.unit_control(&mut ctx, control) {
        UnitControlStatus::Success => ffi::ScsiUnitControlSuccess,
        UnitControlStatus::Unsuccessful => ffi::ScsiUnitControlUnsuccessful,
    }
}

unsafe extern "C" fn tracing_enabled_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    enabled: ffi::BOOLEAN,
) {
    // SAFETY: Storport calls HwStorTracingEnabled for a started adapter, after FindAdapter.
    let miniport = unsafe { miniport::<M>(device_extension) };
    // SAFETY: this is the HwStorTracingEnabled trampoline (PASSIVE, no lock held).
    let mut ctx = unsafe { context::TracingEnabled::new() };
    miniport.tracing_enabled(&mut ctx, enabled != 0);
}

/// The BTL8 address a unit control names.
///
/// # Safety
///
/// `parameters` is NULL or points at a STOR_ADDRESS Storport passed for the unit.
unsafe fn unit_address(parameters: ffi::PVOID) -> Option<Address> {
    let address = parameters.cast::<ffi::STOR_ADDR_BTL8>();
    if address.is_null() {
        return None;
    }
    // SAFETY: by this function's `# Safety`, a non-NULL `parameters` is a STOR_ADDRESS, whose
    // BTL8 form is 16 bytes (the STOR_ADDRESS header is as large).
    let a = unsafe { address.read_unaligned() };
    (a.Type == ffi::STOR_ADDRESS_TYPE_BTL8).then_some(Address {
        path: a.Path,
        target: a.Target,
        lun: a.Lun,
    })
}

/// HwStorAdapterControl for `M`.
///
/// # Safety
///
/// Called by Storport as HwStorAdapterControl for an adapter of `M`: `device_extension` is its
/// initialised `Extension<M>` for every type but the query, which may come first; `parameters`
/// is the SCSI_SUPPORTED_CONTROL_TYPE_LIST for ScsiQuerySupportedControlTypes; ScsiStopAdapter and
/// ScsiRestartAdapter arrive at DIRQL with the interrupt lock held (layouts.md, "Adapter control
/// protocol").
unsafe extern "C" fn adapter_control_trampoline<M: Miniport>(
    device_extension: ffi::PVOID,
    control_type: ffi::SCSI_ADAPTER_CONTROL_TYPE,
    parameters: ffi::PVOID,
) -> ffi::SCSI_ADAPTER_CONTROL_STATUS {
    if control_type == ffi::ScsiQuerySupportedControlTypes {
        // SAFETY: for ScsiQuerySupportedControlTypes Storport passes a
        // SCSI_SUPPORTED_CONTROL_TYPE_LIST followed by MaxControlType BOOLEANs.
        return unsafe {
            report_supported_types(
                parameters,
                &[ffi::ScsiStopAdapter, ffi::ScsiRestartAdapter],
                M::ADAPTER_CONTROL_TYPES.iter().map(|t| t.0),
            )
        };
    }
    // SAFETY: Storport sends other control types only after FindAdapter succeeded.
    let miniport = unsafe { miniport::<M>(device_extension) };
    let control = match control_type {
        ffi::ScsiStopAdapter => AdapterControl::Stop,
        ffi::ScsiRestartAdapter => AdapterControl::Restart,
        other if M::ADAPTER_CONTROL_TYPES.contains(&AdapterControlType(other)) => {
            AdapterControl::Other(AdapterControlType(other))
        }
        _ => return ffi::ScsiAdapterControlUnsuccessful,
    };
    let stop_restart = matches!(control, AdapterControl::Stop | AdapterControl::Restart);
    // SAFETY: this is the HwStorAdapterControl trampoline; Storport sends ScsiStopAdapter and
    // ScsiRestartAdapter holding the interrupt lock (layouts.md, "Adapter control protocol").
    let mut ctx = unsafe { context::AdapterControl::new(stop_restart) };
    match miniport.adapter_control(&mut ctx, control) {
        AdapterControlStatus::Success => ffi::ScsiAdapterControlSuccess,
        AdapterControlStatus::Unsuccessful => ffi::ScsiAdapterControlUnsuccessful,
    }
}

/// Answers ScsiQuerySupportedControlTypes (or the unit variant): `mandatory` and `supported`,
/// never at or beyond MaxControlType. Both status enumerations have success 0, failure 1.
///
/// # Safety
///
/// `parameters` is NULL or the SCSI_SUPPORTED_CONTROL_TYPE_LIST Storport passed, whose
/// `SupportedTypeList` has `MaxControlType` entries.
unsafe fn report_supported_types(
    parameters: ffi::PVOID,
    mandatory: &[u32],
    supported: impl Iterator<Item = u32>,
) -> ffi::SCSI_ADAPTER_CONTROL_STATUS {
    let list = parameters.cast::<ffi::SCSI_SUPPORTED_CONTROL_TYPE_LIST>();
    if list.is_null() {
        return ffi::ScsiAdapterControlUnsuccessful;
    }
    // SAFETY: `list` is the non-NULL list Storport passed (this function's `# Safety`).
    let max = unsafe { (*list).MaxControlType };
    // SAFETY: the BOOLEAN array starts at SupportedTypeList, inside the same allocation.
    let entries =
        unsafe { core::ptr::addr_of_mut!((*list).SupportedTypeList) }.cast::<ffi::BOOLEAN>();
    for control_type in mandatory.iter().copied().chain(supported) {
        if control_type < max {
            // SAFETY: `control_type < MaxControlType`, the array's length (this function's
            // `# Safety`).
            unsafe { entries.wrapping_add(control_type as usize).write(1) };
        }
    }
    ffi::ScsiAdapterControlSuccess
}
