//! QEMU's block layer as the disk: `qemu-storage-daemon` with a vhost-user-blk export, run by
//! the simulator ([`QemuStorageDaemon`]), and the `--device qemu` / `--vhost-user SOCKET`
//! disks of the command line ([`QemuStack`]).
//!
//! The daemon (Debian package qemu-system-common) serves one export over a unix socket in a
//! temporary directory; the image is a raw file in tmpfs (`/dev/shm`) sized by `-c`, or the
//! user's `--file`, or (for tests) a `null-co` node with a latency. A QMP monitor on a second
//! socket makes capacity changes (`block_resize`). The daemon is killed and the directory
//! removed when the value is dropped, also when a test panics.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::device::{VhostUserDevice, VhostUserOptions};
use crate::stack::{Stack, StackOptions};
use crate::target::ScsiTarget;

pub use crate::disk::DeviceKind;

/// The node name of the exported block device (for QMP commands).
pub const NODE: &str = "disk";

/// What the daemon exports.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// A raw image to serve; `None` makes a temporary one in tmpfs.
    pub image: Option<PathBuf>,
    /// Size of a temporary image (and of a `--file` that is shorter).
    pub capacity_bytes: u64,
    /// `num-queues` of the export.
    pub num_queues: u16,
    /// `logical-block-size` of the export: 512 or 4096.
    pub logical_block_size: u32,
    /// Export read-only (`writable=off`).
    pub read_only: bool,
    /// Serve a `null-co` node instead of an image: reads return zeroes, writes are dropped,
    /// each request takes this many nanoseconds (a slow back end for reset tests).
    pub null_latency_ns: Option<u64>,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            image: None,
            capacity_bytes: 64 << 20,
            num_queues: 2,
            logical_block_size: 512,
            read_only: false,
            null_latency_ns: None,
        }
    }
}

/// The qemu-storage-daemon binary: `$VIOBLK_QEMU_STORAGE_DAEMON`, else the first on `PATH`,
/// else `/usr/bin/qemu-storage-daemon`; `None` if there is none, or if the variable is set but
/// empty (which is how to see the tests' SKIPPED path on a machine that has the daemon).
pub fn daemon_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIOBLK_QEMU_STORAGE_DAEMON") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("qemu-storage-daemon"))
        .find(|p| p.is_file())
}

/// `qemu-storage-daemon --version`'s first line, e.g. "qemu-storage-daemon version 7.2.15 ...".
pub fn daemon_version(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| {
            format!(
                "cannot run qemu-storage-daemon at {} ({e}): install it (Debian: apt-get install \
                 qemu-system-common) or point VIOBLK_QEMU_STORAGE_DAEMON at it",
                binary.display()
            )
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("qemu-storage-daemon (unknown version)")
        .trim()
        .to_owned())
}

