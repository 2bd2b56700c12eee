//! Storage request blocks: the requests Storport hands the miniport.
//!
//! The miniport registers with `SrbTypeFlags = SRB_TYPE_FLAG_STORAGE_REQUEST_BLOCK`, so every
//! request is an SRB_EX: a `STORAGE_REQUEST_BLOCK` header (layouts.md), a device address
//! (`STOR_ADDR_BTL8`) at `AddressOffset`, and extended-data blocks at `SrbExDataOffset[i]` (the
//! CDB with its sense buffer in `SRBEX_DATA_SCSI_CDB16/32/VAR`, PnP and power details). [`Srb`]
//! is an owned handle: the miniport owns a request from HwStorStartIo until it completes it, and
//! [`Srb::complete`] consumes the handle, so completing twice does not compile (kernel
//! `Request::end_ok`). Every offset inside the SRB is validated against `SrbLength` before use.

use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU64;

use crate::dma::DmaRegion;
use crate::ffi;
use crate::miniport::header;
use crate::port::Port;

/// How a request ends (SRB_STATUS_*): the statuses a miniport completes a request with.
///
/// SRB_STATUS_PENDING (a request still in progress) is not one of them, so a request cannot be
/// handed back "pending". SRB_STATUS_AUTOSENSE_VALID is set by [`Srb::complete_check_condition`],
/// which copies the sense data it vouches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// SRB_STATUS_SUCCESS.
    Success,
    /// SRB_STATUS_ABORTED.
    Aborted,
    /// SRB_STATUS_ERROR (with a SCSI status, e.g. CHECK CONDITION).
    Error,
    /// SRB_STATUS_BUSY: Storport sends the request again later.
    Busy,
    /// SRB_STATUS_INVALID_REQUEST.
    InvalidRequest,
    /// SRB_STATUS_INVALID_PATH_ID.
    InvalidPathId,
    /// SRB_STATUS_NO_DEVICE.
    NoDevice,
    /// SRB_STATUS_TIMEOUT.
    Timeout,
    /// SRB_STATUS_SELECTION_TIMEOUT.
    SelectionTimeout,
    /// SRB_STATUS_COMMAND_TIMEOUT.
    CommandTimeout,
    /// SRB_STATUS_BUS_RESET: the request was ended by a reset.
    BusReset,
    /// SRB_STATUS_DATA_OVERRUN (also an underrun, with the length that moved).
    DataOverrun,
    /// SRB_STATUS_INVALID_LUN.
    InvalidLun,
    /// SRB_STATUS_INVALID_TARGET_ID.
    InvalidTargetId,
    /// SRB_STATUS_BAD_FUNCTION.
    BadFunction,
    /// SRB_STATUS_INTERNAL_ERROR.
    InternalError,
}

impl Status {
    /// The SRB_STATUS_* value.
    const fn to_raw(self) -> u8 {
        match self {
            Self::Success => ffi::SRB_STATUS_SUCCESS,
            Self::Aborted => ffi::SRB_STATUS_ABORTED,
            Self::Error => ffi::SRB_STATUS_ERROR,
            Self::Busy => ffi::SRB_STATUS_BUSY,
            Self::InvalidRequest => ffi::SRB_STATUS_INVALID_REQUEST,
            Self::InvalidPathId => ffi::SRB_STATUS_INVALID_PATH_ID,
            Self::NoDevice => ffi::SRB_STATUS_NO_DEVICE,
            Self::Timeout => ffi::SRB_STATUS_TIMEOUT,
            Self::SelectionTimeout => ffi::SRB_STATUS_SELECTION_TIMEOUT,
            Self::CommandTimeout => ffi::SRB_STATUS_COMMAND_TIMEOUT,
            Self::BusReset => ffi::SRB_STATUS_BUS_RESET,
            Self::DataOverrun => ffi::SRB_STATUS_DATA_OVERRUN,
            Self::InvalidLun => ffi::SRB_STATUS_INVALID_LUN,
            Self::InvalidTargetId => ffi::SRB_STATUS_INVALID_TARGET_ID,
            Self::BadFunction => ffi::SRB_STATUS_BAD_FUNCTION,
            Self::InternalError => ffi::SRB_STATUS_INTERNAL_ERROR,
        }
    }
}

