//! The polled, single-CPU Storport: what a crash-dump stack does with a miniport.
//!
//! [`Adapter::bring_up`] runs DriverEntry (with NULL arguments, as a dump stack does), hands the
//! virtio-blk device to HwStorFindAdapter as a PORT_CONFIGURATION_INFORMATION with
//! `DumpMode = DUMP_MODE_CRASH` and the argument string "dump=1", then runs HwStorInitialize.
//! [`Adapter::execute`] sends one SRB_EX at a time through HwStorBuildIo and HwStorStartIo and
//! polls HwStorInterrupt until the miniport completes it. Every callback runs inside a frame of
//! the lock checker (`storport-rules`), which holds the locks Storport would hold for it.
//!
//! The port's state lives in [`STATE`], reached by the `StorPort*` definitions in `shim`. It is
//! only ever borrowed briefly and never across a call into the miniport, so a miniport calling
//! back into the port cannot meet a borrowed state (the `RefCell` would catch it: a panic, which
//! fails the run).

use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicU32, Ordering};

use storport_rules::{Callback, Cpu, Lock, Model, Violation};
use storport_sys as ffi;

use crate::memory::{self, Block, MISALIGN};
use crate::pci::{Bar, Location};
use crate::say;

/// The most bytes the uncached extension may have: a crash dump has about 32 KiB in all
/// (storport.md section 7); anything near a megabyte is a dump-mode bug.
pub const UNCACHED_LIMIT: u32 = 1 << 20;
/// The most data one request of this port carries.
pub const DATA_CAPACITY: usize = 256 * 1024;
/// Sense buffer bytes per request (SENSE_BUFFER_SIZE_EX is 255; the dump port uses less).
pub const SENSE_CAPACITY: u8 = 32;
/// The poison the port fills SRB extensions with: Storport does not zero them.
pub const SRB_EXTENSION_POISON: u8 = 0xA5;
/// Polls of HwStorInterrupt before a request counts as lost: at least 60 s of 10 us stalls
/// (plus the time the polls themselves take). A request normally completes within a few hundred
/// polls; the QEMU process serving it may be starved on a busy host for seconds (a flush is an
/// fdatasync of the image file there), and that must not fail the run.
const POLL_LIMIT: u32 = 6_000_000;
/// Scatter-gather elements the port's list can hold.
const SG_CAPACITY: usize = 128;

/// Broken rules seen so far (each was printed as a VIOLATION line).
pub static VIOLATIONS: AtomicU32 = AtomicU32::new(0);

/// Reports a broken rule: a transcript line, and the run fails.
pub fn violation(args: core::fmt::Arguments<'_>) {
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    say!("VIOLATION: {}", args);
}

/// Reports a broken lock rule found by the checker.
pub fn check(result: Result<(), Violation>) {
    if let Err(v) = result {
        violation(format_args!("{v}"));
    }
}

/// The request the miniport owns, if any.
#[derive(Clone, Copy, Debug)]
pub struct Outstanding {
    /// The SRB handed to HwStorBuildIo.
    pub srb: usize,
    /// How many times the miniport completed it.
    pub completions: u32,
    /// The SRB status at the (first) completion.
    pub status: u8,
    /// The callback the completion came from.
    pub completed_in: Option<Callback>,
}

/// A DMA-able memory region the port handed out, by what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// The uncached extension (translatable without an SRB).
    Uncached,
    /// A request's SRB extension, sense buffer or data buffer (translatable with the SRB).
    Request,
}

