//! PCI configuration space through ports 0xCF8/0xCFC (configuration mechanism #1), the scan for
//! the virtio-blk device, and BAR sizing.

use crate::io::{inb, inl, inw, outb, outl, outw};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// The virtio vendor id.
pub const VIRTIO_VENDOR: u16 = 0x1AF4;
/// virtio-blk, modern (virtio 1.x, PCI device id 0x1040 + 2).
pub const VIRTIO_BLK_MODERN: u16 = 0x1042;
/// virtio-blk, transitional (legacy id).
pub const VIRTIO_BLK_TRANSITIONAL: u16 = 0x1001;

/// Command register bits (PCI 3.0 6.2.2).
pub const COMMAND_IO: u16 = 1 << 0;
/// Memory space decoding.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Bus mastering (the device may DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;

/// A PCI function's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl Location {
    /// The Windows PCI_SLOT_NUMBER of this function: device in bits 0..5, function in 5..8.
    pub fn slot_number(self) -> u32 {
        u32::from(self.device & 0x1F) | (u32::from(self.function & 7) << 5)
    }

    /// The function at `bus` and PCI_SLOT_NUMBER `slot`.
    pub fn from_slot(bus: u32, slot: u32) -> Option<Location> {
        Some(Location {
            bus: u8::try_from(bus).ok()?,
            device: (slot & 0x1F) as u8,
            function: ((slot >> 5) & 7) as u8,
        })
    }

    /// Parses the `BB:DD.F` form (hexadecimal bus and device, as lspci and QEMU's `addr=` write
    /// them).
    pub fn parse(text: &str) -> Option<Location> {
        let (bus, rest) = text.split_once(':')?;
        let (device, function) = rest.split_once('.')?;
        let device = u8::from_str_radix(device, 16).ok().filter(|d| *d < 32)?;
        let function = function.parse().ok().filter(|f| *f < 8)?;
        Some(Location {
            bus: u8::from_str_radix(bus, 16).ok()?,
            device,
            function,
        })
    }

    fn address(self, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(self.bus) << 16)
            | (u32::from(self.device & 0x1F) << 11)
            | (u32::from(self.function & 7) << 8)
            | u32::from(offset & 0xFC)
    }

    /// Reads the configuration byte at `offset`.
    pub fn read8(self, offset: u8) -> u8 {
        outl(CONFIG_ADDRESS, self.address(offset));
        inb(CONFIG_DATA + u16::from(offset & 3))
    }

    /// Reads the configuration word at `offset` (2-aligned).
    pub fn read16(self, offset: u8) -> u16 {
        outl(CONFIG_ADDRESS, self.address(offset));
        inw(CONFIG_DATA + u16::from(offset & 2))
    }

    /// Reads the configuration dword at `offset` (4-aligned).
    pub fn read32(self, offset: u8) -> u32 {
        outl(CONFIG_ADDRESS, self.address(offset));
        inl(CONFIG_DATA)
    }

    /// Writes the configuration byte at `offset`.
    pub fn write8(self, offset: u8, value: u8) {
        outl(CONFIG_ADDRESS, self.address(offset));
        outb(CONFIG_DATA + u16::from(offset & 3), value);
    }

    /// Writes the configuration word at `offset` (2-aligned).
    pub fn write16(self, offset: u8, value: u16) {
        outl(CONFIG_ADDRESS, self.address(offset));
        outw(CONFIG_DATA + u16::from(offset & 2), value);
    }

    /// Writes the configuration dword at `offset` (4-aligned).
    pub fn write32(self, offset: u8, value: u32) {
        outl(CONFIG_ADDRESS, self.address(offset));
        outl(CONFIG_DATA, value);
    }

    /// Vendor id (0xFFFF: no function here).
    pub fn vendor(self) -> u16 {
        self.read16(0)
    }

    /// Device id.
    pub fn device_id(self) -> u16 {
        self.read16(2)
    }
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// A virtio-blk PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub at: Location,
    /// Its device id (modern or transitional).
    pub id: u16,
}

