//! What the simulated disk looks like: [`DeviceConfig`] and the virtio-blk feature bits.

use std::path::PathBuf;

/// virtio-blk and transport feature bits (VIRTIO 1.2 5.2.3 and 6), as masks.
pub mod features {
    /// Maximum size of any single segment is in `size_max`.
    pub const SIZE_MAX: u64 = 1 << 1;
    /// Maximum number of segments in a request is in `seg_max`.
    pub const SEG_MAX: u64 = 1 << 2;
    /// Disk-style geometry is in `geometry`.
    pub const GEOMETRY: u64 = 1 << 4;
    /// The device is read-only.
    pub const RO: u64 = 1 << 5;
    /// The block size of the disk is in `blk_size`.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// Cache flush command support.
    pub const FLUSH: u64 = 1 << 9;
    /// Topology information is available.
    pub const TOPOLOGY: u64 = 1 << 10;
    /// The cache mode can be toggled through `writeback`.
    pub const CONFIG_WCE: u64 = 1 << 11;
    /// More than one request queue.
    pub const MQ: u64 = 1 << 12;
    /// DISCARD support.
    pub const DISCARD: u64 = 1 << 13;
    /// WRITE_ZEROES support.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Indirect descriptor tables.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// Compliance with virtio 1.x (must be negotiated: the rings are little-endian).
    pub const VERSION_1: u64 = 1 << 32;
    /// Packed virtqueues (VIRTIO 1.2 2.8): offered when asked for (see
    /// [`super::DeviceConfig::offered_features`]).
    pub const RING_PACKED: u64 = 1 << 34;

    /// What the device offers unless [`super::DeviceConfig::features`] overrides it.
    pub const DEFAULT: u64 = VERSION_1
        | INDIRECT_DESC
        | EVENT_IDX
        | MQ
        | FLUSH
        | CONFIG_WCE
        | BLK_SIZE
        | TOPOLOGY
        | SEG_MAX
        | SIZE_MAX
        | DISCARD
        | WRITE_ZEROES;
}

/// Where the disk's contents live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BackendConfig {
    /// Anonymous memory, zero-filled (lazily allocated by the kernel).
    #[default]
    Ram,
    /// A file, created if missing and extended to the capacity; FLUSH is `sync_data`.
    File(PathBuf),
}

/// Everything that describes one simulated virtio-blk disk.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// Features offered; `None` means [`features::DEFAULT`] (plus `RO` when read-only, minus `MQ`
    /// with one queue).
    pub features: Option<u64>,
    /// Number of request queues (`num_queues` in both common and device configuration).
    pub num_queues: u16,
    /// Maximum queue size (at most 32768; a power of two for a well-behaved device).
    pub max_queue_size: u16,
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size in bytes (`blk_size`): 512 or 4096.
    pub logical_block_size: u32,
    /// log2(physical block / logical block) (`physical_block_exp`).
    pub physical_block_exp: u8,
    /// Maximum number of data segments in one request (`seg_max`).
    pub seg_max: u32,
    /// Maximum size of one data segment in bytes (`size_max`).
    pub size_max: u32,
    /// Read-only disk: offers `RO` and fails writes, discards and write-zeroes with IOERR.
    pub read_only: bool,
    /// Write-back cache initially on (the `writeback` field); off means write-through.
    pub writeback: bool,
    /// `max_discard_sectors`.
    pub max_discard_sectors: u32,
    /// `max_discard_seg`.
    pub max_discard_seg: u32,
    /// `max_write_zeroes_sectors`.
    pub max_write_zeroes_sectors: u32,
    /// `max_write_zeroes_seg`.
    pub max_write_zeroes_seg: u32,
    /// Serial number returned by GET_ID (at most 20 bytes are used, zero-padded).
    pub serial: String,
    /// MSI-X vectors offered; `None` means `num_queues + 1`; `Some(0)` means INTx only.
    pub msix_vectors: Option<u16>,
    /// Where the data lives.
    pub backend: BackendConfig,
    /// Size in bytes of the guest-memory region all DMA-able memory is carved from.
    pub guest_memory_size: usize,
    /// Guest-physical address of that region (nonzero: virtio-queue treats address 0 as unset).
    pub guest_memory_base: u64,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            features: None,
            num_queues: 4,
            max_queue_size: 256,
            capacity_sectors: 128 * 1024,
            logical_block_size: 512,
            physical_block_exp: 3,
            seg_max: 254,
            size_max: 1 << 20,
            read_only: false,
            writeback: true,
            max_discard_sectors: 1 << 22,
            max_discard_seg: 8,
            max_write_zeroes_sectors: 1 << 22,
            max_write_zeroes_seg: 8,
            serial: String::from("VIOBLK-SIM-0001"),
            msix_vectors: None,
            backend: BackendConfig::Ram,
            guest_memory_size: 64 << 20,
            guest_memory_base: 0x1_0000_0000,
        }
    }
}

/// The environment variable that withdraws default features from every device model.
pub const FEATURES_OFF_ENV: &str = "VIOBLK_SIM_FEATURES_OFF";

/// The features `VIOBLK_SIM_FEATURES_OFF` withdraws: `indirect` (INDIRECT_DESC) and `event-idx`
/// (EVENT_IDX), comma-separated. An unknown name is a mistake that would make a suite run in
/// a mode nobody asked for: it panics with the name (test configuration, not driver input).
pub fn features_off_from_env() -> u64 {
    let Ok(list) = std::env::var(FEATURES_OFF_ENV) else {
        return 0;
    };
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            "indirect" => features::INDIRECT_DESC,
            "event-idx" => features::EVENT_IDX,
            other => panic!("{FEATURES_OFF_ENV}: unknown feature `{other}` (indirect, event-idx)"),
        })
        .fold(0, |off, bit| off | bit)
}

impl DeviceConfig {
    /// The feature bits the device offers. With the default features, `VIOBLK_SIM_RING=packed`
    /// in the environment adds RING_PACKED, so that any suite runs over packed rings
    /// (`VIOBLK_SIM_RING=packed cargo test -p vioblk-sim`), and `VIOBLK_SIM_FEATURES_OFF`
    /// (a comma-separated list of `indirect` and `event-idx`) withdraws those features, so that
    /// any suite runs over chained descriptors or flag-based notification (see
    /// [`features_off_from_env`]).
    pub fn offered_features(&self) -> u64 {
        let mut offered = self.features.unwrap_or(features::DEFAULT);
        if self.features.is_none() && self.num_queues <= 1 {
            offered &= !features::MQ;
        }
        if self.features.is_none()
            && std::env::var("VIOBLK_SIM_RING").is_ok_and(|ring| ring == "packed")
        {
            offered |= features::RING_PACKED;
        }
        if self.features.is_none() {
            offered &= !features_off_from_env();
        }
        if self.read_only {
            offered |= features::RO;
        }
        offered
    }

    /// The number of MSI-X vectors the device offers.
    pub fn msix_vector_count(&self) -> u16 {
        self.msix_vectors
            .unwrap_or_else(|| self.num_queues.saturating_add(1))
    }
}
