//! The rules a vioblk image must meet, and the reader that checks them.
//!
//! | rule | why |
//! |------|-----|
//! | machine AMD64, PE32+ | the only architecture the package targets (`NTamd64`) |
//! | subsystem NATIVE | loaded by the kernel (`/SUBSYSTEM:NATIVE`), not the Win32 loader |
//! | entry point = the `DriverEntry` export, in an executable section | `/ENTRY:DriverEntry`; rustc exports the `#[no_mangle]` `DriverEntry` from the cdylib (link.exe's LNK4216, which wdk-build silences), so the export is the independent witness of where the entry must be; without an export the COFF symbol table is used, and an image with neither fails |
//! | exports: `DriverEntry` only | `_fltused` and the runtime pieces stay internal (kernel_rt defines `_fltused` in assembly for this reason) |
//! | `IMAGE_FILE_EXECUTABLE_IMAGE`, not `RELOCS_STRIPPED`; `IMAGE_FILE_DLL` accepted | rustc links a cdylib with `/DLL`, so every windows-drivers-rs driver carries the DLL bit; the kernel's image loader does not look at it (export drivers such as storport.sys are DLLs too) |
//! | `DYNAMIC_BASE`, `NX_COMPAT` | the kernel relocates drivers (KASLR; an image without absolute addresses has no `.reloc` and needs none, but `RELOCS_STRIPPED` must stay clear); HVCI (memory integrity) requires NX |
//! | section alignment a multiple of 4 KiB | HVCI maps sections with page protections |
//! | no section both writable and executable | HVCI (W^X) |
//! | sections from [`ALLOWED_SECTIONS`] only | what rust-lld emits for this driver; anything else (`.tls`, `.CRT`, `INIT`, `.idata` merged elsewhere...) means the link went somewhere unexpected |
//! | no TLS directory, no delay imports | the kernel loader supports neither |
//! | every import on the allowlist, none by ordinal | a physical Storport miniport calls storport.sys (HwStorPortProhibitedDDIs); each kernel import is justified in the allowlist |
//! | checksum non-zero and correct | the kernel verifies it for boot drivers; the linker leaves 0 |
//! | every register access a fixed `mov`/`movzx [reg]` after the marker ([`registers`](crate::registers)) | the simulator's MMIO emulation knows those forms and no others; a volatile load LLVM folded into a `cmp` would be neither checkable nor emulable |

use object::pe;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{LittleEndian as LE, Object, ObjectSymbol};

use crate::{Allowlist, checksum};

/// Sections a vioblk image may have, with what each holds.
///
/// - `.text`: code (read + execute);
/// - `.rdata`: constants, the import and export directories (rust-lld merges `.idata` and
///   `.edata` into it), unwind data (`.xdata`) and the debug directory;
/// - `.data`: statics (read + write; rust-lld merges `.bss` into it);
/// - `.pdata`: the x64 function table the kernel's exception dispatcher and stack walker use;
/// - `.reloc`: base relocations (discardable).
///
/// Not here: `INIT`, which only MSVC's `#pragma alloc_text(INIT, ...)` produces (nothing in Rust
/// places code there), and `PAGE`, for the same reason: all of a Storport miniport runs at
/// DISPATCH_LEVEL or above anyway.
pub const ALLOWED_SECTIONS: [&str; 5] = [".text", ".rdata", ".data", ".pdata", ".reloc"];

/// The entry point's name.
pub const ENTRY_SYMBOL: &str = "DriverEntry";

/// One imported function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The DLL as the import directory names it (`storport.sys`).
    pub dll: String,
    /// The function name, or `#ordinal` for an import by ordinal.
    pub function: String,
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name, NUL padding removed.
    pub name: String,
    /// `VirtualSize`.
    pub virtual_size: u32,
    /// `Characteristics`.
    pub characteristics: u32,
}

impl Section {
    /// `r`, `w`, `x` and `d` (discardable) flags, like `dumpbin`'s summary.
    pub fn protection(&self) -> String {
        let flag = |bit: u32, c: char| {
            if self.characteristics & bit != 0 {
                c
            } else {
                '-'
            }
        };
        [
            flag(pe::IMAGE_SCN_MEM_READ.0, 'r'),
            flag(pe::IMAGE_SCN_MEM_WRITE.0, 'w'),
            flag(pe::IMAGE_SCN_MEM_EXECUTE.0, 'x'),
            flag(pe::IMAGE_SCN_MEM_DISCARDABLE.0, 'd'),
        ]
        .iter()
        .collect()
    }
}

/// What the check found: the problems (empty when the image passes) and a summary.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One sentence per problem.
    pub problems: Vec<String>,
    /// The image's imports, in directory order.
    pub imports: Vec<Import>,
    /// The image's exports by name.
    pub exports: Vec<String>,
    /// The section headers.
    pub sections: Vec<Section>,
    /// The file size in bytes.
    pub size: usize,
    /// `AddressOfEntryPoint`.
    pub entry: u32,
    /// The stored `CheckSum`.
    pub checksum: u32,
    /// The register accesses in the code sections, by form.
    pub register_accesses: crate::registers::Accesses,
}