/// Finds the virtio-blk functions on buses `0..=last_bus`, in bus, device, function order: the
/// first `found.len()` of them go into `found`; returns how many there are in all.
pub fn find_virtio_blk(last_bus: u8, found: &mut [Option<Function>]) -> usize {
    let mut count = 0;
    for bus in 0..=last_bus {
        for device in 0..32u8 {
            let first = Location {
                bus,
                device,
                function: 0,
            };
            if first.vendor() == 0xFFFF {
                continue;
            }
            // Header type bit 7: a multi-function device.
            let functions = if first.read8(0x0E) & 0x80 != 0 { 8 } else { 1 };
            for function in 0..functions {
                let at = Location {
                    bus,
                    device,
                    function,
                };
                if at.vendor() != VIRTIO_VENDOR {
                    continue;
                }
                let id = at.device_id();
                if id == VIRTIO_BLK_MODERN || id == VIRTIO_BLK_TRANSITIONAL {
                    if let Some(slot) = found.get_mut(count) {
                        *slot = Some(Function { at, id });
                    }
                    count += 1;
                }
            }
        }
    }
    count
}

/// One implemented base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (0..6); a 64-bit BAR uses this index and the next.
    pub index: u8,
    /// Bus address.
    pub address: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
    /// Memory space (true) or I/O space.
    pub memory: bool,
    /// A 64-bit memory BAR.
    pub wide: bool,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

/// Sizes the function's BARs with the all-ones protocol (PCI 3.0 6.2.5.1), with decoding off
/// while the registers hold all ones, and restores them. Returns the implemented BARs in order.
pub fn size_bars(at: Location) -> ([Option<Bar>; 6], usize) {
    let command = at.read16(0x04);
    at.write16(0x04, command & !(COMMAND_IO | COMMAND_MEMORY));
    let mut bars = [None; 6];
    let mut count = 0;
    let mut index = 0u8;
    while index < 6 {
        let offset = 0x10 + index * 4;
        let original = at.read32(offset);
        at.write32(offset, 0xFFFF_FFFF);
        let probe = at.read32(offset);
        at.write32(offset, original);
        let memory = original & 1 == 0;
        let mut next = index + 1;
        let bar = if !memory {
            let mask = probe & 0xFFFF_FFFC;
            let size = u64::from((!mask | 0xFFFF_0000).wrapping_add(1) & 0xFFFF);
            (mask != 0).then_some(Bar {
                index,
                address: u64::from(original & 0xFFFF_FFFC),
                size,
                memory: false,
                wide: false,
                prefetchable: false,
            })
        } else {
            let wide = (original >> 1) & 3 == 2;
            let prefetchable = original & 8 != 0;
            let (address, size) = if wide && index < 5 {
                let high_offset = offset + 4;
                let high = at.read32(high_offset);
                at.write32(high_offset, 0xFFFF_FFFF);
                let high_probe = at.read32(high_offset);
                at.write32(high_offset, high);
                next = index + 2;
                let mask = (u64::from(high_probe) << 32) | u64::from(probe & 0xFFFF_FFF0);
                let address = (u64::from(high) << 32) | u64::from(original & 0xFFFF_FFF0);
                (
                    address,
                    if mask == 0 {
                        0
                    } else {
                        (!mask).wrapping_add(1)
                    },
                )
            } else {
                let mask = probe & 0xFFFF_FFF0;
                let size = if mask == 0 {
                    0
                } else {
                    u64::from((!mask).wrapping_add(1))
                };
                (u64::from(original & 0xFFFF_FFF0), size)
            };
            (size != 0).then_some(Bar {
                index,
                address,
                size,
                memory: true,
                wide,
                prefetchable,
            })
        };
        if let Some(bar) = bar
            && let Some(slot) = bars.get_mut(count)
        {
            *slot = Some(bar);
            count += 1;
        }
        index = next;
    }
    at.write16(0x04, command);
    (bars, count)
}