/// The SCSI status byte of a request (SCSISTAT_*, SAM-5 5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScsiStatus {
    /// GOOD.
    Good,
    /// CHECK CONDITION: sense data describes the error.
    CheckCondition,
    /// BUSY.
    Busy,
    /// RESERVATION CONFLICT.
    ReservationConflict,
    /// TASK SET FULL (SCSISTAT_QUEUE_FULL).
    TaskSetFull,
}

impl ScsiStatus {
    const fn to_raw(self) -> u8 {
        match self {
            Self::Good => ffi::SCSISTAT_GOOD,
            Self::CheckCondition => ffi::SCSISTAT_CHECK_CONDITION,
            Self::Busy => ffi::SCSISTAT_BUSY,
            Self::ReservationConflict => ffi::SCSISTAT_RESERVATION_CONFLICT,
            Self::TaskSetFull => ffi::SCSISTAT_QUEUE_FULL,
        }
    }
}

/// What a request asks for (SRB_FUNCTION_*, the `SrbFunction` of an SRB_EX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// SRB_FUNCTION_EXECUTE_SCSI: a CDB.
    ExecuteScsi,
    /// SRB_FUNCTION_IO_CONTROL.
    IoControl,
    /// SRB_FUNCTION_SHUTDOWN: flush, the system is going down.
    Shutdown,
    /// SRB_FUNCTION_FLUSH.
    Flush,
    /// SRB_FUNCTION_ABORT_COMMAND.
    AbortCommand,
    /// SRB_FUNCTION_RESET_BUS.
    ResetBus,
    /// SRB_FUNCTION_RESET_DEVICE.
    ResetDevice,
    /// SRB_FUNCTION_WMI.
    Wmi,
    /// SRB_FUNCTION_RESET_LOGICAL_UNIT.
    ResetLogicalUnit,
    /// SRB_FUNCTION_POWER ([`Srb::power`]).
    Power,
    /// SRB_FUNCTION_PNP ([`Srb::pnp`]).
    Pnp,
    /// SRB_FUNCTION_DUMP_POINTERS.
    DumpPointers,
    /// SRB_FUNCTION_FREE_DUMP_POINTERS.
    FreeDumpPointers,
    /// Any other function code.
    Other(u32),
}

impl Function {
    fn from_raw(raw: u32) -> Self {
        let Ok(code) = u8::try_from(raw) else {
            return Self::Other(raw);
        };
        match code {
            ffi::SRB_FUNCTION_EXECUTE_SCSI => Self::ExecuteScsi,
            ffi::SRB_FUNCTION_IO_CONTROL => Self::IoControl,
            ffi::SRB_FUNCTION_SHUTDOWN => Self::Shutdown,
            ffi::SRB_FUNCTION_FLUSH => Self::Flush,
            ffi::SRB_FUNCTION_ABORT_COMMAND => Self::AbortCommand,
            ffi::SRB_FUNCTION_RESET_BUS => Self::ResetBus,
            ffi::SRB_FUNCTION_RESET_DEVICE => Self::ResetDevice,
            ffi::SRB_FUNCTION_WMI => Self::Wmi,
            ffi::SRB_FUNCTION_RESET_LOGICAL_UNIT => Self::ResetLogicalUnit,
            ffi::SRB_FUNCTION_POWER => Self::Power,
            ffi::SRB_FUNCTION_PNP => Self::Pnp,
            ffi::SRB_FUNCTION_DUMP_POINTERS => Self::DumpPointers,
            ffi::SRB_FUNCTION_FREE_DUMP_POINTERS => Self::FreeDumpPointers,
            _ => Self::Other(raw),
        }
    }
}

/// Proof that a request was completed (returned by [`Srb::complete`]).
#[must_use]
pub struct Completed {
    _private: (),
}

/// A request the miniport owns until it completes it.
///
/// # Invariants
///
/// `raw` points at an SRB_EX (`Function == SRB_FUNCTION_STORAGE_REQUEST_BLOCK`, signature
/// "SRBX") that Storport handed to this adapter and that has not been completed; `port` is that
/// adapter.
pub struct Srb {
    raw: NonNull<ffi::STORAGE_REQUEST_BLOCK>,
    port: Port,
}

// SAFETY: the miniport owns the request until completion; it may complete it on any CPU (a DPC,
// another StartIo), which Storport allows.
unsafe impl Send for Srb {}

