//! The `driver` target of the command line: the vioblk driver on the user-mode Storport
//! ([`crate::stack::Stack`]) over the device model, or over QEMU's block layer
//! ([`crate::qemu`]), with fault injection and the registration `vioblk-sim info` shows.

use std::sync::Arc;

use storport_sim::Request;

use crate::device::DeviceConfig;
use crate::stack::{Stack, StackOptions};
use crate::target::ScsiTarget;

/// The `driver` backend of the command line: the real driver on the user-mode Storport.
pub struct DriverBackend;

impl DriverBackend {
    fn options(options: &crate::disk::DiskOptions) -> StackOptions {
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
            port: storport_sim::PortOptions {
                // What Storport does on a timeout: LU reset, device reset, then the bus.
                multi_tier_reset: true,
                reset_tier_wait: std::time::Duration::from_millis(300),
                // With faults injected, a lost request is timed out within the job (1 s for the
                // class driver's 10 s), not after it.
                timeout_scale: if options.faults { 0.1 } else { 1.0 },
                windows_rules_only: options.windows_rules_only,
                ..storport_sim::PortOptions::default()
            },
            intx: options.interrupts == crate::disk::InterruptMode::Intx,
            driver_image: options.driver_image.clone(),
            max_messages: (options.interrupts == crate::disk::InterruptMode::Msi).then_some(1),
            registry: options.params.clone(),
            tracing: options.trace,
            ..StackOptions::default()
        }
    }
}

struct DriverDisk {
    stack: Arc<Stack>,
    queues: u16,
    single_message: bool,
    injector: std::sync::Mutex<Option<crate::faults::Injector>>,
}

impl DriverDisk {
    fn new(stack: Stack, queues: u16, single_message: bool) -> Self {
        Self {
            stack: Arc::new(stack),
            queues,
            single_message,
            injector: std::sync::Mutex::new(None),
        }
    }

    /// After the job: reads of one block at LBAs 0, 1, ... until each gets a final answer (BUSY
    /// and BUS_RESET are sent again, as disk.sys does, for up to 10 s). Returns how many got
    /// `expected`.
    fn check(&self, reads: u32, expected: u8) -> u32 {
        let block = self.stack.device.config().logical_block_size;
        let mut ok = 0;
        for lba in 0..reads {
            let mut cdb = vec![0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
            cdb[2..6].copy_from_slice(&lba.to_be_bytes());
            let end = storport_sim::sched::now() + std::time::Duration::from_secs(10);
            loop {
                let handle = self
                    .stack
                    .adapter
                    .submit(Request::data_in(&cdb, block).timeout(10));
                let Some(c) = handle.wait_timeout(end - storport_sim::sched::now().min(end)) else {
                    return ok;
                };
                let status = c.srb_status & 0x3F;
                if status == expected {
                    ok += 1;
                    break;
                }
                // A UNIT ATTENTION (the capacity changed, a reset happened) is retried too, as
                // disk.sys does: it reports an event, not a failed read.
                let unit_attention =
                    c.scsi_status == 0x02 && c.sense.get(2).is_some_and(|k| k & 0x0F == 0x06);
                let retry = unit_attention
                    || matches!(
                        status,
                        storport_sys::SRB_STATUS_BUSY | storport_sys::SRB_STATUS_BUS_RESET
                    );
                if !retry || storport_sim::sched::now() >= end {
                    break;
                }
            }
        }
        ok
    }
}

impl crate::disk::OpenDisk for DriverDisk {
    fn target(&self) -> &dyn ScsiTarget {
        &*self.stack
    }

    fn queue_stats(&self) -> Option<Vec<crate::stats::QueueStats>> {
        Some(crate::stats::QueueStats::from_all_counters(
            &self.stack.device.counters(),
        ))
    }

    fn violations(&self) -> Vec<String> {
        self.stack.violations()
    }

    fn event_log(&self) -> (Vec<storport_sim::EventLogEntry>, usize) {
        (
            self.stack.adapter.event_log(),
            self.stack.adapter.etw_events().len(),
        )
    }

