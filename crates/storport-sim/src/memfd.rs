//! Shared anonymous memory for guest RAM that another process maps too (memfd_create(2)).
//!
//! A vhost-user back end (qemu-storage-daemon) reads and writes the guest's rings and buffers
//! directly: the front end passes it a file descriptor for guest memory in SET_MEM_TABLE, and
//! both map it MAP_SHARED. `vm_memory::GuestMemoryMmap::from_ranges_with_files` maps a file
//! shared; this module makes that file. The simulator crates built on this one forbid unsafe
//! code, so the one system call lives here.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::FromRawFd;

/// Creates an anonymous shared-memory file of `len` bytes, named `name` in /proc/PID/fd.
///
/// The file is close-on-exec and zero-filled; its pages are allocated when first touched.
///
/// # Errors
/// What memfd_create(2) or ftruncate(2) reported.
pub fn memfd(name: &CStr, len: u64) -> std::io::Result<File> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call; the flags are valid.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns; the File takes
    // ownership and closes it once.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn memfd_is_sized_and_readable() {
        let mut f = super::memfd(c"test", 8192).expect("memfd");
        assert_eq!(f.metadata().expect("metadata").len(), 8192);
        f.write_all(b"guest").expect("write");
        f.seek(SeekFrom::Start(0)).expect("seek");
        let mut b = [0u8; 5];
        f.read_exact(&mut b).expect("read");
        assert_eq!(&b, b"guest");
    }
}
