//! The real stack: the vioblk driver on the user-mode Storport over the virtio-blk model.
//!
//! [`Stack::start`] does what Windows does when a virtio-blk disk appears: loads the driver
//! (DriverEntry, which registers with StorPortInitialize), then starts the adapter on the PCI
//! function the device model presents (HwStorFindAdapter, HwStorInitialize, passive
//! initialization). [`Stack`] is then a [`ScsiTarget`]: every request goes through BuildIo,
//! StartIo, the ring, the device's I/O thread, the interrupt, the DPC and RequestComplete, with
//! every Storport rule checked on the way.

use std::sync::Arc;

use storport_sim::{Adapter, AdapterOptions, InterruptMode, Port, PortOptions, Request};

use crate::device::{DeviceConfig, VirtioBlkDevice};
use crate::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

/// How to build the stack.
#[derive(Clone, Debug, Default)]
pub struct StackOptions {
    /// The virtio-blk device.
    pub device: DeviceConfig,
    /// The user-mode Storport.
    pub port: PortOptions,
    /// MSI-X (one message per queue) or INTx.
    pub intx: bool,
    /// Run as a crash-dump stack (DUMP_MODE_CRASH): one CPU, polled, no interrupts.
    pub dump: bool,
    /// Offer at most this many MSI-X messages.
    pub max_messages: Option<u16>,
    /// Run this driver image (vioblk.sys) instead of the linked driver; when `None`, the
    /// `VIOBLK_DRIVER_IMAGE` environment variable names one (how CI runs the suites on it).
    pub driver_image: Option<std::path::PathBuf>,
}

/// The environment variable that makes every [`Stack`] run a driver image.
pub const DRIVER_IMAGE_ENV: &str = "VIOBLK_DRIVER_IMAGE";

/// The driver image a stack with `options` runs, if any.
pub fn driver_image(options: &StackOptions) -> Option<std::path::PathBuf> {
    options.driver_image.clone().or_else(|| {
        std::env::var_os(DRIVER_IMAGE_ENV)
            .filter(|v| !v.is_empty())
            .map(Into::into)
    })
}

/// The driver running on the user-mode Storport over a virtio-blk device model.
pub struct Stack {
    /// The user-mode Storport (violations are collected here).
    pub port: Port,
    /// The started adapter.
    pub adapter: Adapter,
    /// The device model under it.
    pub device: Arc<VirtioBlkDevice>,
    /// The driver image running in place of the linked driver, if any.
    pub image: Option<&'static storport_sim::image::Image>,
}

impl Stack {
    /// Builds the device, loads the driver and starts the adapter.
    pub fn start(options: StackOptions) -> Result<Stack, String> {
        let image = driver_image(&options);
        let device = Arc::new(
            VirtioBlkDevice::new(options.device).map_err(|e| format!("device model: {e:?}"))?,
        );
        let mut port_options = options.port;
        // VIOBLK_WINDOWS_RULES_ONLY=1 does for every Stack what --windows-rules-only does for
        // the command (tools/peer/compare.py's callgrind runs of the qd32_reads example).
        if std::env::var_os("VIOBLK_WINDOWS_RULES_ONLY").is_some_and(|v| v == "1") {
            port_options.windows_rules_only = true;
        }
        let windows = port_options.windows_rules_only;
        if windows {
            storport_sim::image::accept_plain_register_accesses(true);
        }
        let port = Port::new(port_options);
        let image = match image {
            Some(path) => Some(
                storport_sim::image::load(&path).map_err(|e| format!("{}: {e}", path.display()))?,
            ),
            None => None,
        };
        let driver_entry = match image {
            Some(image) => image.driver_entry(),
            None => vioblk::DriverEntry,
        };
        port.load_driver(driver_entry)
            .map_err(|e| format!("DriverEntry failed: {e:?}"))?;
        let adapter = port
            .start_adapter(
                device.clone(),
                device.guest_memory(),
                AdapterOptions {
                    interrupts: if options.intx {
                        InterruptMode::Intx
                    } else {
                        InterruptMode::MsiX
                    },
                    dump_mode: options.dump.then_some(1),
                    max_messages: options.max_messages,
                    ..AdapterOptions::default()
                },
            )
            .map_err(|e| format!("adapter start failed: {e:?}"))?;
        if windows && !options.dump {
            // Windows' disk class driver reads the capacity before any I/O; viostor refuses
            // reads until it has answered READ CAPACITY (it learns its last LBA there).
            let mut cdb = vec![0u8; 16];
            cdb[0] = 0x9E;
            cdb[1] = 0x10;
            cdb[13] = 32;
            let _ = adapter.execute(Request::data_in(&cdb, 32));
        }
        Ok(Stack {
            port,
            adapter,
            device,
            image,
        })
    }