/// Everything the `StorPort*` definitions need.
pub struct State {
    /// The lock checker for the one CPU.
    pub cpu: Cpu<4, 8>,
    /// The HW_INITIALIZATION_DATA from StorPortInitialize.
    pub hw: Option<ffi::HW_INITIALIZATION_DATA>,
    /// How many times StorPortInitialize was called.
    pub initialize_calls: u32,
    /// The adapter's device extension.
    pub extension: usize,
    /// The PCI function of the adapter.
    pub location: Option<Location>,
    /// The access ranges handed to HwStorFindAdapter.
    pub ranges: [ffi::ACCESS_RANGE; 6],
    /// How many of `ranges` are used.
    pub range_count: usize,
    /// Memory the port handed out that the device may access.
    pub regions: [Option<(Block, RegionKind)>; 8],
    /// Bytes the miniport asked for as its uncached extension (None: never asked).
    pub uncached_bytes: Option<u32>,
    /// The request in flight.
    pub outstanding: Option<Outstanding>,
    /// The scatter-gather list memory.
    pub sg: Option<Block>,
    /// StorPortBusy / StorPortPause in force.
    pub busy: bool,
    /// Lock calls seen: acquires (classic and Ex), releases, StorPortSynchronizeAccess calls.
    pub lock_calls: [u32; 3],
}

impl State {
    const fn new() -> Self {
        Self {
            cpu: Cpu::new(Model::FULL_DUPLEX),
            hw: None,
            initialize_calls: 0,
            extension: 0,
            location: None,
            ranges: [ffi::ACCESS_RANGE::zeroed(); 6],
            range_count: 0,
            regions: [None; 8],
            uncached_bytes: None,
            outstanding: None,
            sg: None,
            busy: false,
            lock_calls: [0; 3],
        }
    }

    /// Records a region the device may access.
    pub fn add_region(&mut self, block: Block, kind: RegionKind) {
        match self.regions.iter_mut().find(|r| r.is_none()) {
            Some(slot) => *slot = Some((block, kind)),
            None => violation(format_args!("port: out of region slots")),
        }
    }

    /// The region holding `address` and the contiguous bytes from it.
    pub fn region_of(&self, address: usize) -> Option<(RegionKind, usize)> {
        self.regions
            .iter()
            .flatten()
            .find_map(|(block, kind)| block.contiguous_from(address).map(|len| (*kind, len)))
    }
}

/// The port's state: one CPU, interrupts never enabled for the device, and the firmware calls
/// nothing of ours asynchronously, so it is never accessed concurrently.
pub struct Global(RefCell<State>);

// SAFETY: the application runs on one CPU with no interrupt handlers of its own; the state is
// only touched from the application's thread (see the module documentation).
unsafe impl Sync for Global {}

/// The port's state.
pub static STATE: Global = Global(RefCell::new(State::new()));

/// Starts a fresh port for the next adapter: a new dump stack knows nothing of the last one.
pub fn reset() {
    with(|s| *s = State::new());
}

/// Runs `f` with the port's state borrowed (never call the miniport inside).
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    f(&mut STATE.0.borrow_mut())
}

/// Runs a miniport callback inside a checker frame holding the port's locks for it.
fn call<R>(callback: Callback, f: impl FnOnce() -> R) -> R {
    check(with(|s| s.cpu.enter(callback)));
    let r = f();
    check(with(|s| s.cpu.leave()));
    r
}

/// Runs the routine of StorPortSynchronizeAccess in a checker frame (from the shim).
pub fn synchronized<R>(f: impl FnOnce() -> R) -> R {
    with(|s| s.lock_calls[2] += 1);
    call(Callback::SynchronizedAccess, f)
}

/// The lock a STOR_SPINLOCK names, for the checker.
pub fn lock_of(kind: u32, context: usize) -> Option<Lock> {
    match kind {
        ffi::DpcLock => Some(Lock::Dpc(context)),
        ffi::StartIoLock => Some(Lock::StartIo),
        ffi::InterruptLock => Some(Lock::Interrupt),
        _ => None,
    }
}

/// What a request should look like.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// SRB_FUNCTION_*.
    pub function: u32,
    /// The CDB (empty for non-SCSI functions).
    pub cdb: &'a [u8],
    /// SRB_FLAGS_DATA_IN / DATA_OUT / 0.
    pub direction: u32,
    /// Bytes of data (in the port's data buffer).
    pub length: u32,
}

/// How a request ended.
#[derive(Clone, Copy, Debug)]
pub struct Completion {
    /// SrbStatus (with modifiers).
    pub srb_status: u8,
    /// ScsiStatus.
    pub scsi_status: u8,
    /// Sense bytes the miniport returned (SenseInfoBufferLength at completion).
    pub sense: [u8; SENSE_CAPACITY as usize],
    /// How many of `sense` are valid.
    pub sense_len: u8,
    /// DataTransferLength at completion.
    pub transferred: u32,
    /// Polls of HwStorInterrupt until completion.
    pub polls: u32,
    /// Where it completed.
    pub completed_in: Option<Callback>,
}

