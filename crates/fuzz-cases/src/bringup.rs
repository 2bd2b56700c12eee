//! Device bring-up: HwStorFindAdapter and HwStorInitialize (and passive initialization) over
//! arbitrary PCI configuration, capability lists, common configuration and device
//! configuration bytes, on the user-mode Storport.
//!
//! The device is the project's virtio-blk model (`vioblk_sim::device::VirtioBlkDevice`) with
//! any configuration the model accepts (feature bits, queue counts and sizes, MSI-X vectors,
//! block sizes, limits), behind [`Hostile`], which overrides whatever bytes the input names on
//! every read: PCI configuration space (header, capability pointer, capability list), the
//! common configuration structure and the device configuration structure. The driver then
//! starts through storport-sim exactly as Windows would start it (DriverEntry, FindAdapter,
//! Initialize, passive initialization), answers INQUIRY and READ CAPACITY (16) if it started,
//! and is stopped. Checked: no panic, no hang (libFuzzer's timeout; storport-sim's watchdog),
//! no Storport rule broken (every violation storport-sim reports), and an adapter that started
//! answers both commands.

use std::sync::Arc;

use arbitrary::Arbitrary;
use storport_sim::device::{Bar, DmaWatch, InterruptSink, PciDevice};
use storport_sim::{AdapterOptions, InterruptMode, Port, PortOptions, Request};
use vioblk_sim::device::{DeviceConfig, VIRTIO_BAR, VirtioBlkDevice};

/// Where the model puts the common and device configuration structures in the virtio BAR.
const COMMON: u64 = 0x0000;
const DEVICE: u64 = 0x2000;
/// Bytes of each structure the patches reach.
const WINDOW: u64 = 0x40;

/// One fuzz input.
#[derive(Arbitrary, Debug, Clone)]
pub struct Input {
    /// The device's configuration (what the model offers before any override).
    pub device: Device,
    /// INTx instead of MSI-X.
    pub intx: bool,
    /// Offer at most this many MSI-X messages (modulo 20; 0: no limit).
    pub max_messages: u8,
    /// Simulated CPUs (1 + this modulo 4).
    pub cpus: u8,
    /// PCI configuration space bytes read as these values: (offset, value).
    pub pci: Vec<(u8, u8)>,
    /// Common configuration bytes (offset modulo 64): (offset, value).
    pub common: Vec<(u8, u8)>,
    /// Device configuration bytes (offset modulo 64): (offset, value).
    pub config: Vec<(u8, u8)>,
}

/// What the model is built with.
#[derive(Arbitrary, Debug, Clone)]
pub struct Device {
    /// Offered features (`None`: the model's default set).
    pub features: Option<u64>,
    /// `num_queues` (modulo 17).
    pub num_queues: u8,
    /// Maximum queue size.
    pub max_queue_size: u16,
    /// Capacity in sectors (modulo 4096: the RAM backend holds it).
    pub capacity_sectors: u16,
    /// 4096-byte logical blocks instead of 512.
    pub block_4k: bool,
    /// `physical_block_exp`.
    pub physical_block_exp: u8,
    /// `seg_max`.
    pub seg_max: u32,
    /// `size_max`.
    pub size_max: u32,
    /// Read-only disk.
    pub read_only: bool,
    /// Write-back cache on.
    pub writeback: bool,
    /// (`max_discard_sectors`, `max_discard_seg`).
    pub discard: (u32, u32),
    /// (`max_write_zeroes_sectors`, `max_write_zeroes_seg`).
    pub write_zeroes: (u32, u32),
    /// MSI-X vectors (modulo 20; `None`: one per queue plus config).
    pub msix_vectors: Option<u8>,
}

/// The model with bytes overridden on every read.
pub struct Hostile {
    inner: Arc<VirtioBlkDevice>,
    pci: [Option<u8>; 256],
    common: [Option<u8>; WINDOW as usize],
    config: [Option<u8>; WINDOW as usize],
}

impl Hostile {
    fn patch(window: &[Option<u8>], base: u64, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            if let Some(Some(value)) = at
                .checked_sub(base)
                .and_then(|k| usize::try_from(k).ok())
                .and_then(|k| window.get(k))
            {
                *b = *value;
            }
        }
    }
}

impl PciDevice for Hostile {
    fn config_read(&self, offset: u16, data: &mut [u8]) {
        self.inner.config_read(offset, data);
        Self::patch(&self.pci, 0, u64::from(offset), data);
    }

    fn config_write(&self, offset: u16, data: &[u8]) {
        self.inner.config_write(offset, data);
    }

