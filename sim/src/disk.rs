//! The disk the command line runs on: what it asks for ([`DiskOptions`]), who can give it
//! ([`Backend`]), and what it gets ([`OpenDisk`]).
//!
//! Backends: [`RamBackend`] (the driverless double) here, `crate::driver::DriverBackend` (the
//! vioblk driver on storport-sim, over the device model or QEMU's block layer). The command
//! line (`crate::cli`) takes the list, so it depends on this module and not the other way
//! round.

use std::path::{Path, PathBuf};

use crate::ram::{RamConfig, RamScsiTarget};
use crate::stats::{DriverRegistration, QueueStats};
use crate::target::ScsiTarget;

/// Which device the driver runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The project's virtio-blk model (`sim/src/device`).
    #[default]
    Model,
    /// A qemu-storage-daemon started for the run.
    Qemu,
    /// A vhost-user-blk back end the user runs, at this socket.
    VhostUser(PathBuf),
}

/// How the device interrupts the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptMode {
    /// MSI-X, one message per queue plus configuration.
    Msix,
    /// The legacy INTx line with the ISR status register.
    Intx,
    /// One MSI-X message for the configuration and the one queue.
    Msi,
}

impl InterruptMode {
    /// `"msix"`, `"intx"` or `"msi"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Msix => "msix",
            Self::Intx => "intx",
            Self::Msi => "msi",
        }
    }
}

/// The disk the command line asks a backend for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskOptions {
    /// Capacity in bytes (a multiple of the logical block size).
    pub capacity_bytes: u64,
    /// Logical block size: 512 or 4096.
    pub logical_block_size: u32,
    /// A backing file instead of RAM.
    pub file: Option<PathBuf>,
    /// Request queues.
    pub queues: u16,
    /// The interrupt mode.
    pub interrupts: InterruptMode,
    /// Requests the workload keeps in flight in all (threads × outstanding), so a backend can
    /// size its queues.
    pub max_outstanding: u32,
    /// Run this driver image (vioblk.sys) instead of the linked driver (`--driver-image`).
    pub driver_image: Option<PathBuf>,
    /// The device under the driver: the model, or QEMU's block layer (`--device`, `--vhost-user`).
    pub device: DeviceKind,
    /// Faults will be injected (`--fault`): the backend shortens Storport's timeouts so that
    /// lost requests are recovered within the job.
    pub faults: bool,
    /// Windows' rules only (`--windows-rules-only`): see `PortOptions::windows_rules_only`.
    pub windows_rules_only: bool,
    /// Registry values under the driver's `Parameters\\Device` key (`--param NAME=VALUE`).
    pub params: Vec<(String, u32)>,
    /// An ETW trace session listens (`--trace`): Storport calls HwStorTracingEnabled.
    pub trace: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            capacity_bytes: 64 << 20,
            logical_block_size: 512,
            file: None,
            queues: 2,
            interrupts: InterruptMode::Msix,
            max_outstanding: 32,
            driver_image: None,
            device: DeviceKind::Model,
            faults: false,
            windows_rules_only: false,
            params: Vec::new(),
            trace: false,
        }
    }
}

/// A disk opened by a backend.
pub trait OpenDisk {
    /// The SCSI target the class model talks to.
    fn target(&self) -> &dyn ScsiTarget;

    /// Per-queue counters, when the backend has them.
    fn queue_stats(&self) -> Option<Vec<QueueStats>> {
        None
    }

    /// Storport rule violations seen so far, one description each.
    fn violations(&self) -> Vec<String> {
        Vec::new()
    }

    /// The system event log entries the driver wrote (StorPortLogError), and how many ETW
    /// events it published, when the backend runs a driver.
    fn event_log(&self) -> (Vec<storport_sim::EventLogEntry>, usize) {
        (Vec::new(), 0)
    }

    /// The interrupt mode actually in use (`"msix"`, `"intx"`), when there are interrupts.
    fn interrupts(&self) -> Option<String> {
        None
    }

    /// The driver image running in place of the linked driver, when there is one.
    fn driver_image(&self) -> Option<crate::image_report::ImageReport> {
        None
    }

    /// What serves the data, when it is not the RAM or `--file` of the options (e.g. the
    /// vhost-user back end and its version).
    fn backing(&self) -> Option<String> {
        None
    }

    /// Starts injecting `faults` into the running disk.
    ///
    /// # Errors
    /// A sentence saying why not (backends without a device model cannot).
    fn start_faults(&self, faults: Vec<crate::faults::FaultSpec>) -> Result<(), String> {
        let _ = faults;
        Err("this target has no device to inject faults into (try --target driver)".to_owned())
    }

    /// Stops injecting, checks the disk serves I/O again, and reports.
    fn finish_faults(&self) -> Option<crate::faults::FaultReport> {
        None
    }

    /// Stops the disk (e.g. removes the adapter) and returns the violations seen while doing
    /// so.
    fn close(self: Box<Self>) -> Vec<String> {
        Vec::new()
    }
}