impl Completion {
    /// The SRB status without modifiers.
    pub fn status(&self) -> u8 {
        ffi::SRB_STATUS(self.srb_status)
    }

    /// Sense key, ASC, ASCQ of fixed-format sense data, if any was returned.
    pub fn sense_key(&self) -> Option<(u8, u8, u8)> {
        if self.sense_len < 14 || self.srb_status & ffi::SRB_STATUS_AUTOSENSE_VALID == 0 {
            return None;
        }
        Some((self.sense[2] & 0x0F, self.sense[12], self.sense[13]))
    }
}

/// Layout of the SRB the port builds: header, address, one CDB16 block.
const ADDRESS_OFFSET: usize = core::mem::size_of::<ffi::STORAGE_REQUEST_BLOCK>();
const CDB_BLOCK_OFFSET: usize = ADDRESS_OFFSET + core::mem::size_of::<ffi::STOR_ADDR_BTL8>();
const SRB_LENGTH: usize = CDB_BLOCK_OFFSET + core::mem::size_of::<ffi::SRBEX_DATA_SCSI_CDB16>();
const SENSE_OFFSET: usize = 0x100;
const _: () = assert!(SRB_LENGTH <= SENSE_OFFSET);

/// An adapter the miniport found and initialised.
pub struct Adapter {
    hw: ffi::HW_INITIALIZATION_DATA,
    extension: *mut c_void,
    /// The configuration as HwStorFindAdapter left it.
    pub config: ffi::PORT_CONFIGURATION_INFORMATION,
    srb_block: Block,
    srb_extension: Option<Block>,
    data: Block,
}

/// Why bring-up stopped.
#[derive(Clone, Copy, Debug)]
pub struct Failed;

fn fail(args: core::fmt::Arguments<'_>) -> Failed {
    say!("FAIL: {}", args);
    Failed
}

