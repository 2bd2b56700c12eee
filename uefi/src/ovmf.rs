//! Taking the device away from OVMF's own virtio driver.
//!
//! OVMF binds its virtio-blk driver to the device when it considers booting from it. Opening the
//! device's EFI_PCI_IO_PROTOCOL exclusively makes the firmware disconnect every driver that holds
//! it (which resets the device) and keeps them off while the application runs. The uefi crate
//! has no wrapper for the protocol, so the one routine needed, GetLocation (function slot 14:
//! PollMem, PollIo, Mem.Read/Write, Io.Read/Write, Pci.Read/Write, CopyMem, Map, Unmap,
//! AllocateBuffer, FreeBuffer, Flush, GetLocation), is declared here by hand.

use uefi::boot::{self, OpenProtocolAttributes, OpenProtocolParams, SearchType};
use uefi::proto::unsafe_protocol;
use uefi::{Identify, Status};

use crate::pci::Location;
use crate::say;

/// EFI_PCI_IO_PROTOCOL, up to GetLocation.
#[repr(C)]
#[unsafe_protocol("4cf5b200-68b8-4ca5-9eec-b23e3f50029a")]
pub struct PciIo {
    before: [usize; 14],
    get_location: unsafe extern "efiapi" fn(
        *mut PciIo,
        *mut usize,
        *mut usize,
        *mut usize,
        *mut usize,
    ) -> Status,
}

impl PciIo {
    fn location(&mut self) -> Option<Location> {
        let (mut segment, mut bus, mut device, mut function) = (0, 0, 0, 0);
        // SAFETY: GetLocation of a PCI I/O protocol instance the firmware gave us, with four
        // writable UINTN out-parameters.
        let status = unsafe {
            (self.get_location)(self, &mut segment, &mut bus, &mut device, &mut function)
        };
        (status.is_success() && segment == 0).then_some(Location {
            bus: u8::try_from(bus).ok()?,
            device: u8::try_from(device).ok()?,
            function: u8::try_from(function).ok()?,
        })
    }
}

/// Opens the PCI I/O protocol of the function at `at` exclusively and keeps it open for the
/// rest of the run, so that no firmware driver drives the device meanwhile.
pub fn detach(at: Location) {
    let Ok(handles) = boot::locate_handle_buffer(SearchType::ByProtocol(&PciIo::GUID)) else {
        say!("ovmf: no PCI I/O handles (nothing to detach)");
        return;
    };
    for &handle in handles.iter() {
        let params = OpenProtocolParams {
            handle,
            agent: boot::image_handle(),
            controller: None,
        };
        // SAFETY: GetProtocol does not take ownership; the interface is only used for
        // GetLocation while the handle exists.
        let Ok(mut probe) =
            (unsafe { boot::open_protocol::<PciIo>(params, OpenProtocolAttributes::GetProtocol) })
        else {
            continue;
        };
        let location = probe.location();
        drop(probe);
        if location != Some(at) {
            continue;
        }
        match boot::open_protocol_exclusive::<PciIo>(handle) {
            Ok(exclusive) => {
                say!(
                    "ovmf: PCI I/O of {:02x}:{:02x}.{} opened exclusively (firmware drivers disconnected)",
                    at.bus,
                    at.device,
                    at.function
                );
                // Never closed: the firmware must not reconnect its driver during the run.
                core::mem::forget(exclusive);
            }
            Err(e) => say!(
                "ovmf: exclusive open of the device's PCI I/O failed: {:?}",
                e.status()
            ),
        }
        return;
    }
    say!(
        "ovmf: no PCI I/O handle at {:02x}:{:02x}.{}",
        at.bus,
        at.device,
        at.function
    );
}