/// The device address of a request (STOR_ADDR_BTL8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// Path (bus) id.
    pub path: u8,
    /// Target id.
    pub target: u8,
    /// Logical unit number.
    pub lun: u8,
}

/// PnP details of an SRB_FUNCTION_PNP request (SRBEX_DATA_PNP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PnpRequest {
    /// STOR_PNP_ACTION.
    pub action: u32,
    /// SRB_PNP_FLAGS_* (adapter request or unit request).
    pub flags: u32,
}

/// Power details of an SRB_FUNCTION_POWER request (SRBEX_DATA_POWER).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerRequest {
    /// STOR_DEVICE_POWER_STATE.
    pub device_state: u32,
    /// STOR_POWER_ACTION.
    pub action: u32,
    /// SRB_POWER_FLAGS_*.
    pub flags: u8,
}

impl PowerRequest {
    /// Whether the request takes the unit out of D0 (to D1, D2 or D3).
    pub fn leaves_d0(&self) -> bool {
        matches!(
            self.device_state,
            ffi::StorPowerDeviceD1 | ffi::StorPowerDeviceD2 | ffi::StorPowerDeviceD3
        )
    }
}

/// One element of a request's scatter-gather list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical (bus) address.
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
}

/// The SCSI extended-data block of a request (CDB, status, sense buffer), located once.
#[derive(Clone, Copy)]
enum ScsiBlock {
    Cdb16(NonNull<ffi::SRBEX_DATA_SCSI_CDB16>),
    Cdb32(NonNull<ffi::SRBEX_DATA_SCSI_CDB32>),
    None,
}

impl Srb {
    /// Makes a handle for the request Storport passed to a callback.
    ///
    /// Returns `None` for a NULL pointer or an SRB that is not an SRB_EX (which Storport never
    /// sends a miniport that registered for SRB_EX only).
    ///
    /// # Safety
    ///
    /// `srb` is NULL or the request Storport passed to HwStorBuildIo/HwStorStartIo of the adapter
    /// `port`, not yet completed, and the caller is entitled to own it.
    pub(crate) unsafe fn from_raw(srb: ffi::PSCSI_REQUEST_BLOCK, port: Port) -> Option<Srb> {
        let raw = NonNull::new(srb.cast::<ffi::STORAGE_REQUEST_BLOCK>())?;
        let r = raw.as_ptr();
        // SAFETY: a non-NULL request from Storport is at least the SRB header; Function (offset
        // 2) is inside the common prefix of both SRB kinds.
        let function = unsafe { (*r).Function };
        if function != ffi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK {
            return None;
        }
        // SAFETY: Function says this is an SRB_EX, whose header is 128 bytes.
        let signature = unsafe { (*r).Signature };
        // SAFETY: as above.
        let length = unsafe { (*r).SrbLength };
        if function != ffi::SRB_FUNCTION_STORAGE_REQUEST_BLOCK
            || signature != ffi::SRB_SIGNATURE
            || (length as usize) < core::mem::size_of::<ffi::STORAGE_REQUEST_BLOCK>()
        {
            return None;
        }
        // INVARIANT: checked above; ownership by this function's `# Safety`.
        Some(Srb { raw, port })
    }

    /// Gives up the handle without completing (the request went on to StartIo).
    pub(crate) fn forget(self) {}

    fn header(&self) -> &ffi::STORAGE_REQUEST_BLOCK {
        // SAFETY: by the type invariant the header is valid and owned by us.
        unsafe { self.raw.as_ref() }
    }

    fn header_mut(&mut self) -> &mut ffi::STORAGE_REQUEST_BLOCK {
        // SAFETY: by the type invariant the header is valid and exclusively ours.
        unsafe { self.raw.as_mut() }
    }

    /// A pointer to `size` bytes at `offset` inside the SRB, if they lie within `SrbLength`
    /// and after the header, suitably aligned for `T`.
    fn inner<T>(&self, offset: u32) -> Option<NonNull<T>> {
        let header = core::mem::size_of::<ffi::STORAGE_REQUEST_BLOCK>();
        let offset = offset as usize;
        let end = offset.checked_add(core::mem::size_of::<T>())?;
        if offset < header.saturating_sub(core::mem::size_of::<ffi::ULONG>())
            || end > self.header().SrbLength as usize
            || !offset.is_multiple_of(core::mem::align_of::<T>())
        {
            return None;
        }
        let ptr = self
            .raw
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<T>();
        NonNull::new(ptr)
    }