    fn bars(&self) -> Vec<Bar> {
        self.inner.bars()
    }

    fn bar_read(&self, bar: u8, offset: u64, data: &mut [u8]) {
        self.inner.bar_read(bar, offset, data);
        if bar == VIRTIO_BAR {
            Self::patch(&self.common, COMMON, offset, data);
            Self::patch(&self.config, DEVICE, offset, data);
        }
    }

    fn bar_write(&self, bar: u8, offset: u64, data: &[u8]) {
        self.inner.bar_write(bar, offset, data);
    }

    fn connect_interrupts(&self, sink: Arc<dyn InterruptSink>) {
        self.inner.connect_interrupts(sink);
    }

    fn msix_message_count(&self) -> u16 {
        self.inner.msix_message_count()
    }

    fn intx_asserted(&self) -> bool {
        self.inner.intx_asserted()
    }

    fn dma_watch(&self) -> Option<Arc<DmaWatch>> {
        self.inner.dma_watch()
    }
}

impl Device {
    fn config(&self) -> DeviceConfig {
        DeviceConfig {
            features: self.features,
            num_queues: u16::from(self.num_queues % 17),
            max_queue_size: self.max_queue_size,
            capacity_sectors: u64::from(self.capacity_sectors % 4096),
            logical_block_size: if self.block_4k { 4096 } else { 512 },
            // The model computes opt_io_size as 1 << exp (u32); the driver sees any exponent
            // through the device-configuration overrides.
            physical_block_exp: self.physical_block_exp % 32,
            seg_max: self.seg_max,
            size_max: self.size_max,
            read_only: self.read_only,
            writeback: self.writeback,
            max_discard_sectors: self.discard.0,
            max_discard_seg: self.discard.1,
            max_write_zeroes_sectors: self.write_zeroes.0,
            max_write_zeroes_seg: self.write_zeroes.1,
            msix_vectors: self.msix_vectors.map(|v| u16::from(v % 20)),
            guest_memory_size: 16 << 20,
            ..DeviceConfig::default()
        }
    }
}

fn window<const N: usize>(patches: &[(u8, u8)]) -> [Option<u8>; N] {
    let mut w = [None; N];
    for &(offset, value) in patches {
        w[usize::from(offset) % N] = Some(value);
    }
    w
}

/// Runs one input; panics naming the broken invariant.
pub fn run(input: &Input) {
    let _ = starts(input);
}

/// Runs one input as [`run`] does; whether the adapter started.
pub fn starts(input: &Input) -> bool {
    let Ok(model) = VirtioBlkDevice::new(input.device.config()) else {
        return false; // The model refuses the configuration: not a device.
    };
    let model = Arc::new(model);
    let memory = model.guest_memory();
    let device = Arc::new(Hostile {
        inner: model,
        pci: window(&input.pci),
        common: window(&input.common),
        config: window(&input.config),
    });
    let port = Port::new(PortOptions {
        cpus: 1 + u32::from(input.cpus % 4),
        ..PortOptions::default()
    });
    port.load_driver(vioblk::DriverEntry)
        .expect("DriverEntry registers with StorPortInitialize");
    let started = port.start_adapter(
        device,
        memory,
        AdapterOptions {
            interrupts: if input.intx {
                InterruptMode::Intx
            } else {
                InterruptMode::MsiX
            },
            max_messages: Some(u16::from(input.max_messages % 20)).filter(|&m| m != 0),
            ..AdapterOptions::default()
        },
    );
    if let Ok(adapter) = &started {
        let inquiry = adapter.execute(Request::data_in(&[0x12, 0, 0, 0, 96, 0], 96));
        // SUCCESS, or DATA_OVERRUN for an answer shorter than the 96 bytes asked for.
        assert!(
            matches!(inquiry.status() & 0x3F, 0x01 | 0x12),
            "INQUIRY on a started adapter: status {:#x}",
            inquiry.status()
        );
        let mut capacity = [0u8; 16];
        capacity[0] = 0x9E;
        capacity[1] = 0x10;
        capacity[13] = 32;
        let c = adapter.execute(Request::data_in(&capacity, 32));
        // A disk whose capacity reads as 0 answers NOT READY (medium not present); either way
        // the request completes.
        let _ = c.status();
        let _ = adapter.stop();
    }
    let violations = port.violations();
    assert!(
        violations.is_empty(),
        "Storport rules broken during bring-up ({:?}): {}",
        started.as_ref().err(),
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    started.is_ok()
}
