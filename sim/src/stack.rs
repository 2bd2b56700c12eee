//! The real stack: the vioblk driver on the user-mode Storport over the virtio-blk model.
//!
//! [`Stack::start`] does what Windows does when a virtio-blk disk appears: loads the driver
//! (DriverEntry, which registers with StorPortInitialize), then starts the adapter on the PCI
//! function the device model presents (HwStorFindAdapter, HwStorInitialize, passive
//! initialization). [`Stack`] is then a [`ScsiTarget`]: every request goes through BuildIo,
//! StartIo, the ring, the device's I/O thread, the interrupt, the DPC and RequestComplete, with
//! every Storport rule checked on the way.

use std::sync::Arc;

use storport_sim::device::{GuestMemory, PciDevice};
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
    /// REG_DWORD values under the driver's `Parameters\\Device` key (StorPortRegistryRead).
    pub registry: Vec<(String, u32)>,
    /// An ETW session listens: Storport calls HwStorTracingEnabled(TRUE) after the start.
    pub tracing: bool,
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

/// The driver running on the user-mode Storport over a virtio-blk device: the model, or
/// (`Stack<VhostUserDevice>`) QEMU's block layer behind the same transport.
pub struct Stack<D: PciDevice + 'static = VirtioBlkDevice> {
    /// The user-mode Storport (violations are collected here).
    pub port: Port,
    /// The started adapter.
    pub adapter: Adapter,
    /// The device under it.
    pub device: Arc<D>,
    /// The driver image running in place of the linked driver, if any.
    pub image: Option<&'static storport_sim::image::Image>,
}

impl Stack {
    /// Builds the device, loads the driver and starts the adapter.
    pub fn start(options: StackOptions) -> Result<Stack, String> {
        Self::start_with(options, |_| {})
    }

    /// As [`Stack::start`], with `prepare` run on the device before the driver sees it (to arm
    /// a fault for the start-up requests, for instance).
    pub fn start_with(
        options: StackOptions,
        prepare: impl FnOnce(&VirtioBlkDevice),
    ) -> Result<Stack, String> {
        let device = Arc::new(
            VirtioBlkDevice::new(options.device.clone())
                .map_err(|e| format!("the device model did not start: {e}"))?,
        );
        prepare(&device);
        let memory = device.guest_memory();
        let stack = Stack::on_device(device, memory, options)?;
        // HwStorInitialize polls GET_ID for 1 ms and goes on (a later answer is taken by the
        // driver's drain); on a busy machine the device takes GET_ID only after that, and a
        // fault the caller arms now for "the next request" would land on it. Unless `prepare`
        // armed one (which may be meant for GET_ID) or one fired, wait (at most PATIENCE) until
        // the device has served GET_ID, its first request.
        if !stack.device.fault_armed() && stack.device.faults_fired() == 0 {
            let device = &stack.device;
            let _ = device.wait_until(
                "the device served the start-up GET_ID",
                storport_sim::PATIENCE,
                || device.counters().iter().any(|c| c.get_ids >= 1),
            );
        }
        Ok(stack)
    }
}

impl<D: PciDevice + 'static> Stack<D> {
    /// Loads the driver and starts the adapter on `device`, whose DMA-able memory is `memory`
    /// (`options.device` is not used).
    pub fn on_device(
        device: Arc<D>,
        memory: GuestMemory,
        options: StackOptions,
    ) -> Result<Stack<D>, String> {
        let image = driver_image(&options);
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
                memory,
                AdapterOptions {
                    interrupts: if options.intx {
                        InterruptMode::Intx
                    } else {
                        InterruptMode::MsiX
                    },
                    dump_mode: options.dump.then_some(1),
                    max_messages: options.max_messages,
                    registry: options.registry.clone(),
                    tracing: options.tracing,
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

impl<D: PciDevice + 'static> ScsiTarget for Stack<D> {
    fn execute(&self, request: ScsiRequest) -> ScsiCompletion {
        to_completion(self.adapter.execute(to_request(&request)))
    }

    fn submit(&self, request: ScsiRequest, done: Box<dyn FnOnce(ScsiCompletion) + Send>) {
        self.adapter
            .submit_with(to_request(&request), move |c| done(to_completion(c)));
    }
}