impl Adapter {
    /// DriverEntry, HwStorFindAdapter and HwStorInitialize for the device at `at`.
    pub fn bring_up(at: Location, bars: &[Bar]) -> Result<Adapter, Failed> {
        // DriverEntry, as a dump stack calls it: both arguments NULL.
        let status = call(Callback::DriverEntry, || {
            vioblk::DriverEntry(null_mut(), null_mut())
        });
        let (hw, calls) = with(|s| (s.hw, s.initialize_calls));
        say!("DriverEntry(NULL, NULL) = {status:#x}; StorPortInitialize called {calls} time(s)");
        let hw =
            hw.ok_or_else(|| fail(format_args!("DriverEntry did not call StorPortInitialize")))?;
        if status != 0 {
            return Err(fail(format_args!("DriverEntry returned {status:#x}")));
        }
        let find = hw
            .HwFindAdapter
            .ok_or_else(|| fail(format_args!("no HwFindAdapter")))?;
        let initialize = hw
            .HwInitialize
            .ok_or_else(|| fail(format_args!("no HwInitialize")))?;
        hw.HwStartIo
            .ok_or_else(|| fail(format_args!("no HwStartIo")))?;
        hw.HwInterrupt
            .ok_or_else(|| fail(format_args!("no HwInterrupt")))?;

        let extension_block =
            memory::allocate(hw.DeviceExtensionSize as usize, 0).ok_or_else(|| {
                fail(format_args!(
                    "no memory for a {} byte device extension",
                    hw.DeviceExtensionSize
                ))
            })?;
        let extension = extension_block.start.as_ptr().cast::<c_void>();

        // The access ranges: the implemented BARs in BAR order, as the PnP manager reports them.
        let mut ranges = [ffi::ACCESS_RANGE::zeroed(); 6];
        let mut count = 0;
        for (slot, bar) in ranges.iter_mut().zip(bars) {
            slot.RangeStart = bar.address as i64;
            slot.RangeLength = u32::try_from(bar.size).unwrap_or(u32::MAX);
            slot.RangeInMemory = u8::from(bar.memory);
            count += 1;
        }
        let wanted = hw.NumberOfAccessRanges as usize;
        if wanted < count {
            say!(
                "  HW_INITIALIZATION_DATA.NumberOfAccessRanges = {wanted} < {count} BARs: passing {wanted}"
            );
            count = wanted;
        }
        with(|s| {
            s.extension = extension as usize;
            s.location = Some(at);
            s.ranges = ranges;
            s.range_count = count;
        });

        let sg = memory::allocate(16 + 24 * SG_CAPACITY, MISALIGN)
            .ok_or_else(|| fail(format_args!("no memory for the scatter-gather list")))?;
        let srb_block = memory::allocate(SENSE_OFFSET + usize::from(SENSE_CAPACITY), MISALIGN)
            .ok_or_else(|| fail(format_args!("no memory for an SRB")))?;
        let data = memory::allocate(DATA_CAPACITY, MISALIGN)
            .ok_or_else(|| fail(format_args!("no memory for data")))?;
        let srb_extension =
            match hw.SrbExtensionSize {
                0 => None,
                size => Some(memory::allocate(size as usize, MISALIGN).ok_or_else(|| {
                    fail(format_args!("no memory for a {size} byte SRB extension"))
                })?),
            };
        with(|s| {
            s.sg = Some(sg);
            s.add_region(data, RegionKind::Request);
            s.add_region(srb_block, RegionKind::Request);
            if let Some(block) = srb_extension {
                s.add_region(block, RegionKind::Request);
            }
        });

        let mut config = ffi::PORT_CONFIGURATION_INFORMATION::zeroed();
        config.Length = core::mem::size_of::<ffi::PORT_CONFIGURATION_INFORMATION>() as u32;
        config.SystemIoBusNumber = u32::from(at.bus);
        config.SlotNumber = at.slot_number();
        config.AdapterInterfaceType = ffi::PCIBus;
        config.InterruptMode = ffi::LevelSensitive;
        // What Storport fills in before HwStorFindAdapter: "not set" for the limits the miniport
        // must choose (SP_UNINITIALIZED_VALUE), 64-bit DMA available, half duplex until the
        // miniport asks for full duplex.
        config.MaximumTransferLength = 0xFFFF_FFFF;
        config.NumberOfPhysicalBreaks = 0xFFFF_FFFF;
        config.DmaChannel = 0xFFFF_FFFF;
        config.DmaPort = 0xFFFF_FFFF;
        config.DmaChannel2 = 0xFFFF_FFFF;
        config.DmaPort2 = 0xFFFF_FFFF;
        config.DmaWidth = ffi::Width32Bits;
        config.NumberOfAccessRanges = count as u32;
        config.AccessRanges = ranges.as_mut_ptr();
        config.NumberOfBuses = 1;
        config.MaximumNumberOfTargets = 1;
        config.MaximumNumberOfLogicalUnits = 1;
        config.Dma64BitAddresses = ffi::SCSI_DMA64_SYSTEM_SUPPORTED;
        config.DeviceExtensionSize = hw.DeviceExtensionSize;
        config.SrbExtensionSize = hw.SrbExtensionSize;
        config.SynchronizationModel = ffi::StorSynchronizeHalfDuplex;
        config.InterruptSynchronizationMode = ffi::InterruptSupportNone;
        config.DumpMode = ffi::DUMP_MODE_CRASH;
        let mut arguments = *b"dump=1\0";
        let mut again: u8 = 0;

        // SAFETY: HwStorFindAdapter of the registered miniport, with its zeroed device
        // extension, a complete PORT_CONFIGURATION_INFORMATION whose access-range array and
        // argument string live across the call, and a BOOLEAN out-parameter.
        let found = call(Callback::FindAdapter, || unsafe {
            find(
                extension,
                null_mut(),
                null_mut(),
                arguments.as_mut_ptr().cast(),
                &mut config,
                &mut again,
            )
        });
        // The array lived on this stack: Storport's is only valid during the call too.
        config.AccessRanges = core::ptr::null_mut();
        say!(
            "HwStorFindAdapter = {found} ({}); Again = {again}",
            match found {
                ffi::SP_RETURN_FOUND => "SP_RETURN_FOUND",
                ffi::SP_RETURN_NOT_FOUND => "SP_RETURN_NOT_FOUND",
                ffi::SP_RETURN_ERROR => "SP_RETURN_ERROR",
                ffi::SP_RETURN_BAD_CONFIG => "SP_RETURN_BAD_CONFIG",
                _ => "not an SP_RETURN value",
            }
        );
        if found != ffi::SP_RETURN_FOUND {
            return Err(fail(format_args!(
                "HwStorFindAdapter did not find the adapter"
            )));
        }
        report_config(&hw, &config);
        with(|s| {
            let model = Model {
                half_duplex: config.SynchronizationModel != ffi::StorSynchronizeFullDuplex,
                concurrent_channels: 1,
                per_message: false,
            };
            s.cpu.set_model(model);
        });

        if let Some(control) = hw.HwAdapterControl {
            query_control_types(control, extension);
        }

        // SAFETY: HwStorInitialize of the miniport whose FindAdapter succeeded for `extension`.
        let ready = call(Callback::Initialize, || unsafe { initialize(extension) });
        say!("HwStorInitialize = {ready}");
        if ready == 0 {
            return Err(fail(format_args!("HwStorInitialize failed")));
        }
        Ok(Adapter {
            hw,
            extension,
            config,
            srb_block,
            srb_extension,
            data,
        })
    }

