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
}

/// The driver running on the user-mode Storport over a virtio-blk device model.
pub struct Stack {
    /// The user-mode Storport (violations are collected here).
    pub port: Port,
    /// The started adapter.
    pub adapter: Adapter,
    /// The device model under it.
    pub device: Arc<VirtioBlkDevice>,
}

impl Stack {
    /// Builds the device, loads the driver and starts the adapter.
    pub fn start(options: StackOptions) -> Result<Stack, String> {
        let device = Arc::new(
            VirtioBlkDevice::new(options.device).map_err(|e| format!("device model: {e:?}"))?,
        );
        let port = Port::new(options.port);
        port.load_driver(vioblk::DriverEntry)
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
        Ok(Stack {
            port,
            adapter,
            device,
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