    fn interrupts(&self) -> Option<String> {
        let (_, per_message) = self.stack.adapter.synchronization();
        Some(if !per_message {
            "intx".to_owned()
        } else if self.queues == 1 && self.single_message {
            "msi".to_owned()
        } else {
            "msix".to_owned()
        })
    }

    fn start_faults(&self, faults: Vec<crate::faults::FaultSpec>) -> Result<(), String> {
        let injector =
            crate::faults::Injector::start(self.stack.device.clone(), self.queues, faults);
        *self
            .injector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(injector);
        Ok(())
    }

    fn finish_faults(&self) -> Option<crate::faults::FaultReport> {
        let injector = self
            .injector
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?;
        let (injected, specs) = injector.finish(&self.stack.device);
        let removed = self.stack.device.removed();
        let check_reads = 32;
        let check_ok = self.check(
            check_reads,
            if removed {
                storport_sys::SRB_STATUS_NO_DEVICE
            } else {
                storport_sys::SRB_STATUS_SUCCESS
            },
        );
        let log = self.stack.adapter.log();
        let count = |f: &dyn Fn(&str) -> bool| log.iter().filter(|l| f(l)).count() as u64;
        Some(crate::faults::FaultReport {
            specs: specs.iter().map(|s| s.text.clone()).collect(),
            injected_at_ms: injected.iter().map(|(at, _)| *at).collect(),
            injected: injected.into_iter().map(|(_, what)| what).collect(),
            lu_resets: count(&|l| l == "multi-tier reset: SRB_FUNCTION_RESET_LOGICAL_UNIT"),
            device_resets: count(&|l| l == "multi-tier reset: SRB_FUNCTION_RESET_DEVICE"),
            bus_resets: count(&|l| l == "multi-tier reset: HwStorResetBus"),
            resets_detected: count(&|l| l.starts_with("ResetDetected")),
            dma_cuts: count(&|l| l.contains("code 0x130001")),
            removal_detected: count(&|l| l.contains("code 0x130003")) > 0,
            check_reads,
            check_ok,
            removed,
        })
    }

    fn driver_image(&self) -> Option<crate::image_report::ImageReport> {
        self.stack.image.map(crate::image_report::ImageReport::of)
    }

    fn close(self: Box<Self>) -> Vec<String> {
        let stack = &self.stack;
        let before = stack.violations().len();
        let _ = stack.adapter.stop();
        stack.violations().into_iter().skip(before).collect()
    }
}

impl crate::disk::Backend for DriverBackend {
    fn open(
        &self,
        options: &crate::disk::DiskOptions,
    ) -> Result<Box<dyn crate::disk::OpenDisk>, String> {
        if options.device != crate::disk::DeviceKind::Model {
            return Ok(Box::new(crate::qemu::open(
                &options.device,
                options,
                Self::options(options),
            )?));
        }
        // INTx and one message: one queue in use.
        let queues = match options.interrupts {
            crate::disk::InterruptMode::Msix => options.queues,
            _ => 1,
        };
        Ok(Box::new(DriverDisk::new(
            Stack::start(Self::options(options))?,
            queues,
            options.interrupts == crate::disk::InterruptMode::Msi,
        )))
    }

    fn registration(
        &self,
        options: &crate::disk::DiskOptions,
    ) -> Result<crate::stats::DriverRegistration, String> {
        // The model, or QEMU's block layer (`--device qemu`, `--vhost-user`).
        let (qemu, model);
        let (port, adapter, image) = if options.device != crate::disk::DeviceKind::Model {
            qemu = crate::qemu::open(&options.device, options, Self::options(options))?;
            (&qemu.stack.port, &qemu.stack.adapter, qemu.stack.image)
        } else {
            model = Stack::start(Self::options(options))?;
            (&model.port, &model.adapter, model.image)
        };
        let registration = port
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
            ("HwTracingEnabled", hw.HwTracingEnabled.is_some()),
        ];
        let (full_duplex, per_message) = adapter.synchronization();
        let (channels, perf_flags) = adapter.perf();
        Ok(crate::stats::DriverRegistration {
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
            .chain(image.map(|image| {
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