    /// The extended-data block at index `i` and its type.
    fn ex_data(&self, i: u32) -> Option<(ffi::SRBEXDATATYPE, u32)> {
        if i >= self.header().NumSrbExData {
            return None;
        }
        let slot = core::mem::offset_of!(ffi::STORAGE_REQUEST_BLOCK, SrbExDataOffset) as u32;
        let offset_ptr = self.inner_any::<ffi::ULONG>(slot.checked_add(i.checked_mul(4)?)?)?;
        // SAFETY: `inner_any` checked the ULONG lies inside the SRB.
        let offset = unsafe { offset_ptr.read() };
        let block = self.inner::<ffi::SRBEX_DATA>(offset)?;
        // SAFETY: `inner` checked the block header lies inside the SRB.
        let kind = unsafe { (*block.as_ptr()).Type };
        Some((kind, offset))
    }

    /// Like `inner`, but for the offset table, which starts inside the header.
    fn inner_any<T>(&self, offset: u32) -> Option<NonNull<T>> {
        let offset = offset as usize;
        let end = offset.checked_add(core::mem::size_of::<T>())?;
        if end > self.header().SrbLength as usize
            || !offset.is_multiple_of(core::mem::align_of::<T>())
        {
            return None;
        }
        NonNull::new(
            self.raw
                .as_ptr()
                .cast::<u8>()
                .wrapping_add(offset)
                .cast::<T>(),
        )
    }

    fn find_ex_data(&self, wanted: ffi::SRBEXDATATYPE) -> Option<u32> {
        let count = self.header().NumSrbExData.min(16);
        (0..count).find_map(|i| match self.ex_data(i) {
            Some((kind, offset)) if kind == wanted => Some(offset),
            _ => None,
        })
    }

    fn scsi_block(&self) -> ScsiBlock {
        // Storport puts the CDB block first: look there with one bounds check (the first
        // offset is inside the header `from_raw` checked), then search the others.
        let header = self.header();
        if header.NumSrbExData >= 1
            && let [offset] = header.SrbExDataOffset
            && let Some(p) = self.inner::<ffi::SRBEX_DATA_SCSI_CDB16>(offset)
        {
            // SAFETY: `inner` checked a CDB16 block's size lies inside the SRB; Type is its
            // first field, common to every SRBEX_DATA block.
            match unsafe { (*p.as_ptr()).Type } {
                ffi::SrbExDataTypeScsiCdb16 => return ScsiBlock::Cdb16(p),
                ffi::SrbExDataTypeScsiCdb32 => {
                    if let Some(p) = self.inner::<ffi::SRBEX_DATA_SCSI_CDB32>(offset) {
                        return ScsiBlock::Cdb32(p);
                    }
                }
                _ => {}
            }
        }
        let count = self.header().NumSrbExData.min(16);
        for i in 0..count {
            match self.ex_data(i) {
                Some((ffi::SrbExDataTypeScsiCdb16, offset)) => {
                    if let Some(p) = self.inner::<ffi::SRBEX_DATA_SCSI_CDB16>(offset) {
                        return ScsiBlock::Cdb16(p);
                    }
                }
                Some((ffi::SrbExDataTypeScsiCdb32, offset)) => {
                    if let Some(p) = self.inner::<ffi::SRBEX_DATA_SCSI_CDB32>(offset) {
                        return ScsiBlock::Cdb32(p);
                    }
                }
                _ => {}
            }
        }
        ScsiBlock::None
    }

    /// The SRB function (SRB_FUNCTION_*): EXECUTE_SCSI, FLUSH, RESET_*, PNP, POWER, ...
    pub fn function(&self) -> Function {
        Function::from_raw(self.header().SrbFunction)
    }

    /// The raw SRB_FUNCTION_* code (the fuzzing support reports it as read).
    #[cfg(feature = "test-utils")]
    pub(crate) fn function_code(&self) -> u32 {
        self.header().SrbFunction
    }

    /// SRB_FLAGS_*.
    pub fn flags(&self) -> u32 {
        self.header().SrbFlags
    }

    /// The request's timeout in seconds.
    pub fn timeout(&self) -> u32 {
        self.header().TimeOutValue
    }