    /// The data buffer (DATA_CAPACITY bytes, MISALIGN past a page boundary).
    pub fn data(&mut self) -> &mut [u8] {
        // SAFETY: the block holds at least DATA_CAPACITY bytes, is ours, and the device only
        // touches it while a request is outstanding, never while this borrow lives.
        unsafe { core::slice::from_raw_parts_mut(self.data.start.as_ptr(), DATA_CAPACITY) }
    }

    /// Sends one request and polls until the miniport completes it. SRB_STATUS_BUSY is
    /// re-sent, as Storport does.
    pub fn execute(&mut self, request: &Request<'_>) -> Option<Completion> {
        for _ in 0..100 {
            let completion = self.dispatch(request)?;
            if completion.status() != ffi::SRB_STATUS_BUSY {
                return Some(completion);
            }
            say!("  (SRB_STATUS_BUSY: re-sent)");
        }
        violation(format_args!(
            "request still SRB_STATUS_BUSY after 100 attempts"
        ));
        None
    }

    fn build_srb(&mut self, request: &Request<'_>) -> *mut ffi::STORAGE_REQUEST_BLOCK {
        let base = self.srb_block.start.as_ptr();
        // SAFETY: the SRB block holds SENSE_OFFSET + SENSE_CAPACITY bytes, is ours and no request
        // is outstanding.
        unsafe { core::ptr::write_bytes(base, 0, SENSE_OFFSET + usize::from(SENSE_CAPACITY)) };
        let srb = base.cast::<ffi::STORAGE_REQUEST_BLOCK>();
        let mut header = ffi::STORAGE_REQUEST_BLOCK::zeroed();
        header.Length = core::mem::offset_of!(ffi::STORAGE_REQUEST_BLOCK, Signature) as u16;
        header.Function = ffi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK;
        header.Signature = ffi::SRB_SIGNATURE;
        header.Version = ffi::STORAGE_REQUEST_BLOCK_VERSION_1;
        header.SrbLength = SRB_LENGTH as u32;
        header.SrbFunction = request.function;
        header.SrbFlags = request.direction | ffi::SRB_FLAGS_DISABLE_SYNCH_TRANSFER;
        header.TimeOutValue = 10;
        header.RequestTag = 1;
        header.AddressOffset = ADDRESS_OFFSET as u32;
        header.DataTransferLength = request.length;
        header.DataBuffer = if request.length == 0 {
            null_mut()
        } else {
            self.data.start.as_ptr().cast()
        };
        if let Some(block) = self.srb_extension {
            // SAFETY: the SRB extension block holds SrbExtensionSize bytes and is ours.
            unsafe {
                core::ptr::write_bytes(
                    block.start.as_ptr(),
                    SRB_EXTENSION_POISON,
                    self.hw.SrbExtensionSize as usize,
                )
            };
            header.MiniportContext = block.start.as_ptr().cast();
        }
        let scsi = request.function == u32::from(ffi::SRB_FUNCTION_EXECUTE_SCSI);
        if scsi {
            header.NumSrbExData = 1;
            header.SrbExDataOffset = [CDB_BLOCK_OFFSET as u32];
        }
        let mut address = ffi::STOR_ADDR_BTL8::zeroed();
        address.Type = ffi::STOR_ADDRESS_TYPE_BTL8;
        address.AddressLength = ffi::STOR_ADDR_BTL8_ADDRESS_LENGTH;
        let mut block = ffi::SRBEX_DATA_SCSI_CDB16::zeroed();
        block.Type = ffi::SrbExDataTypeScsiCdb16;
        block.Length = ffi::SRBEX_DATA_SCSI_CDB16_LENGTH;
        block.SenseInfoBufferLength = SENSE_CAPACITY;
        // SENSE_OFFSET lies inside the SRB block (see the allocation).
        block.SenseInfoBuffer = base.wrapping_add(SENSE_OFFSET).cast();
        let cdb_len = request.cdb.len().min(16);
        block.CdbLength = cdb_len as u8;
        block.Cdb[..cdb_len].copy_from_slice(&request.cdb[..cdb_len]);
        // SAFETY: the three structures fit at their offsets in the SRB block (SRB_LENGTH <=
        // SENSE_OFFSET), which is 8-aligned (MISALIGN is), as their alignment requires.
        unsafe {
            srb.write(header);
        }
        // SAFETY: as above.
        unsafe {
            base.wrapping_add(ADDRESS_OFFSET)
                .cast::<ffi::STOR_ADDR_BTL8>()
                .write(address)
        };
        if scsi {
            // SAFETY: as above.
            unsafe {
                base.wrapping_add(CDB_BLOCK_OFFSET)
                    .cast::<ffi::SRBEX_DATA_SCSI_CDB16>()
                    .write(block)
            };
        }
        srb
    }

