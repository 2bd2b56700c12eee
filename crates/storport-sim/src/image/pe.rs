//! Maps a PE32+ kernel image into this process the way the Windows kernel's loader does.
//!
//! Parsing is the `object` crate's (`object::read::pe`); this module only does what a loader
//! does with the parsed headers: copy the headers and sections into one anonymous mapping of
//! `SizeOfImage` bytes, apply the base relocations (`IMAGE_REL_BASED_DIR64`; `ABSOLUTE` is
//! padding; any other type fails the load), write each import's address into the import address
//! table through a caller-supplied binder (an import it cannot bind fails the load with the
//! import's name, as Windows refuses to load a driver with an unresolved import), and give each
//! section its page protections (read, write, execute from its characteristics; the headers
//! read-only). Directories a kernel image must not have (TLS, delay imports) fail the load.

use std::ffi::c_void;

use object::LittleEndian as LE;
use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, ImageThunkData, PeFile64};

use super::ImageError;

/// One mapped section.
#[derive(Clone, Debug)]
pub struct MappedSection {
    /// Its name (`.text`).
    pub name: String,
    /// RVA of its first byte.
    pub rva: u32,
    /// Bytes mapped (its virtual size).
    pub size: u32,
    /// `r`, `w`, `x` as mapped.
    pub protection: String,
}

/// An image in memory. The mapping lives as long as the process (callbacks stay callable).
#[derive(Debug)]
pub struct Mapped {
    /// Where the image starts.
    pub base: usize,
    /// `SizeOfImage`.
    pub size: usize,
    /// `AddressOfEntryPoint`.
    pub entry_rva: u32,
    /// The sections as mapped.
    pub sections: Vec<MappedSection>,
    /// Base relocations applied.
    pub relocations: usize,
    /// Imports bound, as `dll!function`.
    pub imports: Vec<String>,
}

