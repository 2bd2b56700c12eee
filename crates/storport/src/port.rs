//! The adapter as Storport knows it: a handle for the StorPort* calls that name the adapter.
//!
//! Most Storport routines take `HwDeviceExtension` first: it is how storport.sys finds the
//! adapter. [`Port`] wraps that pointer; the miniport receives it in HwStorFindAdapter and keeps
//! it (lock cells and DMA views store it too).

use core::ffi::c_void;
use core::ptr::NonNull;

/// A handle to one adapter: its device extension, as Storport knows it.
///
/// # Invariants
///
/// `extension` is the HwDeviceExtension Storport allocated for this adapter; it stays valid
/// for as long as the miniport can run (Storport frees it only after the last callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    extension: NonNull<c_void>,
}

// SAFETY: the handle is only an address Storport uses to find the adapter; Storport routines may
// be called with it from any CPU (each routine's own IRQL and lock rules are enforced by the
// context tokens).
unsafe impl Send for Port {}
// SAFETY: as for Send.
unsafe impl Sync for Port {}

impl Port {
    /// Makes a handle.
    ///
    /// # Safety
    ///
    /// `extension` is the HwDeviceExtension Storport passed to a callback of this adapter.
    #[allow(dead_code, reason = "used by trampolines")]
    pub(crate) unsafe fn new(extension: NonNull<c_void>) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { extension }
    }

    /// The HwDeviceExtension pointer, for FFI calls.
    pub(crate) fn extension(&self) -> *mut c_void {
        self.extension.as_ptr()
    }
}

use crate::ffi;
use crate::srb::{Address, Srb};

/// One MSI or MSI-X message Storport connected (MESSAGE_INTERRUPT_INFORMATION).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageInfo {
    /// Message id (0-based).
    pub id: u32,
    /// The message's data value.
    pub data: u32,
    /// The address the device writes the message to.
    pub address: u64,
}

impl Port {
    /// The MSI/MSI-X message `id`, if Storport connected that many messages
    /// (StorPortGetMSIInfo). Miniports count their messages by asking for 0, 1, ... until this
    /// answers `None`.
    pub fn message_info(&self, id: u32) -> Option<MessageInfo> {
        let mut info = ffi::MESSAGE_INTERRUPT_INFORMATION::zeroed();
        // SAFETY: GetMessageInterruptInformation takes (ULONG MessageId,
        // MESSAGE_INTERRUPT_INFORMATION*) after the extension (layouts.md); `info` outlives it.
        let status = unsafe {
            ffi::StorPortExtendedFunction(
                ffi::ExtFunctionGetMessageInterruptInformation,
                self.extension(),
                id,
                &mut info as *mut ffi::MESSAGE_INTERRUPT_INFORMATION,
            )
        };
        (status == ffi::STOR_STATUS_SUCCESS).then_some(MessageInfo {
            id: info.MessageId,
            data: info.MessageData,
            address: info.MessageAddress as u64,
        })
    }

    /// Tells Storport to hold new requests until `requests_to_complete` more have completed
    /// (StorPortBusy): the adapter's queues are full.
    pub fn busy(&self, requests_to_complete: u32) -> bool {
        // SAFETY: StorPortBusy takes the adapter and a count.
        unsafe { ffi::StorPortBusy(self.extension(), requests_to_complete) != 0 }
    }

    /// Lifts [`Port::busy`] (StorPortReady).
    pub fn ready(&self) -> bool {
        // SAFETY: StorPortReady takes the adapter.
        unsafe { ffi::StorPortReady(self.extension()) != 0 }
    }

    /// Holds requests for one logical unit until `requests_to_complete` of its requests complete
    /// (StorPortDeviceBusy).
    pub fn device_busy(&self, address: Address, requests_to_complete: u32) -> bool {
        // SAFETY: StorPortDeviceBusy takes the adapter, a BTL address and a count.
        unsafe {
            ffi::StorPortDeviceBusy(
                self.extension(),
                address.path,
                address.target,
                address.lun,
                requests_to_complete,
            ) != 0
        }
    }

    /// Lifts [`Port::device_busy`] (StorPortDeviceReady).
    pub fn device_ready(&self, address: Address) -> bool {
        // SAFETY: StorPortDeviceReady takes the adapter and a BTL address.
        unsafe {
            ffi::StorPortDeviceReady(self.extension(), address.path, address.target, address.lun)
                != 0
        }
    }

    /// Stops Storport sending requests for up to `seconds` (StorPortPause).
    pub fn pause(&self, seconds: u32) -> bool {
        // SAFETY: StorPortPause takes the adapter and a timeout.
        unsafe { ffi::StorPortPause(self.extension(), seconds) != 0 }
    }

