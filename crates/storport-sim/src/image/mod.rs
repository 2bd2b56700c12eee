//! Loading a shipped miniport image (vioblk.sys) and running it under the user-mode Storport.
//!
//! ```text
//!   let image = storport_sim::image::load(Path::new("target/package/vioblk.sys"))?;
//!   port.load_driver(image.driver_entry())?;     // then start adapters as with the rlib
//! ```
//!
//! - `pe`: maps the PE32+ image (sections with their protections, base relocations) and binds
//!   its imports; an import not in `imports` fails the load with its name.
//! - `gate`: the Windows x64 ABI at the boundary: every image routine Storport calls is entered
//!   through a static System V stub, every import leaves through a static Windows x64 stub.
//! - `kstack`: image routines run on a 24 KiB kernel stack with a guard page per host thread;
//!   the deepest use per routine is recorded ([`stack_use`]).
//! - `mmio`: register windows are inaccessible; a fault handler emulates the fixed register
//!   access forms and fails loudly on anything else.
//!
//! The user-mode Storport itself keeps the host's C ABI (README "Architecture": why a second
//! path for images rather than one ABI for everything).

mod gate;
mod imports;
mod kstack;
mod mmio;
mod pe;
mod peer;

pub use peer::{PLAIN_ACCESSES, accept_plain_register_accesses};

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use crate::abi::DriverEntryFn;

pub use imports::BUG_CHECK_EXIT_CODE;
pub use kstack::{GUARD, KERNEL_STACK_SIZE, STACK_OVERFLOW_EXIT_CODE};
pub use mmio::{IMAGE_FAULT_EXIT_CODE, MARKER};
pub use pe::MappedSection;

/// Why an image could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// The file could not be read.
    Read(String),
    /// Not an image this loader (or the kernel's) accepts.
    Malformed(String),
    /// An import this port does not provide: Windows refuses such a driver too.
    UnknownImport {
        /// The DLL (`storport.sys`).
        dll: String,
        /// The function.
        function: String,
    },
    /// Mapping or protecting memory failed.
    Map(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Read(e) => write!(f, "cannot read the image: {e}"),
            ImageError::Malformed(e) => write!(f, "malformed image: {e}"),
            ImageError::UnknownImport { dll, function } => write!(
                f,
                "the image imports {dll}!{function}, which this Storport does not provide"
            ),
            ImageError::Map(e) => write!(f, "cannot map the image: {e}"),
        }
    }
}

impl std::error::Error for ImageError {}

/// A loaded image. Images stay mapped for the life of the process.
#[derive(Debug)]
pub struct Image {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub file_size: usize,
    /// The PE checksum stored in the file (`IMAGE_OPTIONAL_HEADER.CheckSum`).
    pub checksum: u32,
    /// Where it is mapped.
    pub base: usize,
    /// `SizeOfImage`.
    pub size: usize,
    /// Its sections as mapped.
    pub sections: Vec<MappedSection>,
    /// Base relocations applied.
    pub relocations: usize,
    /// The imports, bound, as `dll!function`.
    pub imports: Vec<String>,
    entry: usize,
    file: Vec<u8>,
}

impl Image {
    /// DriverEntry, callable by [`crate::Port::load_driver`] (through the callback gate).
    pub fn driver_entry(&self) -> DriverEntryFn {
        let stub = match gate::callback(self.entry, "DriverEntry", gate::Kind::Plain) {
            Ok(stub) => stub,
            Err(e) => {
                eprintln!("storport-sim: image: {e}");
                std::process::abort();
            }
        };
        // SAFETY: a callback-gate stub takes and returns what DriverEntry does.
        unsafe { std::mem::transmute::<usize, DriverEntryFn>(stub) }
    }

    /// Whether `address` lies inside this image.
    pub fn contains(&self, address: usize) -> bool {
        address >= self.base && address - self.base < self.size
    }

    /// The address range of the image's executable sections: `(start, end)` each.
    pub fn code_ranges(&self) -> Vec<(usize, usize)> {
        self.sections
            .iter()
            .filter(|s| s.protection.contains('x'))
            .map(|s| {
                let start = self.base + s.rva as usize;
                (start, start + s.size as usize)
            })
            .collect()
    }

    /// The file's bytes.
    pub fn file(&self) -> &[u8] {
        &self.file
    }
}

static LOADED: Mutex<Vec<&'static Image>> = Mutex::new(Vec::new());

/// Loads the image at `path`, or returns the one already loaded from identical bytes.
pub fn load(path: &Path) -> Result<&'static Image, ImageError> {
    let file =
        std::fs::read(path).map_err(|e| ImageError::Read(format!("{}: {e}", path.display())))?;
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(image) = loaded.iter().find(|i| i.file == file) {
        return Ok(image);
    }
    let checksum = object::read::pe::PeFile64::parse(&*file)
        .map(|f| {
            use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
            f.nt_headers().optional_header().check_sum()
        })
        .map_err(|e| ImageError::Malformed(format!("not a PE32+ image: {e}")))?;
    mmio::install();
    let mapped = pe::map(&file, &imports::bind)?;
    let image = Image {
        path: path.to_owned(),
        file_size: file.len(),
        checksum,
        base: mapped.base,
        size: mapped.size,
        sections: mapped.sections,
        relocations: mapped.relocations,
        imports: mapped.imports,
        entry: mapped.base + mapped.entry_rva as usize,
        file,
    };
    for (start, end) in image.code_ranges() {
        mmio::add_code(start, end, image.base).map_err(ImageError::Map)?;
    }
    let image: &'static Image = Box::leak(Box::new(image));
    loaded.push(image);
    Ok(image)
}

/// The base of the loaded image holding `address`.
fn image_of(address: usize) -> Option<usize> {
    LOADED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|i| i.contains(address))
        .map(|i| i.base)
}

/// Each image routine handed to Storport, in registration order: how often it ran and the
/// deepest its kernel stack went while it ran (bytes from the top; routines it triggered on the
/// same stack, and for a nested routine its callers, included).
pub fn stack_use() -> Vec<StackUse> {
    gate::slots()
        .into_iter()
        .map(|(routine, calls, deepest)| StackUse {
            routine,
            calls,
            deepest,
        })
        .collect()
}

/// One routine's line of [`stack_use`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackUse {
    /// `HwStorStartIo (image+0x1a30)`.
    pub routine: String,
    /// Returns so far.
    pub calls: usize,
    /// Deepest use in bytes.
    pub deepest: usize,
}

/// Register accesses the fault handler emulated, by form: `[read8, read16, read32, read64,
/// write8, write16, write32, write64]`.
pub fn mmio_accesses() -> [u64; 8] {
    std::array::from_fn(|i| mmio::ACCESSES[i].load(Ordering::Relaxed))
}