    /// Storport rule violations so far, one line each.
    pub fn violations(&self) -> Vec<String> {
        self.port
            .violations()
            .iter()
            .map(|v| v.to_string())
            .collect()
    }
}

fn to_request(request: &ScsiRequest) -> Request {
    let transfer_length = if request.data_out.is_empty() {
        request.data_in_len
    } else {
        u32::try_from(request.data_out.len()).unwrap_or(u32::MAX)
    };
    Request {
        function: request.function,
        cdb: request.cdb.clone(),
        path: 0,
        target: request.target,
        lun: request.lun,
        flags: request.flags,
        transfer_length,
        data_out: request.data_out.clone(),
        timeout_secs: request.timeout_s,
        sense_len: 18,
        buffer_offset: 0,
        ex_data: Vec::new(),
    }
}

fn to_completion(c: storport_sim::Completion) -> ScsiCompletion {
    ScsiCompletion {
        srb_status: c.srb_status,
        scsi_status: c.scsi_status,
        sense: c.sense,
        data_in: c.data,
        data_transfer_length: c.data_transfer_length,
    }
}

impl ScsiTarget for Stack {
    fn execute(&self, request: ScsiRequest) -> ScsiCompletion {
        to_completion(self.adapter.execute(to_request(&request)))
    }

    fn submit(&self, request: ScsiRequest, done: Box<dyn FnOnce(ScsiCompletion) + Send>) {
        self.adapter
            .submit_with(to_request(&request), move |c| done(to_completion(c)));
    }
}

/// The `driver` backend of the command line: the real driver on the user-mode Storport.
pub struct DriverBackend;

impl DriverBackend {
    fn options(options: &crate::cli::DiskOptions) -> StackOptions {
        let sectors = options.capacity_bytes / 512;
        let backend = match &options.file {
            Some(path) => crate::device::BackendConfig::File(path.clone()),
            None => crate::device::BackendConfig::Ram,
        };
        // Every in-flight request's data buffer and SRB extension come from guest memory; the
        // mapping is lazily backed, so a generous size costs nothing until it is touched.
        let guest = (256usize << 20).saturating_add(
            usize::try_from(options.max_outstanding)
                .unwrap_or(0)
                .saturating_mul(4 << 20),
        );
        StackOptions {
            device: DeviceConfig {
                num_queues: options.queues,
                capacity_sectors: sectors,
                logical_block_size: options.logical_block_size,
                backend,
                guest_memory_size: guest,
                ..DeviceConfig::default()
            },
            intx: options.interrupts == crate::cli::InterruptMode::Intx,
            driver_image: options.driver_image.clone(),
            port: PortOptions {
                windows_rules_only: options.windows_rules_only,
                ..StackOptions::default().port
            },
            ..StackOptions::default()
        }
    }
}

struct DriverDisk(Stack);

impl crate::cli::OpenDisk for DriverDisk {
    fn target(&self) -> &dyn ScsiTarget {
        &self.0
    }