/// A running qemu-storage-daemon; killed (and its temporary files removed) on drop.
pub struct QemuStorageDaemon {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    qmp: PathBuf,
    image: Option<PathBuf>,
    version: String,
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "vioblk-qsd-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl QemuStorageDaemon {
    /// Starts the daemon and waits until its export accepts connections (at most 30 s).
    ///
    /// # Errors
    /// No daemon binary, the image could not be made, or the daemon exited or never listened
    /// (its stderr is quoted).
    pub fn start(options: &DaemonOptions) -> Result<Self, String> {
        let binary = daemon_binary().ok_or(
            "qemu-storage-daemon is not installed, and --device qemu runs it: install it (Debian: \
             apt-get install qemu-system-common) or name it in VIOBLK_QEMU_STORAGE_DAEMON",
        )?;
        let version = daemon_version(&binary)?;
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // From here on `daemon` (or this guard) removes the directory.
        let mut guard = DirGuard(Some(dir.clone()));
        let socket = dir.join("vhost-user.sock");
        let qmp = dir.join("qmp.sock");
        let (image, file_node) = match (&options.image, options.null_latency_ns) {
            (_, Some(latency)) => (
                None,
                format!(
                    "driver=null-co,node-name={NODE},size={},latency-ns={latency},read-zeroes=on",
                    options.capacity_bytes
                ),
            ),
            (Some(path), None) => (Some(path.clone()), String::new()),
            (None, None) => (Some(dir.join("disk.raw")), String::new()),
        };
        if let Some(path) = &image {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            if len < options.capacity_bytes {
                f.set_len(options.capacity_bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let mut cmd = Command::new(&binary);
        match &image {
            Some(path) => {
                cmd.arg("--blockdev").arg(format!(
                    "driver=file,node-name=file,filename={},cache.direct=off",
                    qemu_opt(&path.display().to_string())
                ));
                cmd.arg("--blockdev")
                    .arg(format!("driver=raw,node-name={NODE},file=file"));
            }
            None => {
                cmd.arg("--blockdev").arg(file_node);
            }
        }
        let mut export = format!(
            "type=vhost-user-blk,id=export,node-name={NODE},addr.type=unix,addr.path={},\
             writable={},num-queues={}",
            qemu_opt(&socket.display().to_string()),
            if options.read_only { "off" } else { "on" },
            options.num_queues.max(1)
        );
        if options.logical_block_size != 512 {
            export.push_str(&format!(
                ",logical-block-size={}",
                options.logical_block_size
            ));
        }
        cmd.arg("--export").arg(export);
        cmd.arg("--chardev").arg(format!(
            "socket,id=qmp,path={},server=on,wait=off",
            qemu_opt(&qmp.display().to_string())
        ));
        cmd.arg("--monitor").arg("chardev=qmp");
        let log = dir.join("stderr.log");
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut daemon = QemuStorageDaemon {
            child,
            dir: guard.0.take().unwrap_or_default(),
            socket,
            qmp,
            image,
            version,
        };
        daemon.wait_listening(&log)?;
        Ok(daemon)
    }

    /// Waits until both sockets accept a connection, or the daemon exits.
    fn wait_listening(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The vhost-user export takes one front end at a time: probe only that its socket
            // file exists, not by connecting (which would occupy it). QMP is probed by
            // connecting, which it allows; the daemon handles its options in order and the
            // monitor comes after the export, so a QMP answer means the export listens.
            if self.socket.exists() && UnixStream::connect(&self.qmp).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!(
                    "qemu-storage-daemon exited ({status}) before listening: {}",
                    text.trim()
                ));
            }
            if Instant::now() > deadline {
                return Err("qemu-storage-daemon did not listen within 30 s".to_owned());
            }
            // The daemon gives no readiness signal but its sockets: look again shortly.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The vhost-user socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The raw image served (none for a null-co node).
    pub fn image(&self) -> Option<&Path> {
        self.image.as_deref()
    }

    /// The daemon's process id (for its CPU time in /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's version line.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Runs one QMP command and returns its `return` value.
    ///
    /// # Errors
    /// The monitor could not be reached or answered with an error.
    pub fn qmp(
        &self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let stream = UnixStream::connect(&self.qmp).map_err(|e| format!("QMP: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut writer = stream;
        let mut line = String::new();
        let mut next = |reader: &mut BufReader<UnixStream>| -> Result<serde_json::Value, String> {
            loop {
                line.clear();
                if reader
                    .read_line(&mut line)
                    .map_err(|e| format!("QMP: {e}"))?
                    == 0
                {
                    return Err("QMP: the monitor closed".to_owned());
                }
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
                // Events may come between replies.
                if v.get("event").is_none() {
                    return Ok(v);
                }
            }
        };
        next(&mut reader)?; // the greeting
        for (execute, args) in [
            ("qmp_capabilities", serde_json::json!({})),
            (command, arguments),
        ] {
            let msg = serde_json::json!({"execute": execute, "arguments": args});
            writeln!(writer, "{msg}").map_err(|e| format!("QMP: {e}"))?;
            let reply = next(&mut reader)?;
            if let Some(r) = reply.get("return") {
                if execute == command {
                    return Ok(r.clone());
                }
            } else {
                return Err(format!("QMP {execute}: {reply}"));
            }
        }
        Err("QMP: no reply".to_owned())
    }

    /// Changes the exported disk's size (QMP `block_resize`); the back end then announces a
    /// configuration change.
    pub fn resize(&self, bytes: u64) -> Result<(), String> {
        self.qmp(
            "block_resize",
            serde_json::json!({"node-name": NODE, "size": bytes}),
        )
        .map(|_| ())
    }
}

impl Drop for QemuStorageDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A value inside a QEMU option string: a comma is written twice (QemuOpts escaping).
fn qemu_opt(value: &str) -> String {
    value.replace(',', ",,")
}

/// Removes a temporary directory unless disarmed.
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The driver over QEMU's block layer, and the daemon if the simulator started it.
///
/// Fields drop in order: the stack (the adapter stops, the device drains and closes the
/// session) before the daemon is killed.
pub struct QemuStack {
    /// The driver on the user-mode Storport over the vhost-user device.
    pub stack: Stack<VhostUserDevice>,
    /// The daemon, when started here.
    pub daemon: Option<QemuStorageDaemon>,
    /// "qemu-storage-daemon version 7.2.x, vhost-user-blk at SOCKET, raw image PATH".
    pub description: String,
}

impl QemuStack {
    /// Connects a [`VhostUserDevice`] to `socket` and starts the driver on it.
    pub fn connect(
        socket: &Path,
        device: VhostUserOptions,
        stack: StackOptions,
    ) -> Result<Stack<VhostUserDevice>, String> {
        let options = VhostUserOptions {
            socket: socket.to_path_buf(),
            ..device
        };
        let device = Arc::new(
            VhostUserDevice::connect(&options)
                .map_err(|e| format!("vhost-user back end at {}: {e}", socket.display()))?,
        );
        let memory = device.guest_memory();
        Stack::on_device(device, memory, stack)
    }

    /// Starts a daemon as `daemon` says, then the driver on it.
    pub fn start(
        daemon: &DaemonOptions,
        device: VhostUserOptions,
        stack: StackOptions,
    ) -> Result<QemuStack, String> {
        let d = QemuStorageDaemon::start(daemon)?;
        let backing = match (d.image(), daemon.null_latency_ns) {
            (Some(p), _) => format!("raw image {}", p.display()),
            (None, Some(ns)) => format!("null-co, latency {ns} ns"),
            (None, None) => "null-co".to_owned(),
        };
        let description = format!(
            "{}, vhost-user-blk at {}, {backing}",
            d.version(),
            d.socket().display()
        );
        let stack = Self::connect(d.socket(), device, stack)?;
        Ok(QemuStack {
            stack,
            daemon: Some(d),
            description,
        })
    }
}

/// Opens the command line's disk on `kind` (not [`DeviceKind::Model`]).
pub(crate) fn open(
    kind: &DeviceKind,
    options: &crate::disk::DiskOptions,
    stack: StackOptions,
) -> Result<QemuStack, String> {
    let device = VhostUserOptions {
        num_queues: options.queues,
        guest_memory_size: stack.device.guest_memory_size,
        msix_vectors: None,
        ..VhostUserOptions::default()
    };
    match kind {
        DeviceKind::Model => Err("not a vhost-user device".to_owned()),
        DeviceKind::Qemu => QemuStack::start(
            &DaemonOptions {
                image: options.file.clone(),
                capacity_bytes: options.capacity_bytes,
                num_queues: options.queues,
                logical_block_size: options.logical_block_size,
                ..DaemonOptions::default()
            },
            device,
            stack,
        ),
        DeviceKind::VhostUser(socket) => Ok(QemuStack {
            stack: QemuStack::connect(socket, device, stack)?,
            daemon: None,
            description: format!("vhost-user back end at {}", socket.display()),
        }),
    }
}

impl crate::disk::OpenDisk for QemuStack {
    fn target(&self) -> &dyn ScsiTarget {
        &self.stack
    }

    fn queue_stats(&self) -> Option<Vec<crate::stats::QueueStats>> {
        Some(crate::stats::QueueStats::from_all_counters(
            &self.stack.device.counters(),
        ))
    }

    fn violations(&self) -> Vec<String> {
        self.stack.violations()
    }

    fn interrupts(&self) -> Option<String> {
        let (_, per_message) = self.stack.adapter.synchronization();
        Some(if per_message { "msix" } else { "intx" }.to_owned())
    }

    fn backing(&self) -> Option<String> {
        Some(self.description.clone())
    }

    fn close(self: Box<Self>) -> Vec<String> {
        let before = self.stack.violations().len();
        let _ = self.stack.adapter.stop();
        let mut after: Vec<String> = self.stack.violations().into_iter().skip(before).collect();
        if let Some(why) = self.stack.device.failure() {
            after.push(format!("device failed: {why}"));
        }
        after
    }
}
