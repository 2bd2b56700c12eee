//! The disk's contents: anonymous memory or a file.
//!
//! RAM is a `vm_memory::MmapRegion` (lazily committed, so a large disk costs only what is
//! written); guest buffers are copied to and from it with `VolatileSlice` copies, so the queue
//! threads work on it concurrently without a lock, as a real disk serves overlapping I/O (the
//! result of racing writes to one block is unspecified there too). A file is read and written
//! with positioned I/O. The read-write lock is only taken for writing by [`Backend::resize`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, MmapRegion, VolatileMemory,
};

use super::config::BackendConfig;

enum Storage {
    Ram(MmapRegion),
    File(File),
}

/// The disk's contents.
pub struct Backend {
    storage: RwLock<Storage>,
}

fn io_err<E: std::fmt::Display>(e: E) -> io::Error {
    io::Error::other(e.to_string())
}

fn ram(len: u64) -> io::Result<MmapRegion> {
    let len = usize::try_from(len.max(1)).map_err(io_err)?;
    MmapRegion::new(len).map_err(io_err)
}

const CHUNK: usize = 64 * 1024;

impl Backend {
    /// A backend of `len` bytes.
    pub fn new(config: &BackendConfig, len: u64) -> io::Result<Self> {
        let storage = match config {
            BackendConfig::Ram => Storage::Ram(ram(len)?),
            BackendConfig::File(path) => Storage::File(open(path, len)?),
        };
        Ok(Self {
            storage: RwLock::new(storage),
        })
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, Storage> {
        self.storage
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies `len` bytes at byte `offset` of the disk into guest memory at `addr`.
    pub fn read_to_guest(
        &self,
        offset: u64,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
    ) -> io::Result<()> {
        match &*self.read_lock() {
            Storage::Ram(region) => {
                let src = region
                    .get_slice(usize::try_from(offset).map_err(io_err)?, len)
                    .map_err(io_err)?;
                let dst = mem.get_slice(addr, len).map_err(io_err)?;
                src.copy_to_volatile_slice(dst);
                Ok(())
            }
            Storage::File(file) => {
                let mut buf = vec![0u8; len.min(CHUNK)];
                let mut done = 0usize;
                while done < len {
                    let n = (len - done).min(CHUNK);
                    file.read_exact_at(&mut buf[..n], offset + done as u64)?;
                    mem.write_slice(&buf[..n], addr.unchecked_add(done as u64))
                        .map_err(io_err)?;
                    done += n;
                }
                Ok(())
            }
        }
    }

    /// Copies `len` bytes of guest memory at `addr` to byte `offset` of the disk; with
    /// `write_through`, the data is on stable storage when this returns.
    pub fn write_from_guest(
        &self,
        offset: u64,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
        write_through: bool,
    ) -> io::Result<()> {
        match &*self.read_lock() {
            Storage::Ram(region) => {
                let src = mem.get_slice(addr, len).map_err(io_err)?;
                let dst = region
                    .get_slice(usize::try_from(offset).map_err(io_err)?, len)
                    .map_err(io_err)?;
                src.copy_to_volatile_slice(dst);
                Ok(())
            }
            Storage::File(file) => {
                let mut buf = vec![0u8; len.min(CHUNK)];
                let mut done = 0usize;
                while done < len {
                    let n = (len - done).min(CHUNK);
                    mem.read_slice(&mut buf[..n], addr.unchecked_add(done as u64))
                        .map_err(io_err)?;
                    file.write_all_at(&buf[..n], offset + done as u64)?;
                    done += n;
                }
                if write_through {
                    file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    /// Zeroes `len` bytes at byte `offset` (DISCARD and WRITE_ZEROES).
    pub fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = [0u8; CHUNK];
        let mut done = 0u64;
        let storage = self.read_lock();
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let at = offset + done;
            match &*storage {
                Storage::Ram(region) => {
                    let dst = region
                        .get_slice(usize::try_from(at).map_err(io_err)?, n)
                        .map_err(io_err)?;
                    dst.copy_from(&zeros[..n]);
                }
                Storage::File(file) => file.write_all_at(&zeros[..n], at)?,
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Makes written data durable (FLUSH): a no-op for RAM.
    pub fn flush(&self) -> io::Result<()> {
        match &*self.read_lock() {
            Storage::Ram(_) => Ok(()),
            Storage::File(file) => file.sync_data(),
        }
    }

    /// Changes the size to `len` bytes, keeping the contents that still fit.
    pub fn resize(&self, len: u64) -> io::Result<()> {
        let mut storage = self
            .storage
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *storage {
            Storage::Ram(region) => {
                let new = ram(len)?;
                let keep = region.size().min(new.size());
                let src = region.get_slice(0, keep).map_err(io_err)?;
                src.copy_to_volatile_slice(new.get_slice(0, keep).map_err(io_err)?);
                *region = new;
                Ok(())
            }
            Storage::File(file) => file.set_len(len),
        }
    }

    /// Reads disk bytes directly (for tests and the simulator's verification).
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        match &*self.read_lock() {
            Storage::Ram(region) => {
                let src = region
                    .get_slice(usize::try_from(offset).map_err(io_err)?, out.len())
                    .map_err(io_err)?;
                src.copy_to(out);
                Ok(())
            }
            Storage::File(file) => file.read_exact_at(out, offset),
        }
    }

    /// Writes disk bytes directly (to prepare contents for tests).
    pub fn write_bytes(&self, offset: u64, input: &[u8]) -> io::Result<()> {
        match &*self.read_lock() {
            Storage::Ram(region) => {
                let dst = region
                    .get_slice(usize::try_from(offset).map_err(io_err)?, input.len())
                    .map_err(io_err)?;
                dst.copy_from(input);
                Ok(())
            }
            Storage::File(file) => file.write_all_at(input, offset),
        }
    }
}

fn open(path: &Path, len: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_resize_keeps_contents() {
        let b = Backend::new(&BackendConfig::Ram, 4096).unwrap();
        b.write_bytes(100, b"hello").unwrap();
        b.resize(8192).unwrap();
        let mut out = [0u8; 5];
        b.read_bytes(100, &mut out).unwrap();
        assert_eq!(&out, b"hello");
        b.zero(100, 2).unwrap();
        b.read_bytes(100, &mut out).unwrap();
        assert_eq!(&out, b"\0\0llo");
    }
}
