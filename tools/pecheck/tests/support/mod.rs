//! Small PE32+ driver images written with `object::write`, valid by default and broken on
//! request, so the checker's tests need no Windows target and no real vioblk.sys.

#![allow(dead_code, reason = "each test binary uses part of the support module")]

use object::pe;
use object::write::pe::{NtHeaders, Writer};

/// The text section's code: `xor eax, eax; ret` (DriverEntry returns STATUS_SUCCESS), then one
/// register access as the register module emits it (the marker, `mov eax, dword ptr [rcx]`,
/// `ret`), padded.
const CODE: [u8; 16] = [
    0x31, 0xC0, 0xC3, 0x0F, 0x1F, 0x80, 0x4D, 0x4D, 0x49, 0x4F, 0x8B, 0x01, 0xC3, 0xCC, 0xCC, 0xCC,
];

/// What to put in a test image; [`DriverImage::valid`] passes every rule.
#[derive(Debug, Clone)]
pub struct DriverImage {
    pub machine: u16,
    pub subsystem: u16,
    pub file_characteristics: u16,
    pub dll_characteristics: u16,
    /// `(dll, functions)`.
    pub imports: Vec<(String, Vec<String>)>,
    /// `(name, offset into .text)`.
    pub exports: Vec<(String, u32)>,
    /// Entry point as an offset into `.text`.
    pub entry_offset: u32,
    /// Characteristics of the `.data` section.
    pub data_flags: u32,
    /// Extra sections `(name, characteristics)`, each 16 bytes of zeros.
    pub extra_sections: Vec<([u8; 8], u32)>,
    /// Whether to compute and write the checksum.
    pub checksum: bool,
}

impl DriverImage {
    /// An image that meets every rule of `pecheck::check` with the repository's allowlist.
    pub fn valid() -> Self {
        Self {
            machine: pe::IMAGE_FILE_MACHINE_AMD64.0,
            subsystem: pe::IMAGE_SUBSYSTEM_NATIVE.0,
            file_characteristics: (pe::IMAGE_FILE_EXECUTABLE_IMAGE
                | pe::IMAGE_FILE_LARGE_ADDRESS_AWARE
                | pe::IMAGE_FILE_DLL)
                .0,
            dll_characteristics: (pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
                | pe::IMAGE_DLLCHARACTERISTICS_HIGH_ENTROPY_VA
                | pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT)
                .0,
            imports: vec![
                (
                    "storport.sys".into(),
                    vec!["StorPortInitialize".into(), "StorPortNotification".into()],
                ),
                (
                    "ntoskrnl.exe".into(),
                    vec!["memcpy".into(), "memset".into()],
                ),
            ],
            exports: vec![("DriverEntry".into(), 0)],
            entry_offset: 0,
            data_flags: (pe::IMAGE_SCN_CNT_INITIALIZED_DATA
                | pe::IMAGE_SCN_MEM_READ
                | pe::IMAGE_SCN_MEM_WRITE)
                .0,
            extra_sections: Vec::new(),
            checksum: true,
        }
    }

    /// Writes the image.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = Writer::new(true, 0x1000, 0x200, &mut out);
        writer.reserve_dos_header_and_stub();
        writer.reserve_nt_headers(pe::IMAGE_NUMBEROF_DIRECTORY_ENTRIES);
        let section_count = 5 + self.extra_sections.len();
        writer.reserve_section_headers(u16::try_from(section_count).unwrap());

        let text = writer.reserve_text_section(CODE.len() as u32);
        // The layout of .rdata does not depend on its address, only the RVAs in it do.
        let rdata_len = self.rdata(0, 0).bytes.len() as u32;
        let rdata = writer.reserve_rdata_section(rdata_len);
        let rdata_contents = self.rdata(rdata.virtual_address, text.virtual_address);
        let data =
            writer.reserve_section(*b".data\0\0\0", pe::SectionFlags(self.data_flags), 16, 16);
        let pdata = writer.reserve_pdata_section(12);
        let extras: Vec<_> = self
            .extra_sections
            .iter()
            .map(|(name, flags)| writer.reserve_section(*name, pe::SectionFlags(*flags), 16, 16))
            .collect();
        // One absolute address (a pointer in .data) so the image has a relocation table.
        writer.add_reloc(data.virtual_address, pe::IMAGE_REL_BASED_DIR64);
        writer.reserve_reloc_section();