    /// Lifts [`Port::pause`] (StorPortResume).
    pub fn resume(&self) -> bool {
        // SAFETY: StorPortResume takes the adapter.
        unsafe { ffi::StorPortResume(self.extension()) != 0 }
    }

    /// Reports that the adapter reset bus `path_id` (ResetDetected notification).
    pub fn notify_reset_detected(&self, path_id: u8) {
        // SAFETY: ResetDetected takes a UCHAR PathId (promoted to int) after the extension.
        unsafe {
            ffi::StorPortNotification(ffi::ResetDetected, self.extension(), u32::from(path_id))
        };
    }

    /// Sets or clears Bus Master Enable (bit 2 of the PCI command register) of the adapter's PCI
    /// function (StorPortGetBusData, StorPortSetBusDataByOffset). Cleared, the function can no
    /// longer read or write memory (PCI 3.0 6.2.2): what a miniport does when a device does not
    /// stop on its own. Returns whether the write was accepted.
    pub fn set_bus_master(&self, enabled: bool) -> bool {
        const COMMAND: u32 = 4;
        const BUS_MASTER: u16 = 1 << 2;
        let header = crate::miniport::header(self);
        let bus = header.pci_bus.load(core::sync::atomic::Ordering::Relaxed);
        let slot = header.pci_slot.load(core::sync::atomic::Ordering::Relaxed);
        // Vendor ID, device ID and the command register: all that is needed, all that is read.
        let mut config = [0u8; 6];
        // SAFETY: `config` is valid for its length; bus and slot are the adapter's own, recorded
        // by the FindAdapter trampoline.
        let read = unsafe {
            ffi::StorPortGetBusData(
                self.extension(),
                ffi::PCIConfiguration,
                bus,
                slot,
                config.as_mut_ptr().cast(),
                config.len() as u32,
            )
        };
        if (read as usize) < config.len() {
            return false;
        }
        let command = u16::from_le_bytes([config[4], config[5]]);
        let command = if enabled {
            command | BUS_MASTER
        } else {
            command & !BUS_MASTER
        };
        let mut bytes = command.to_le_bytes();
        // SAFETY: `bytes` is valid for 2 bytes; the command register is at offset 4.
        let written = unsafe {
            ffi::StorPortSetBusDataByOffset(
                self.extension(),
                ffi::PCIConfiguration,
                bus,
                slot,
                bytes.as_mut_ptr().cast(),
                COMMAND,
                2,
            )
        };
        written == 2
    }

    /// Asks Storport to re-enumerate the bus (BusChangeDetected notification).
    pub fn notify_bus_change(&self, path_id: u8) {
        // SAFETY: BusChangeDetected takes a UCHAR PathId (promoted to int) after the extension.
        unsafe {
            ffi::StorPortNotification(ffi::BusChangeDetected, self.extension(), u32::from(path_id))
        };
    }

    /// Busy-waits `microseconds` (StorPortStallExecution). Storport verification flags stalls
    /// over 0.1 s; keep them short.
    pub fn stall(&self, microseconds: u32) {
        // SAFETY: StorPortStallExecution takes a delay.
        unsafe { ffi::StorPortStallExecution(microseconds) };
    }

    /// Prints `message` to the debugger at `level` (StorPortDebugPrint); at most 127 bytes.
    pub fn debug_print(&self, level: u32, message: &str) {
        let mut buffer = [0u8; 128];
        let len = message.len().min(buffer.len() - 1);
        if let (Some(dst), Some(src)) = (buffer.get_mut(..len), message.as_bytes().get(..len)) {
            dst.copy_from_slice(src);
        }
        // SAFETY: "%s" with a NUL-terminated buffer that outlives the call.
        unsafe { ffi::StorPortDebugPrint(level, c"%s".as_ptr(), buffer.as_ptr()) };
    }

    /// Writes an entry to the system event log (StorPortLogError).
    pub fn log_error(&self, srb: Option<&Srb>, error_code: u32, unique_id: u32) {
        let (raw, address) = match srb {
            Some(srb) => (
                srb.as_raw(),
                srb.address().unwrap_or(Address {
                    path: 0,
                    target: 0,
                    lun: 0,
                }),
            ),
            None => (
                core::ptr::null_mut(),
                Address {
                    path: 0,
                    target: 0,
                    lun: 0,
                },
            ),
        };
        // SAFETY: StorPortLogError takes the adapter, an optional request of it, a BTL address
        // and two codes.
        unsafe {
            ffi::StorPortLogError(
                self.extension(),
                raw,
                address.path,
                address.target,
                address.lun,
                error_code,
                unique_id,
            )
        };
    }
}