    fn dispatch(&mut self, request: &Request<'_>) -> Option<Completion> {
        let srb = self.build_srb(request);
        with(|s| {
            s.outstanding = Some(Outstanding {
                srb: srb as usize,
                completions: 0,
                status: 0,
                completed_in: None,
            })
        });
        let extension = self.extension;
        let raw = srb.cast::<ffi::SCSI_REQUEST_BLOCK>();
        let to_start_io = match self.hw.HwBuildIo {
            // SAFETY: HwStorBuildIo with the adapter's extension and an SRB the miniport now owns.
            Some(build_io) => call(Callback::BuildIo, || unsafe { build_io(extension, raw) }) != 0,
            None => true,
        };
        let mut polls = 0u32;
        if to_start_io {
            let completed = with(|s| s.outstanding.is_some_and(|o| o.completions > 0));
            if completed {
                violation(format_args!(
                    "HwStorBuildIo completed the request and returned TRUE"
                ));
            } else if let Some(start_io) = self.hw.HwStartIo {
                // SAFETY: HwStorStartIo with the adapter's extension and the same SRB.
                let r = call(Callback::StartIo, || unsafe { start_io(extension, raw) });
                if r == 0 {
                    violation(format_args!("HwStorStartIo returned FALSE"));
                }
            }
        }
        let interrupt = self.hw.HwInterrupt;
        // Poll until the completion, or until POLL_LIMIT polls say it is not coming.
        while with(|s| s.outstanding.is_some_and(|o| o.completions == 0)) {
            if polls >= POLL_LIMIT {
                violation(format_args!(
                    "request not completed after {polls} polls of HwStorInterrupt"
                ));
                with(|s| s.outstanding = None);
                return None;
            }
            if let Some(isr) = interrupt {
                // SAFETY: HwStorInterrupt with the adapter's extension (polled, as a dump does).
                call(Callback::Interrupt, || unsafe { isr(extension) });
            }
            polls += 1;
            uefi::boot::stall(core::time::Duration::from_micros(10));
        }
        let outstanding = with(|s| s.outstanding.take())?;
        if outstanding.completions > 1 {
            violation(format_args!(
                "request completed {} times",
                outstanding.completions
            ));
        }
        // SAFETY: the request is completed: the SRB block is ours again.
        let header = unsafe { srb.read() };
        let mut completion = Completion {
            srb_status: header.SrbStatus,
            scsi_status: 0,
            sense: [0; SENSE_CAPACITY as usize],
            sense_len: 0,
            transferred: header.DataTransferLength,
            polls,
            completed_in: outstanding.completed_in,
        };
        if request.function == u32::from(ffi::SRB_FUNCTION_EXECUTE_SCSI) {
            // SAFETY: as above; the CDB block lies at its offset inside the SRB block.
            let block = unsafe {
                self.srb_block
                    .start
                    .as_ptr()
                    .wrapping_add(CDB_BLOCK_OFFSET)
                    .cast::<ffi::SRBEX_DATA_SCSI_CDB16>()
                    .read()
            };
            completion.scsi_status = block.ScsiStatus;
            completion.sense_len = block.SenseInfoBufferLength.min(SENSE_CAPACITY);
            // SAFETY: the sense buffer lies inside the SRB block.
            let sense = unsafe {
                core::slice::from_raw_parts(
                    self.srb_block.start.as_ptr().wrapping_add(SENSE_OFFSET),
                    usize::from(SENSE_CAPACITY),
                )
            };
            completion.sense.copy_from_slice(sense);
        }
        Some(completion)
    }
}