        let (import_rva, import_size) = rdata_contents.import_directory;
        writer.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IMPORT, import_rva, import_size);
        if let Some((export_rva, export_size)) = rdata_contents.export_directory {
            writer.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_EXPORT, export_rva, export_size);
        }
        let (iat_rva, iat_size) = rdata_contents.iat;
        writer.set_data_directory(pe::IMAGE_DIRECTORY_ENTRY_IAT, iat_rva, iat_size);

        writer.write_dos_header_and_stub().unwrap();
        writer.write_nt_headers(NtHeaders {
            machine: pe::Machine(self.machine),
            time_date_stamp: 0,
            characteristics: pe::FileFlags(self.file_characteristics),
            major_linker_version: 14,
            minor_linker_version: 0,
            address_of_entry_point: text.virtual_address + self.entry_offset,
            image_base: 0x1_4000_0000,
            major_operating_system_version: 10,
            minor_operating_system_version: 0,
            major_image_version: 0,
            minor_image_version: 0,
            major_subsystem_version: 10,
            minor_subsystem_version: 0,
            subsystem: pe::Subsystem(self.subsystem),
            dll_characteristics: pe::DllFlags(self.dll_characteristics),
            size_of_stack_reserve: 0x4_0000,
            size_of_stack_commit: 0x1000,
            size_of_heap_reserve: 0,
            size_of_heap_commit: 0,
        });
        writer.write_section_headers();
        writer.write_section(text.file_offset, &CODE);
        writer.write_section(rdata.file_offset, &rdata_contents.bytes);
        writer.write_section(data.file_offset, &[0x11; 16]);
        // One RUNTIME_FUNCTION covering the code (begin, end, unwind info: none needed here).
        let mut function = Vec::new();
        function.extend_from_slice(&text.virtual_address.to_le_bytes());
        function.extend_from_slice(&(text.virtual_address + 3).to_le_bytes());
        function.extend_from_slice(&0u32.to_le_bytes());
        writer.write_section(pdata.file_offset, &function);
        for extra in &extras {
            writer.write_section(extra.file_offset, &[0; 16]);
        }
        writer.write_reloc_section();

        if self.checksum {
            pecheck::checksum::update(&mut out).unwrap();
        }
        out
    }

    /// Lays out the import directory (descriptors, lookup tables, IAT, names) and the export
    /// directory in one `.rdata` section at `base`.
    fn rdata(&self, base: u32, text: u32) -> Rdata {
        let mut bytes = Vec::new();
        let at = |bytes: &Vec<u8>| base + bytes.len() as u32;

        // Import descriptors: one per DLL plus the null terminator, patched below.
        let descriptors_at = bytes.len();
        bytes.resize(bytes.len() + 20 * (self.imports.len() + 1), 0);
        let mut iat_start = None;
        let mut iat_end = 0;
        for (index, (dll, functions)) in self.imports.iter().enumerate() {
            // Hint/name entries first, so the thunks can point at them.
            let mut hint_names = Vec::new();
            for function in functions {
                align(&mut bytes, 2);
                hint_names.push(at(&bytes));
                bytes.extend_from_slice(&0u16.to_le_bytes());
                bytes.extend_from_slice(function.as_bytes());
                bytes.push(0);
            }
            let dll_name = at(&bytes);
            bytes.extend_from_slice(dll.as_bytes());
            bytes.push(0);
            align(&mut bytes, 8);
            let lookup = at(&bytes);
            for rva in &hint_names {
                bytes.extend_from_slice(&u64::from(*rva).to_le_bytes());
            }
            bytes.extend_from_slice(&0u64.to_le_bytes());
            let iat = at(&bytes);
            iat_start.get_or_insert(iat);
            for rva in &hint_names {
                bytes.extend_from_slice(&u64::from(*rva).to_le_bytes());
            }
            bytes.extend_from_slice(&0u64.to_le_bytes());
            iat_end = at(&bytes);

            let descriptor = descriptors_at + 20 * index;
            bytes[descriptor..descriptor + 4].copy_from_slice(&lookup.to_le_bytes());
            bytes[descriptor + 12..descriptor + 16].copy_from_slice(&dll_name.to_le_bytes());
            bytes[descriptor + 16..descriptor + 20].copy_from_slice(&iat.to_le_bytes());
        }
        let import_directory = (
            base + descriptors_at as u32,
            20 * (self.imports.len() as u32 + 1),
        );
        let iat_start = iat_start.unwrap_or(base);
        let iat = (iat_start, iat_end.saturating_sub(iat_start));

        // Export directory, names sorted as the loader's binary search expects.
        let export_directory = (!self.exports.is_empty()).then(|| {
            let mut exports = self.exports.clone();
            exports.sort();
            align(&mut bytes, 4);
            let directory = bytes.len();
            let directory_rva = at(&bytes);
            bytes.resize(bytes.len() + 40, 0);
            let count = exports.len() as u32;
            let functions = at(&bytes);
            for (_, offset) in &exports {
                bytes.extend_from_slice(&(text + offset).to_le_bytes());
            }
            let names_table = bytes.len();
            let names = at(&bytes);
            bytes.resize(bytes.len() + 4 * exports.len(), 0);
            let ordinals = at(&bytes);
            for index in 0..exports.len() {
                bytes.extend_from_slice(&(index as u16).to_le_bytes());
            }
            for (index, (name, _)) in exports.iter().enumerate() {
                let name_rva = at(&bytes);
                bytes.extend_from_slice(name.as_bytes());
                bytes.push(0);
                let slot = names_table + 4 * index;
                bytes[slot..slot + 4].copy_from_slice(&name_rva.to_le_bytes());
            }
            let dll_name = at(&bytes);
            bytes.extend_from_slice(b"vioblk.sys\0");
            let fields: [(usize, u32); 7] = [
                (12, dll_name),
                (16, 1),
                (20, count),
                (24, count),
                (28, functions),
                (32, names),
                (36, ordinals),
            ];
            for (offset, value) in fields {
                let at = directory + offset;
                bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            (directory_rva, at(&bytes) - directory_rva)
        });

        Rdata {
            bytes,
            import_directory,
            export_directory,
            iat,
        }
    }
}

struct Rdata {
    bytes: Vec<u8>,
    import_directory: (u32, u32),
    export_directory: Option<(u32, u32)>,
    iat: (u32, u32),
}

fn align(bytes: &mut Vec<u8>, to: usize) {
    while !bytes.len().is_multiple_of(to) {
        bytes.push(0);
    }
}

/// The repository's allowlist.
pub fn allowlist() -> pecheck::Allowlist {
    pecheck::Allowlist::load(&pecheck::default_allowlist_path()).unwrap()
}

/// A fresh empty directory under the system temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pecheck-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