    /// The device address (STOR_ADDR_BTL8), if present and well formed.
    pub fn address(&self) -> Option<Address> {
        let address = self.inner::<ffi::STOR_ADDR_BTL8>(self.header().AddressOffset)?;
        // SAFETY: `inner` checked the address lies inside the SRB.
        let a = unsafe { address.as_ptr().read() };
        if a.Type != ffi::STOR_ADDRESS_TYPE_BTL8 {
            return None;
        }
        Some(Address {
            path: a.Path,
            target: a.Target,
            lun: a.Lun,
        })
    }

    /// The CDB (empty when the request carries none).
    pub fn cdb(&self) -> &[u8] {
        match self.scsi_block() {
            ScsiBlock::Cdb16(p) => {
                // SAFETY: `scsi_block` checked the block lies inside the SRB, which we own.
                let block = unsafe { p.as_ref() };
                let len = usize::from(block.CdbLength).min(block.Cdb.len());
                block.Cdb.get(..len).unwrap_or(&[])
            }
            ScsiBlock::Cdb32(p) => {
                // SAFETY: as above.
                let block = unsafe { p.as_ref() };
                let len = usize::from(block.CdbLength).min(block.Cdb.len());
                block.Cdb.get(..len).unwrap_or(&[])
            }
            ScsiBlock::None => &[],
        }
    }

    /// The CDB's length and its first 16 bytes, copied out by value with one look-up of the
    /// CDB block: what a fast path for READ and WRITE decodes before the general decoder takes
    /// [`Srb::cdb`]. Bytes at and past the length are the block's own, not the command's;
    /// `(0, _)` when the request carries no CDB.
    pub fn cdb_head(&self) -> (usize, [u8; 16]) {
        match self.scsi_block() {
            ScsiBlock::Cdb16(p) => {
                // SAFETY: `scsi_block` checked the block lies inside the SRB, which we own.
                let block = unsafe { p.as_ref() };
                (usize::from(block.CdbLength).min(16), block.Cdb)
            }
            ScsiBlock::Cdb32(p) => {
                // SAFETY: as above.
                let block = unsafe { p.as_ref() };
                let mut head = [0u8; 16];
                for (dst, src) in head.iter_mut().zip(block.Cdb.iter()) {
                    *dst = *src;
                }
                (usize::from(block.CdbLength).min(block.Cdb.len()), head)
            }
            ScsiBlock::None => (0, [0; 16]),
        }
    }

    /// Sets the SCSI status byte.
    pub fn set_scsi_status(&mut self, status: ScsiStatus) {
        let status = status.to_raw();
        match self.scsi_block() {
            // SAFETY: `scsi_block` checked the block lies inside the SRB, which we own.
            ScsiBlock::Cdb16(mut p) => unsafe { p.as_mut().ScsiStatus = status },
            // SAFETY: as above.
            ScsiBlock::Cdb32(mut p) => unsafe { p.as_mut().ScsiStatus = status },
            ScsiBlock::None => {}
        }
    }

    /// Copies sense data into the request's sense buffer (truncated to its size) and records
    /// how much was copied. Returns the number of bytes copied: 0 when the request has no sense
    /// buffer or SRB_FLAGS_DISABLE_AUTOSENSE is set.
    pub fn write_sense(&mut self, sense: &[u8]) -> usize {
        if self.flags() & ffi::SRB_FLAGS_DISABLE_AUTOSENSE != 0 {
            return 0;
        }
        let (buffer, capacity, length_field): (*mut c_void, u8, *mut u8) = match self.scsi_block() {
            ScsiBlock::Cdb16(mut p) => {
                // SAFETY: `scsi_block` checked the block lies inside the SRB, which we own.
                let b = unsafe { p.as_mut() };
                (
                    b.SenseInfoBuffer,
                    b.SenseInfoBufferLength,
                    &raw mut b.SenseInfoBufferLength,
                )
            }
            ScsiBlock::Cdb32(mut p) => {
                // SAFETY: as above.
                let b = unsafe { p.as_mut() };
                (
                    b.SenseInfoBuffer,
                    b.SenseInfoBufferLength,
                    &raw mut b.SenseInfoBufferLength,
                )
            }
            ScsiBlock::None => return 0,
        };
        if buffer.is_null() {
            return 0;
        }
        let count = sense.len().min(usize::from(capacity));
        // SAFETY: the class driver's sense buffer holds SenseInfoBufferLength bytes and is ours
        // until completion; `count` does not exceed it.
        unsafe { core::ptr::copy_nonoverlapping(sense.as_ptr(), buffer.cast::<u8>(), count) };
        // SAFETY: `length_field` points into the block checked above. `count <= capacity <= 255`.
        unsafe { length_field.write(count as u8) };
        count
    }