/// Asks HwStorAdapterControl which control types it supports (ScsiQuerySupportedControlTypes,
/// as Storport does after HwStorFindAdapter); stop and restart are mandatory.
fn query_control_types(
    control: unsafe extern "C" fn(
        ffi::PVOID,
        ffi::SCSI_ADAPTER_CONTROL_TYPE,
        ffi::PVOID,
    ) -> ffi::SCSI_ADAPTER_CONTROL_STATUS,
    extension: *mut c_void,
) {
    const MAX: usize = ffi::ScsiAdapterControlMax as usize;
    #[repr(C)]
    struct List {
        max: u32,
        supported: [u8; MAX],
    }
    let mut list = List {
        max: MAX as u32,
        supported: [0; MAX],
    };
    // SAFETY: HwStorAdapterControl of the found adapter with a SCSI_SUPPORTED_CONTROL_TYPE_LIST
    // whose BOOLEAN array has MaxControlType entries.
    let status = call(Callback::AdapterControl, || unsafe {
        control(
            extension,
            ffi::ScsiQuerySupportedControlTypes,
            (&raw mut list).cast(),
        )
    });
    let mut types = [0u8; MAX];
    let mut n = 0;
    for (t, &s) in list.supported.iter().enumerate() {
        if s != 0 {
            types[n] = t as u8;
            n += 1;
        }
    }
    say!(
        "HwStorAdapterControl(ScsiQuerySupportedControlTypes) = {status}; supported {:?}",
        &types[..n]
    );
    let stop = list.supported[ffi::ScsiStopAdapter as usize] != 0;
    let restart = list.supported[ffi::ScsiRestartAdapter as usize] != 0;
    if status != ffi::ScsiAdapterControlSuccess || !stop || !restart {
        violation(format_args!(
            "ScsiStopAdapter and ScsiRestartAdapter are mandatory adapter-control types"
        ));
    }
}