    fn queue_stats(&self) -> Option<Vec<crate::report::QueueStats>> {
        Some(
            self.0
                .device
                .counters()
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    crate::report::QueueStats::from_counters(
                        u16::try_from(i).unwrap_or(u16::MAX),
                        c,
                    )
                })
                .collect(),
        )
    }

    fn violations(&self) -> Vec<String> {
        self.0.violations()
    }

    fn interrupts(&self) -> Option<String> {
        let (_, per_message) = self.0.adapter.synchronization();
        Some(if per_message {
            "msix".to_owned()
        } else {
            "intx".to_owned()
        })
    }

    fn driver_image(&self) -> Option<crate::image_report::ImageReport> {
        self.0.image.map(crate::image_report::ImageReport::of)
    }

    fn close(self: Box<Self>) -> Vec<String> {
        let stack = self.0;
        let before = stack.violations().len();
        let _ = stack.adapter.stop();
        stack.violations().into_iter().skip(before).collect()
    }
}

impl crate::cli::Backend for DriverBackend {
    fn open(
        &self,
        options: &crate::cli::DiskOptions,
    ) -> Result<Box<dyn crate::cli::OpenDisk>, String> {
        Ok(Box::new(DriverDisk(Stack::start(Self::options(options))?)))
    }

    fn registration(
        &self,
        options: &crate::cli::DiskOptions,
    ) -> Result<crate::report::DriverRegistration, String> {
        let stack = Stack::start(Self::options(options))?;
        let registration = stack
            .port
            .registration()
            .ok_or("DriverEntry registered nothing")?;
        let hw = registration.hw_init;
        let callbacks = [
            ("HwFindAdapter", hw.HwFindAdapter.is_some()),
            ("HwInitialize", hw.HwInitialize.is_some()),
            ("HwBuildIo", hw.HwBuildIo.is_some()),
            ("HwStartIo", hw.HwStartIo.is_some()),
            ("HwInterrupt", hw.HwInterrupt.is_some()),
            ("HwResetBus", hw.HwResetBus.is_some()),
            ("HwAdapterControl", hw.HwAdapterControl.is_some()),
            ("HwUnitControl", hw.HwUnitControl.is_some()),
        ];
        let (full_duplex, per_message) = stack.adapter.synchronization();
        let (channels, perf_flags) = stack.adapter.perf();
        Ok(crate::report::DriverRegistration {
            driver_entry_status: registration.status,
            hw_initialization_data_size: hw.HwInitializationDataSize,
            callbacks: callbacks
                .iter()
                .map(|(n, p)| ((*n).to_owned(), *p))
                .collect(),
            device_extension_size: hw.DeviceExtensionSize,
            specific_lu_extension_size: hw.SpecificLuExtensionSize,
            srb_extension_size: hw.SrbExtensionSize,
            srb_type_flags: hw.SrbTypeFlags,
            feature_support: hw.FeatureSupport,
            adapter_interface_type: hw.AdapterInterfaceType,
            map_buffers: hw.MapBuffers,
            number_of_access_ranges: hw.NumberOfAccessRanges,
            flags: vec![
                (
                    "NeedPhysicalAddresses".to_owned(),
                    hw.NeedPhysicalAddresses != 0,
                ),
                ("TaggedQueuing".to_owned(), hw.TaggedQueuing != 0),
                ("AutoRequestSense".to_owned(), hw.AutoRequestSense != 0),
                (
                    "MultipleRequestPerLu".to_owned(),
                    hw.MultipleRequestPerLu != 0,
                ),
            ],
            extra: vec![
                (
                    "SynchronizationModel".to_owned(),
                    if full_duplex {
                        "full duplex"
                    } else {
                        "half duplex"
                    }
                    .to_owned(),
                ),
                (
                    "InterruptSynchronizationMode".to_owned(),
                    if per_message { "per message" } else { "all" }.to_owned(),
                ),
                ("ConcurrentChannels".to_owned(), channels.to_string()),
                ("PerfFlags".to_owned(), format!("0x{perf_flags:x}")),
            ]
            .into_iter()
            .chain(stack.image.map(|image| {
                let r = crate::image_report::ImageReport::of(image);
                (
                    "DriverImage".to_owned(),
                    format!(
                        "{}, {} bytes, checksum 0x{:08x}",
                        r.path, r.size, r.checksum
                    ),
                )
            }))
            .collect(),
        })
    }
}