    /// Bytes to transfer (or transferred, once set).
    pub fn data_transfer_length(&self) -> u32 {
        self.header().DataTransferLength
    }

    /// Records how many bytes moved (an underrun is reported with SRB_STATUS_DATA_OVERRUN).
    pub fn set_data_transfer_length(&mut self, length: u32) {
        self.header_mut().DataTransferLength = length;
    }

    /// The data buffer through its system virtual address.
    ///
    /// Only for requests whose buffer Storport maps, as [`Miniport::MAP_BUFFERS`] chose:
    /// STOR_MAP_NON_READ_WRITE_BUFFERS (the default) maps everything but READ and WRITE;
    /// STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE maps every buffer (a miniport that copies data
    /// itself, like the RAM disk of `examples/ramdisk`). `None` when the request has no buffer.
    ///
    /// [`Miniport::MAP_BUFFERS`]: crate::Miniport::MAP_BUFFERS
    pub fn data_buffer(&mut self) -> Option<&mut [u8]> {
        let header = self.header();
        let buffer = header.DataBuffer.cast::<u8>();
        let length = header.DataTransferLength as usize;
        if buffer.is_null() || length == 0 {
            return None;
        }
        // SAFETY: Storport maps the buffer of the requests MapBuffers names into system space for
        // DataTransferLength bytes, and it is ours until completion (the `&mut self` borrow keeps
        // it unique).
        Some(unsafe { core::slice::from_raw_parts_mut(buffer, length) })
    }

    /// The data buffer through its system virtual address, to read (the parameter list of an
    /// UNMAP or MODE SELECT, the block of a WRITE SAME), under the rules of
    /// [`Srb::data_buffer`]. Reading needs only `&self`, so it can be done while a view of the
    /// SRB extension is alive.
    pub fn data(&self) -> Option<&[u8]> {
        let header = self.header();
        let buffer = header.DataBuffer.cast::<u8>().cast_const();
        let length = header.DataTransferLength as usize;
        if buffer.is_null() || length == 0 {
            return None;
        }
        // SAFETY: as in `data_buffer`; the shared borrow of `self` excludes the unique one
        // `data_buffer` takes, so no `&mut` to the same bytes exists meanwhile.
        Some(unsafe { core::slice::from_raw_parts(buffer, length) })
    }