/// Something that can give the command line a disk: the RAM double, or the driver stack.
pub trait Backend {
    /// Opens a disk as `options` describe.
    ///
    /// # Errors
    /// A sentence saying why not (printed after `error: `).
    fn open(&self, options: &DiskOptions) -> Result<Box<dyn OpenDisk>, String>;

    /// What the driver registered with Storport, for `vioblk-sim info`.
    ///
    /// # Errors
    /// A sentence saying why not; backends without a driver say so.
    fn registration(&self, options: &DiskOptions) -> Result<DriverRegistration, String> {
        let _ = options;
        Err("this target loads no driver (try --target driver)".to_owned())
    }
}

/// The `ram` backend: [`RamScsiTarget`], no driver at all.
pub struct RamBackend;

struct RamDisk(RamScsiTarget);

impl OpenDisk for RamDisk {
    fn target(&self) -> &dyn ScsiTarget {
        &self.0
    }

    fn queue_stats(&self) -> Option<Vec<QueueStats>> {
        Some(self.0.queue_stats())
    }
}

impl RamBackend {
    /// Whether the RAM target can honour `options`.
    ///
    /// # Errors
    /// A sentence naming the option it cannot.
    pub fn check(options: &DiskOptions) -> Result<(), String> {
        if options.file.is_some() {
            return Err(
                "the ram target keeps its disk in memory: --file needs the driver target"
                    .to_owned(),
            );
        }
        if options.driver_image.is_some() {
            return Err(
                "the ram target runs no driver: --driver-image needs the driver target".into(),
            );
        }
        if options.device != DeviceKind::Model {
            return Err(
                "the ram target has no device under a driver: --device and --vhost-user need \
                 the driver target"
                    .into(),
            );
        }
        Ok(())
    }
}

impl Backend for RamBackend {
    fn open(&self, options: &DiskOptions) -> Result<Box<dyn OpenDisk>, String> {
        Self::check(options)?;
        let target = RamScsiTarget::new(RamConfig {
            capacity_bytes: options.capacity_bytes,
            logical_block_size: options.logical_block_size,
            queues: options.queues,
            ..RamConfig::default()
        })?;
        Ok(Box::new(RamDisk(target)))
    }
}

/// Parses `--device`'s value.
///
/// # Errors
/// The sentence the command line prints.
pub fn parse_device(text: &str) -> Result<DeviceKind, String> {
    match text {
        "model" => Ok(DeviceKind::Model),
        "qemu" => Ok(DeviceKind::Qemu),
        _ => Err(format!("--device must be model or qemu, got {text}")),
    }
}

/// Checks the paths in `options` before a backend is opened, so that a path that cannot work
/// gets a sentence naming the option and what to do, not an I/O error from deep inside.
///
/// # Errors
/// The sentence, for `error: ...`.
pub fn check_paths(options: &DiskOptions) -> Result<(), String> {
    if let Some(file) = &options.file {
        check_file(file)?;
    }
    if let Some(image) = &options.driver_image {
        match std::fs::metadata(image) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(format!(
                    "--driver-image {} is not a file: give the path of a vioblk.sys",
                    image.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--driver-image {}: {} (build one with `bash .ci/windows-image`)",
                    image.display(),
                    io_words(&e)
                ));
            }
        }
    }
    if let DeviceKind::VhostUser(socket) = &options.device {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(socket) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => {
                return Err(format!(
                    "--vhost-user {} is not a socket: give the socket a vhost-user-blk back end \
                     listens on",
                    socket.display()
                ));
            }
            Err(e) => {
                return Err(format!(
                    "--vhost-user {}: {}: start the back end first (e.g. qemu-storage-daemon \
                     --export type=vhost-user-blk,addr.type=unix,addr.path=SOCKET,...), or use \
                     --device qemu to have one started",
                    socket.display(),
                    io_words(&e)
                ));
            }
        }
    }
    Ok(())
}

/// An I/O error in words, without Rust's "(os error N)".
fn io_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "no such file or directory".to_owned(),
        K::PermissionDenied => "permission denied".to_owned(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

/// `--file`: an existing regular file (grown to `capacity` when shorter), or a new one in a
/// directory that exists.
fn check_file(path: &Path) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!(
            "--file {shown} is a directory: give a file inside it, e.g. --file {}",
            path.join("disk.img").display()
        )),
        Ok(m) if !m.is_file() => Err(format!(
            "--file {shown} is not a regular file (a device, pipe or socket): give a disk image \
             file (it is created if missing, and grown to -c)"
        )),
        Ok(_) => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| {
                    format!(
                        "--file {shown} cannot be opened for reading and writing: {} (check \
                         its permissions, or give another file)",
                        io_words(&e)
                    )
                })?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(format!(
                    "--file {shown}: {} is not a directory",
                    parent.display()
                )),
                Err(_) => Err(format!(
                    "--file {shown}: the directory {} does not exist (create it first)",
                    parent.display()
                )),
            }
        }
        Err(e) => Err(format!("--file {shown}: {}", io_words(&e))),
    }
}