/// Prints what HwStorFindAdapter configured and flags what a dump stack does not allow.
fn report_config(hw: &ffi::HW_INITIALIZATION_DATA, c: &ffi::PORT_CONFIGURATION_INFORMATION) {
    let uncached = with(|s| s.uncached_bytes);
    say!(
        "  config: MaximumTransferLength={:#x} NumberOfPhysicalBreaks={} AlignmentMask={:#x} ScatterGather={} Master={} Dma64BitAddresses={:#x}",
        c.MaximumTransferLength,
        c.NumberOfPhysicalBreaks,
        c.AlignmentMask,
        c.ScatterGather,
        c.Master,
        c.Dma64BitAddresses
    );
    say!(
        "  config: SynchronizationModel={} InterruptSynchronizationMode={} SrbType={} AddressType={} MaxNumberOfIO={} MaxIOsPerLun={} RequestedDumpBufferSize={}",
        c.SynchronizationModel,
        c.InterruptSynchronizationMode,
        c.SrbType,
        c.AddressType,
        c.MaxNumberOfIO,
        c.MaxIOsPerLun,
        c.RequestedDumpBufferSize
    );
    say!(
        "  memory: DeviceExtensionSize={} SrbExtensionSize={} uncached extension={}",
        hw.DeviceExtensionSize,
        hw.SrbExtensionSize,
        uncached.unwrap_or_default()
    );
    if let Some(n) = uncached
        && n > 32 * 1024
    {
        say!("  note: the uncached extension ({n} bytes) exceeds a crash dump's ~32 KiB budget");
    }
    if hw.DeviceExtensionSize > 32 * 1024 {
        say!(
            "  note: the device extension ({} bytes) exceeds a crash dump's ~32 KiB budget",
            hw.DeviceExtensionSize
        );
    }
    if c.HwMSInterruptRoutine.is_some() {
        violation(format_args!(
            "HwMSInterruptRoutine registered in dump mode (no MSI in a dump)"
        ));
    }
    if c.SrbType != ffi::SRB_TYPE_STORAGE_REQUEST_BLOCK {
        violation(format_args!(
            "SrbType {} is not SRB_TYPE_STORAGE_REQUEST_BLOCK",
            c.SrbType
        ));
    }
    if c.MaximumTransferLength == 0xFFFF_FFFF || c.NumberOfPhysicalBreaks == 0xFFFF_FFFF {
        violation(format_args!(
            "MaximumTransferLength / NumberOfPhysicalBreaks not set (SDV StorPortFindAdapter)"
        ));
    }
}

/// The scatter-gather list of the outstanding request (StorPortGetScatterGatherList): one
/// element per page the data buffer touches (identity mapping, so pages are contiguous but the
/// list does not merge them, like a real system with scattered pages).
pub fn scatter_gather(srb: usize) -> *mut ffi::STOR_SCATTER_GATHER_LIST {
    let (outstanding, sg) = with(|s| (s.outstanding, s.sg));
    let Some(sg) = sg else { return null_mut() };
    if outstanding.is_none_or(|o| o.srb != srb || o.completions > 0) {
        violation(format_args!(
            "StorPortGetScatterGatherList for an SRB the miniport does not own ({srb:#x})"
        ));
        return null_mut();
    }
    // SAFETY: `srb` is the outstanding request built by `build_srb`.
    let header = unsafe { (srb as *const ffi::STORAGE_REQUEST_BLOCK).read() };
    let Some(buffer) = NonNull::new(header.DataBuffer.cast::<u8>()) else {
        return null_mut();
    };
    let mut at = buffer.as_ptr() as u64;
    let mut left = u64::from(header.DataTransferLength);
    let list = sg.start.as_ptr().cast::<ffi::STOR_SCATTER_GATHER_LIST>();
    // SAFETY: the SG block holds the header and SG_CAPACITY elements, 8-aligned.
    let first = unsafe { (&raw mut (*list).List).cast::<ffi::STOR_SCATTER_GATHER_ELEMENT>() };
    let mut count = 0usize;
    while left > 0 && count < SG_CAPACITY {
        let page_left = memory::PAGE as u64 - (at % memory::PAGE as u64);
        let length = page_left.min(left);
        let element = ffi::STOR_SCATTER_GATHER_ELEMENT {
            PhysicalAddress: at as i64,
            Length: length as u32,
            Reserved: 0,
        };
        // SAFETY: `count < SG_CAPACITY`.
        unsafe { first.wrapping_add(count).write(element) };
        count += 1;
        at += length;
        left -= length;
    }
    // SAFETY: the header lies at the start of the SG block.
    unsafe {
        (*list).NumberOfElements = count as u32;
    }
    list
}