    /// The request's scatter-gather list (physical segments of its data buffer).
    pub fn scatter_gather(&self) -> Option<impl ExactSizeIterator<Item = Segment> + '_> {
        // SAFETY: StorPortGetScatterGatherList takes the adapter and one of its requests.
        let list = unsafe {
            ffi::StorPortGetScatterGatherList(self.port.extension(), self.raw.as_ptr().cast())
        };
        let list = NonNull::new(list)?;
        // SAFETY: Storport's list is valid until the request completes.
        let count = unsafe { (*list.as_ptr()).NumberOfElements } as usize;
        // SAFETY: the element array follows the header with NumberOfElements entries.
        let first =
            unsafe { (&raw mut (*list.as_ptr()).List).cast::<ffi::STOR_SCATTER_GATHER_ELEMENT>() };
        Some((0..count).map(move |i| {
            // SAFETY: `i < NumberOfElements`.
            let element = unsafe { first.wrapping_add(i).read() };
            Segment {
                address: element.PhysicalAddress as u64,
                length: element.Length,
            }
        }))
    }

    /// The request's SRB extension (`SrbExtensionSize` bytes of DMA-able memory), fresh on
    /// every dispatch.
    ///
    /// The view borrows the request: the extension is Storport's memory only until the request
    /// completes, and [`Srb::complete`] consumes the handle, so no view outlives the request
    /// (`tests/compile_fail/extension_after_complete.rs`). A driver that keeps a request in
    /// flight keeps the `Srb` and takes the view again when it needs it.
    pub fn extension(&self) -> Option<DmaRegion<'_>> {
        let va = NonNull::new(self.header().MiniportContext.cast::<u8>())?;
        let size = header(&self.port)
            .srb_extension_size
            .load(core::sync::atomic::Ordering::Relaxed);
        let mut length: ffi::ULONG = 0;
        // SAFETY: StorPortGetPhysicalAddress translates an address of this request's extension.
        let phys = unsafe {
            ffi::StorPortGetPhysicalAddress(
                self.port.extension(),
                self.raw.as_ptr().cast(),
                va.as_ptr().cast(),
                &mut length,
            )
        };
        if length < size {
            return None;
        }
        // SAFETY: the SRB extension is SrbExtensionSize bytes of physically contiguous DMA-able
        // memory (checked by the length Storport reported), valid until the request completes;
        // the region borrows `self`, and completing consumes `self`, so it ends before that.
        Some(unsafe { DmaRegion::new(va, phys as u64, size as usize) })
    }

    /// The request's SRB extension as CPU memory only, in 64-bit words: what the miniport or
    /// the device wrote there, read back without the StorPortGetPhysicalAddress call
    /// [`Srb::extension`] makes for the bus address (a completion reads a status byte and a
    /// word of its own, and needs no address to tell the device).
    ///
    /// Borrowed from the request like [`Srb::extension`], so it ends before the request
    /// completes (`tests/compile_fail/extension_memory_after_complete.rs`). `None` when the
    /// request has no extension or it is not 8-aligned.
    pub fn extension_memory(&self) -> Option<&[AtomicU64]> {
        let va = NonNull::new(self.header().MiniportContext.cast::<AtomicU64>())?;
        if !(va.as_ptr() as usize).is_multiple_of(core::mem::align_of::<AtomicU64>()) {
            return None;
        }
        let size = header(&self.port)
            .srb_extension_size
            .load(core::sync::atomic::Ordering::Relaxed) as usize;
        // SAFETY: Storport's SRB extension is SrbExtensionSize bytes at MiniportContext, valid
        // until the request completes; the slice borrows `self`, and completing consumes `self`,
        // so it ends before that. The start is 8-aligned (checked above); AtomicU64 accepts
        // every bit pattern and every access through it is atomic, as the device writes too.
        Some(unsafe { core::slice::from_raw_parts(va.as_ptr(), size / 8) })
    }

    /// PnP details, for SRB_FUNCTION_PNP.
    pub fn pnp(&self) -> Option<PnpRequest> {
        let offset = self.find_ex_data(ffi::SrbExDataTypePnP)?;
        let block = self.inner::<ffi::SRBEX_DATA_PNP>(offset)?;
        // SAFETY: `inner` checked the block lies inside the SRB.
        let b = unsafe { block.as_ptr().read() };
        Some(PnpRequest {
            action: b.PnPAction,
            flags: b.SrbPnPFlags,
        })
    }

    /// Power details, for SRB_FUNCTION_POWER.
    pub fn power(&self) -> Option<PowerRequest> {
        let offset = self.find_ex_data(ffi::SrbExDataTypePower)?;
        let block = self.inner::<ffi::SRBEX_DATA_POWER>(offset)?;
        // SAFETY: `inner` checked the block lies inside the SRB.
        let b = unsafe { block.as_ptr().read() };
        Some(PowerRequest {
            device_state: b.DevicePowerState,
            action: b.PowerAction,
            flags: b.SrbPowerFlags,
        })
    }

    /// For SRB_FUNCTION_DUMP_POINTERS: the `MINIPORT_DUMP_POINTERS` to answer, or `None` when the
    /// request is another function or its buffer cannot hold the structure.
    pub fn dump_pointers(&mut self) -> Option<crate::dump::DumpPointers<'_>> {
        if self.function() != Function::DumpPointers {
            return None;
        }
        let header = self.header();
        let buffer = header.DataBuffer.cast::<ffi::MINIPORT_DUMP_POINTERS>();
        if buffer.is_null()
            || !buffer.is_aligned()
            || (header.DataTransferLength as usize)
                < core::mem::size_of::<ffi::MINIPORT_DUMP_POINTERS>()
        {
            return None;
        }
        // SAFETY: for SRB_FUNCTION_DUMP_POINTERS Storport's data buffer is a system-space
        // MINIPORT_DUMP_POINTERS (the DDI page of the structure), checked above to be aligned and
        // large enough, and ours until completion (the `&mut self` borrow keeps it unique).
        Some(unsafe { crate::dump::DumpPointers::new(buffer) })
    }

    /// The adapter this request belongs to.
    pub fn port(&self) -> Port {
        self.port
    }

    /// The raw pointer, for Storport calls that name a request.
    pub(crate) fn as_raw(&self) -> ffi::PSCSI_REQUEST_BLOCK {
        self.raw.as_ptr().cast()
    }

    /// Completes the request with `status` and gives it back to Storport.
    pub fn complete(self, status: Status) -> Completed {
        self.complete_raw(status.to_raw())
    }

    /// Completes the request with CHECK CONDITION and `sense` (fixed or descriptor format sense
    /// data): SRB_STATUS_ERROR, with SRB_STATUS_AUTOSENSE_VALID when the sense data was copied
    /// into the request's sense buffer (not when it has none, or SRB_FLAGS_DISABLE_AUTOSENSE).
    pub fn complete_check_condition(mut self, sense: &[u8]) -> Completed {
        self.set_scsi_status(ScsiStatus::CheckCondition);
        let copied = self.write_sense(sense);
        let status = if copied > 0 {
            ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID
        } else {
            ffi::SRB_STATUS_ERROR
        };
        self.complete_raw(status)
    }

    /// Writes SRB_STATUS_* (never PENDING: [`Status`] has none) and notifies RequestComplete.
    fn complete_raw(mut self, status: u8) -> Completed {
        self.header_mut().SrbStatus = status;
        // SAFETY: RequestComplete takes the adapter and a request it owns; the handle is consumed,
        // so the request cannot be completed or touched again through it.
        unsafe {
            ffi::StorPortNotification(
                ffi::RequestComplete,
                self.port.extension(),
                self.raw.as_ptr(),
            )
        };
        Completed { _private: () }
    }
}