/// Maps `file`; `bind(dll, function)` gives the address for an import, or `None`.
pub fn map(file: &[u8], bind: &dyn Fn(&str, &str) -> Option<usize>) -> Result<Mapped, ImageError> {
    let malformed = |what: &str, e: object::Error| ImageError::Malformed(format!("{what}: {e}"));
    let pe_file = PeFile64::parse(file).map_err(|e| malformed("not a PE32+ image", e))?;
    let nt = pe_file.nt_headers();
    if nt.file_header().machine.get(LE) != pe::IMAGE_FILE_MACHINE_AMD64 {
        return Err(ImageError::Malformed("not an AMD64 image".into()));
    }
    let optional = nt.optional_header();
    let directory = |index: usize| {
        pe_file
            .data_directories()
            .get(index)
            .map_or(0, |d| d.size.get(LE))
    };
    for (index, what) in [
        (pe::IMAGE_DIRECTORY_ENTRY_TLS, "a TLS directory"),
        (pe::IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT, "delay-load imports"),
    ] {
        if directory(index) != 0 {
            return Err(ImageError::Malformed(format!(
                "the image has {what}, which the kernel's loader does not support"
            )));
        }
    }
    let size = optional.size_of_image() as usize;
    let headers = optional.size_of_headers() as usize;
    if size == 0 || headers > size || headers > file.len() {
        return Err(ImageError::Malformed(format!(
            "SizeOfImage {size:#x} / SizeOfHeaders {headers:#x} do not fit"
        )));
    }
    let mut image = Region::new(size)?;
    image.bytes_mut()[..headers].copy_from_slice(&file[..headers]);
    let mut sections = Vec::new();
    for section in pe_file.section_table().iter() {
        let name = String::from_utf8_lossy(section.raw_name()).into_owned();
        let rva = section.virtual_address.get(LE);
        let virtual_size = section.virtual_size.get(LE);
        let data = section
            .pe_data(file)
            .map_err(|e| malformed(&format!("section {name}"), e))?;
        let end = (rva as usize).checked_add(virtual_size.max(data.len() as u32) as usize);
        if end.is_none_or(|end| end > size) {
            return Err(ImageError::Malformed(format!(
                "section {name} lies outside SizeOfImage"
            )));
        }
        let n = data.len().min(virtual_size as usize);
        image.bytes_mut()[rva as usize..rva as usize + n].copy_from_slice(&data[..n]);
        let flags = section.characteristics.get(LE);
        let protection: String = [
            (pe::IMAGE_SCN_MEM_READ, 'r'),
            (pe::IMAGE_SCN_MEM_WRITE, 'w'),
            (pe::IMAGE_SCN_MEM_EXECUTE, 'x'),
        ]
        .iter()
        .map(|&(bit, c)| if flags.contains(bit) { c } else { '-' })
        .collect();
        sections.push(MappedSection {
            name,
            rva,
            size: virtual_size,
            protection,
        });
    }

    // Base relocations, if the image was not placed at its preferred base.
    let delta = (image.base as u64).wrapping_sub(optional.image_base());
    let mut relocations = 0;
    if let Some(mut blocks) = pe_file
        .data_directories()
        .relocation_blocks(file, &pe_file.section_table())
        .map_err(|e| malformed("relocation directory", e))?
    {
        while let Some(block) = blocks
            .next()
            .map_err(|e| malformed("relocation block", e))?
        {
            for relocation in block {
                match relocation.typ {
                    pe::IMAGE_REL_BASED_ABSOLUTE => {}
                    pe::IMAGE_REL_BASED_DIR64 => {
                        let at = relocation.virtual_address as usize;
                        let bytes = image.bytes_mut().get_mut(at..at + 8).ok_or_else(|| {
                            ImageError::Malformed(format!(
                                "relocation at {at:#x} outside the image"
                            ))
                        })?;
                        let value = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
                        bytes.copy_from_slice(&value.wrapping_add(delta).to_le_bytes());
                        relocations += 1;
                    }
                    other => {
                        return Err(ImageError::Malformed(format!(
                            "base relocation type {other} is not one an x64 image uses"
                        )));
                    }
                }
            }
        }
    }

    // Imports: every one bound, or the load fails naming it.
    let mut imports = Vec::new();
    if let Some(table) = pe_file
        .import_table()
        .map_err(|e| malformed("import directory", e))?
    {
        let mut descriptors = table
            .descriptors()
            .map_err(|e| malformed("import descriptors", e))?;
        while let Some(descriptor) = descriptors
            .next()
            .map_err(|e| malformed("import descriptor", e))?
        {
            let dll = table
                .name(descriptor.name.get(LE))
                .map_err(|e| malformed("import DLL name", e))?;
            let dll = String::from_utf8_lossy(dll).to_ascii_lowercase();
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                address => address,
            };
            let mut thunks = table
                .thunks(lookup)
                .map_err(|e| malformed("import lookup table", e))?;
            let mut slot = descriptor.first_thunk.get(LE) as usize;
            while let Some(thunk) = thunks
                .next::<pe::ImageNtHeaders64>()
                .map_err(|e| malformed("import thunk", e))?
            {
                let function = if thunk.is_ordinal() {
                    format!("#{}", thunk.ordinal())
                } else {
                    let (_, name) = table
                        .hint_name(thunk.address())
                        .map_err(|e| malformed("import name", e))?;
                    String::from_utf8_lossy(name).into_owned()
                };
                let address = bind(&dll, &function).ok_or_else(|| ImageError::UnknownImport {
                    dll: dll.clone(),
                    function: function.clone(),
                })?;
                let bytes = image.bytes_mut().get_mut(slot..slot + 8).ok_or_else(|| {
                    ImageError::Malformed(format!("import address table entry {slot:#x}"))
                })?;
                bytes.copy_from_slice(&(address as u64).to_le_bytes());
                imports.push(format!("{dll}!{function}"));
                slot += 8;
            }
        }
    }

    // Page protections: headers read-only, sections by their characteristics.
    image.protect(0, headers, libc::PROT_READ)?;
    for section in &sections {
        let mut prot = libc::PROT_NONE;
        for (c, bit) in [
            ('r', libc::PROT_READ),
            ('w', libc::PROT_WRITE),
            ('x', libc::PROT_EXEC),
        ] {
            if section.protection.contains(c) {
                prot |= bit;
            }
        }
        image.protect(section.rva as usize, section.size as usize, prot)?;
    }
    let base = image.leak();
    Ok(Mapped {
        base,
        size,
        entry_rva: optional.address_of_entry_point(),
        sections,
        relocations,
        imports,
    })
}

/// An anonymous read-write mapping, unmapped on drop unless leaked.
///
/// # Invariants
///
/// `base..base + len` is a private anonymous mapping owned by this value.
struct Region {
    base: usize,
    len: usize,
}

impl Region {
    fn new(len: usize) -> Result<Region, ImageError> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ImageError::Map(std::io::Error::last_os_error().to_string()));
        }
        // INVARIANT: just mapped, owned by nobody else.
        Ok(Region {
            base: p as usize,
            len,
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: by the type invariant; still read-write (protections come last, in `map`).
        unsafe { std::slice::from_raw_parts_mut(self.base as *mut u8, self.len) }
    }

    fn protect(&self, offset: usize, len: usize, prot: libc::c_int) -> Result<(), ImageError> {
        let len = len.next_multiple_of(4096).min(self.len - offset);
        // SAFETY: the range lies inside this mapping (type invariant); no Rust reference to it
        // is alive (`bytes_mut` borrows end before protections are set).
        let r = unsafe { libc::mprotect((self.base + offset) as *mut c_void, len, prot) };
        if r != 0 {
            return Err(ImageError::Map(std::io::Error::last_os_error().to_string()));
        }
        Ok(())
    }

    fn leak(self) -> usize {
        let base = self.base;
        std::mem::forget(self);
        base
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: by the type invariant; a failed load leaves no pointer into the mapping.
        unsafe { libc::munmap(self.base as *mut c_void, self.len) };
    }
}