impl Report {
    /// Returns whether the image met every rule.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a driver image against the rules of this module and the import allowlist.
pub fn check(image: &[u8], allowlist: &Allowlist) -> Report {
    let mut report = Report {
        size: image.len(),
        ..Report::default()
    };
    let file = match PeFile64::parse(image) {
        Ok(file) => file,
        Err(error) => {
            report.problems.push(format!("not a PE32+ image: {error}"));
            return report;
        }
    };
    let problems = &mut report.problems;
    let nt = file.nt_headers();
    let header = nt.file_header();
    let optional = nt.optional_header();

    // Machine and subsystem.
    let machine = header.machine.get(LE);
    if machine != pe::IMAGE_FILE_MACHINE_AMD64 {
        problems.push(format!(
            "machine is {:#06x}, expected AMD64 (0x8664)",
            machine.0
        ));
    }
    let subsystem = optional.subsystem();
    if subsystem != pe::IMAGE_SUBSYSTEM_NATIVE {
        problems.push(format!(
            "subsystem is {}, expected NATIVE (1): link with /SUBSYSTEM:NATIVE",
            subsystem.0
        ));
    }

    // File and DLL characteristics.
    let characteristics = header.characteristics.get(LE);
    if !characteristics.contains(pe::IMAGE_FILE_EXECUTABLE_IMAGE) {
        problems.push("IMAGE_FILE_EXECUTABLE_IMAGE is not set: the link did not finish".into());
    }
    if characteristics.contains(pe::IMAGE_FILE_RELOCS_STRIPPED) {
        problems.push("IMAGE_FILE_RELOCS_STRIPPED is set: the kernel must relocate drivers".into());
    }
    let dll_characteristics = optional.dll_characteristics();
    for (flag, name, why) in [
        (
            pe::IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE,
            "DYNAMIC_BASE",
            "the kernel loads drivers at a randomized base",
        ),
        (
            pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT,
            "NX_COMPAT",
            "HVCI requires it",
        ),
    ] {
        if !dll_characteristics.contains(flag) {
            problems.push(format!("DLL characteristic {name} is not set: {why}"));
        }
    }
    let directory = |index: usize| {
        file.data_directories()
            .get(index)
            .map_or((0, 0), |d| (d.virtual_address.get(LE), d.size.get(LE)))
    };
    if directory(pe::IMAGE_DIRECTORY_ENTRY_TLS) != (0, 0) {
        problems.push("the image has a TLS directory: kernel images cannot use TLS".into());
    }
    if directory(pe::IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT) != (0, 0) {
        problems.push(
            "the image has delay-load imports: the kernel loader does not support them".into(),
        );
    }
    let section_alignment = optional.section_alignment();
    if section_alignment == 0 || section_alignment % 0x1000 != 0 {
        problems.push(format!(
            "section alignment is {section_alignment:#x}, expected a multiple of 0x1000 (HVCI)"
        ));
    }

    // Sections.
    let section_table = file.section_table();
    for section in section_table.iter() {
        let name = String::from_utf8_lossy(section.raw_name()).into_owned();
        let flags = section.characteristics.get(LE);
        let entry = Section {
            name,
            virtual_size: section.virtual_size.get(LE),
            characteristics: flags.0,
        };
        if flags.contains(pe::IMAGE_SCN_MEM_WRITE) && flags.contains(pe::IMAGE_SCN_MEM_EXECUTE) {
            problems.push(format!(
                "section {} is both writable and executable (W^X, HVCI)",
                entry.name
            ));
        }
        if !ALLOWED_SECTIONS.contains(&entry.name.as_str()) {
            problems.push(format!(
                "unexpected section {} ({}); allowed: {}",
                entry.name,
                entry.protection(),
                ALLOWED_SECTIONS.join(" ")
            ));
        }
        report.sections.push(entry);
    }

    // Entry point and exports.
    let entry = optional.address_of_entry_point();
    report.entry = entry;
    let entry_section = section_table.iter().find(|section| {
        let start = section.virtual_address.get(LE);
        let size = section.virtual_size.get(LE);
        entry >= start && entry - start < size
    });
    match entry_section {
        Some(section)
            if section
                .characteristics
                .get(LE)
                .contains(pe::IMAGE_SCN_MEM_EXECUTE) => {}
        Some(section) => problems.push(format!(
            "entry point {entry:#x} lies in non-executable section {}",
            String::from_utf8_lossy(section.raw_name())
        )),
        None => problems.push(format!("entry point {entry:#x} lies in no section")),
    }
    let mut entry_witness: Option<u32> = None;
    match file.export_table() {
        Ok(Some(table)) => match table.exports() {
            Ok(exports) => {
                for export in exports {
                    let name = export.name.map_or_else(
                        || format!("#{}", export.ordinal.0),
                        |n| String::from_utf8_lossy(n).into_owned(),
                    );
                    match export.target {
                        object::read::pe::ExportTarget::Address(rva) if name == ENTRY_SYMBOL => {
                            entry_witness = Some(rva);
                        }
                        _ if name == ENTRY_SYMBOL => {
                            problems.push(format!("export {ENTRY_SYMBOL} is a forwarder"));
                        }
                        _ => problems.push(format!(
                            "unexpected export {name}: the image should export {ENTRY_SYMBOL} only"
                        )),
                    }
                    report.exports.push(name);
                }
            }
            Err(error) => problems.push(format!("malformed export table: {error}")),
        },
        Ok(None) => {}
        Err(error) => problems.push(format!("malformed export directory: {error}")),
    }
    if entry_witness.is_none() {
        // No export: fall back on the COFF symbol table, which linkers rarely keep in images.
        let image_base = optional.image_base();
        entry_witness = file
            .symbol_by_name(ENTRY_SYMBOL)
            .and_then(|symbol| symbol.address().checked_sub(image_base))
            .and_then(|rva| u32::try_from(rva).ok());
    }
    match entry_witness {
        Some(rva) if rva == entry => {}
        Some(rva) => problems.push(format!(
            "entry point {entry:#x} is not {ENTRY_SYMBOL} ({rva:#x}): link with /ENTRY:{ENTRY_SYMBOL}"
        )),
        None => problems.push(format!(
            "cannot verify the entry point: the image has no {ENTRY_SYMBOL} export or symbol"
        )),
    }

    // Imports.
    match read_imports(&file) {
        Ok(imports) => {
            for import in &imports {
                if import.function.starts_with('#') {
                    problems.push(format!(
                        "import {}!{} is by ordinal: import by name so the allowlist can say what it is",
                        import.dll, import.function
                    ));
                } else if !allowlist.allows(&import.dll, &import.function) {
                    problems.push(format!(
                        "import {}!{} is not on the allowlist",
                        import.dll, import.function
                    ));
                }
            }
            report.imports = imports;
        }
        Err(error) => problems.push(format!("malformed import table: {error}")),
    }

    // Register accesses.
    let image_base = optional.image_base();
    for section in section_table.iter() {
        if !section
            .characteristics
            .get(LE)
            .contains(pe::IMAGE_SCN_MEM_EXECUTE)
        {
            continue;
        }
        let name = String::from_utf8_lossy(section.raw_name()).into_owned();
        let Ok(data) = section.pe_data(image) else {
            problems.push(format!("code section {name} lies outside the file"));
            continue;
        };
        let len = data.len().min(section.virtual_size.get(LE) as usize);
        let address = image_base + u64::from(section.virtual_address.get(LE));
        let found = crate::registers::scan(&data[..len], address);
        let accesses = &mut report.register_accesses;
        for (total, n) in accesses.counts.iter_mut().zip(found.counts) {
            *total += n;
        }
        problems.extend(
            found
                .problems
                .into_iter()
                .map(|p| format!("section {name}: {p}")),
        );
    }

    // Checksum.
    let stored = optional.check_sum();
    report.checksum = stored;
    match checksum::compute(image) {
        Ok(_) if stored == 0 => problems.push(
            "checksum is 0: the linker leaves it unset; package with `pecheck package`".into(),
        ),
        Ok(computed) if computed != stored => problems.push(format!(
            "checksum is {stored:#010x}, the image sums to {computed:#010x}"
        )),
        Ok(_) => {}
        Err(error) => problems.push(format!("cannot compute the checksum: {error}")),
    }

    report
}

/// Reads every imported function, by DLL, in directory order.
fn read_imports(file: &PeFile64<'_>) -> object::Result<Vec<Import>> {
    let mut imports = Vec::new();
    let Some(table) = file.import_table()? else {
        return Ok(imports);
    };
    let mut descriptors = table.descriptors()?;
    while let Some(descriptor) = descriptors.next()? {
        let dll = String::from_utf8_lossy(table.name(descriptor.name.get(LE))?).into_owned();
        // The lookup table (OriginalFirstThunk) keeps the names; some linkers only fill the IAT.
        let lookup = match descriptor.original_first_thunk.get(LE) {
            0 => descriptor.first_thunk.get(LE),
            address => address,
        };
        let mut thunks = table.thunks(lookup)?;
        while let Some(thunk) = thunks.next::<pe::ImageNtHeaders64>()? {
            let function = match table.import::<pe::ImageNtHeaders64>(thunk)? {
                object::read::pe::Import::Name(_hint, name) => {
                    String::from_utf8_lossy(name).into_owned()
                }
                object::read::pe::Import::Ordinal(ordinal) => format!("#{ordinal}"),
            };
            imports.push(Import {
                dll: dll.clone(),
                function,
            });
        }
    }
    Ok(imports)
}