/// Requests a miniport keeps in flight, by index (a ring's request id), at one word each.
///
/// A queue of requests on a device holds many `Srb`s; each names its adapter, which is the same
/// for all of them. The table keeps that adapter once and each request as its SRB pointer only,
/// so a slot is 8 bytes (`Option<Srb>` is 16). It owns what it holds as an [`Srb`] does: a
/// request goes in as an `Srb` and comes out as one, so it is completed at most once, and nothing
/// reachable outside the table names a request inside it.
///
/// # Invariants
///
/// Every `Some` slot holds the SRB pointer of an [`Srb`] that was moved into the table (its
/// invariant holding with `port`), and `port` is `Some` whenever a slot is.
pub struct SrbTable<const N: usize> {
    port: Option<Port>,
    srbs: [Option<NonNull<ffi::STORAGE_REQUEST_BLOCK>>; N],
}

// SAFETY: the table owns the requests it holds, as `Srb` (which is Send) does.
unsafe impl<const N: usize> Send for SrbTable<N> {}

impl<const N: usize> SrbTable<N> {
    /// A table with every slot free.
    pub const EMPTY: Self = Self {
        port: None,
        srbs: [None; N],
    };

    /// Puts `srb` in slot `index`. Gives it back when the index is out of range, the slot is
    /// taken, or the request belongs to another adapter than those already in the table.
    #[inline]
    pub fn insert(&mut self, index: usize, srb: Srb) -> Result<(), Srb> {
        match self.port {
            Some(port) if port != srb.port => return Err(srb),
            _ => {}
        }
        match self.srbs.get_mut(index) {
            Some(slot @ None) => {
                // INVARIANT: the pointer comes from an `Srb` moved in here, whose port is now
                // the table's (the same, by the check above).
                *slot = Some(srb.raw);
                self.port = Some(srb.port);
                Ok(())
            }
            _ => Err(srb),
        }
    }

    /// Takes the request out of slot `index`, if one is there.
    #[inline]
    pub fn take(&mut self, index: usize) -> Option<Srb> {
        let raw = self.srbs.get_mut(index)?.take()?;
        // INVARIANT (of the Srb): the pointer was an `Srb`'s with this port (the table's
        // invariant), and taking it out of the slot hands its ownership back.
        Some(Srb {
            raw,
            port: self.port?,
        })
    }

    /// Whether slot `index` holds a request.
    pub fn is_taken(&self, index: usize) -> bool {
        self.srbs.get(index).is_some_and(Option::is_some)
    }
}
