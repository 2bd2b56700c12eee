//! The checker accepts a well-formed driver image and rejects each kind of broken one.

mod support;

use object::pe;
use support::{DriverImage, allowlist, temp_dir};

/// Checks `image` and returns its problems.
fn problems(image: &DriverImage) -> Vec<String> {
    pecheck::check(&image.build(), &allowlist()).problems
}

/// Asserts the image is rejected with a problem that mentions `needle`.
#[track_caller]
fn assert_rejected(image: &DriverImage, needle: &str) {
    let problems = problems(image);
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning `{needle}`, got {problems:#?}"
    );
}

#[test]
fn a_well_formed_image_passes() {
    let bytes = DriverImage::valid().build();
    let report = pecheck::check(&bytes, &allowlist());
    assert!(report.passed(), "{:#?}", report.problems);
    assert_eq!(report.exports, ["DriverEntry"]);
    let imports: Vec<String> = report
        .imports
        .iter()
        .map(|i| format!("{}!{}", i.dll, i.function))
        .collect();
    assert_eq!(
        imports,
        [
            "storport.sys!StorPortInitialize",
            "storport.sys!StorPortNotification",
            "ntoskrnl.exe!memcpy",
            "ntoskrnl.exe!memset"
        ]
    );
    let names: Vec<&str> = report.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, [".text", ".rdata", ".data", ".pdata", ".reloc"]);
}

#[test]
fn rejects_an_import_off_the_allowlist() {
    let mut image = DriverImage::valid();
    image.imports[1].1.push("ExAllocatePool2".into());
    assert_rejected(
        &image,
        "ntoskrnl.exe!ExAllocatePool2 is not on the allowlist",
    );

    let mut image = DriverImage::valid();
    image
        .imports
        .push(("hal.dll".into(), vec!["KeStallExecutionProcessor".into()]));
    assert_rejected(
        &image,
        "hal.dll!KeStallExecutionProcessor is not on the allowlist",
    );
}

#[test]
fn rejects_a_writable_and_executable_section() {
    let mut image = DriverImage::valid();
    image.data_flags |= pe::IMAGE_SCN_MEM_EXECUTE.0;
    assert_rejected(&image, "section .data is both writable and executable");
}

#[test]
fn rejects_a_wrong_subsystem() {
    let mut image = DriverImage::valid();
    image.subsystem = pe::IMAGE_SUBSYSTEM_WINDOWS_GUI.0;
    assert_rejected(&image, "subsystem is 2, expected NATIVE");
}

#[test]
fn rejects_a_zero_checksum() {
    let mut image = DriverImage::valid();
    image.checksum = false;
    assert_rejected(&image, "checksum is 0");
}

#[test]
fn rejects_a_wrong_checksum() {
    let image = DriverImage::valid();
    let mut bytes = image.build();
    // Change one byte of .text padding after the checksum was computed.
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5A;
    let problems = pecheck::check(&bytes, &allowlist()).problems;
    assert!(
        problems.iter().any(|p| p.contains("the image sums to")),
        "{problems:#?}"
    );

    // And a stored value that was never right.
    let mut bytes = image.build();
    let field = pecheck::checksum::field_offset(&bytes).unwrap();
    bytes[field..field + 4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    let problems = pecheck::check(&bytes, &allowlist()).problems;
    assert!(
        problems
            .iter()
            .any(|p| p.contains("checksum is 0x12345678")),
        "{problems:#?}"
    );
}

#[test]
fn rejects_a_wrong_machine() {
    let mut image = DriverImage::valid();
    image.machine = pe::IMAGE_FILE_MACHINE_ARM64.0;
    assert_rejected(&image, "machine is 0xaa64, expected AMD64");
}

#[test]
fn rejects_an_entry_point_that_is_not_driver_entry() {
    let mut image = DriverImage::valid();
    image.entry_offset = 2;
    assert_rejected(&image, "is not DriverEntry");

    let mut image = DriverImage::valid();
    image.exports.clear();
    assert_rejected(&image, "no DriverEntry export or symbol");
}

#[test]
fn rejects_an_entry_point_outside_code() {
    let mut image = DriverImage::valid();
    image.entry_offset = 0x1000; // the first byte of .rdata
    image.exports[0].1 = 0x1000;
    assert_rejected(&image, "lies in non-executable section .rdata");
}

#[test]
fn rejects_unexpected_exports_and_sections() {
    let mut image = DriverImage::valid();
    image.exports.push(("_fltused".into(), 8));
    assert_rejected(&image, "unexpected export _fltused");

    let mut image = DriverImage::valid();
    image.extra_sections.push((
        *b"INIT\0\0\0\0",
        (pe::IMAGE_SCN_CNT_CODE | pe::IMAGE_SCN_MEM_EXECUTE | pe::IMAGE_SCN_MEM_READ).0,
    ));
    assert_rejected(&image, "unexpected section INIT");
}

#[test]
fn rejects_images_the_kernel_cannot_relocate_or_protect() {
    let mut image = DriverImage::valid();
    image.dll_characteristics &= !pe::IMAGE_DLLCHARACTERISTICS_NX_COMPAT.0;
    assert_rejected(&image, "NX_COMPAT is not set");

    let mut image = DriverImage::valid();
    image.file_characteristics |= pe::IMAGE_FILE_RELOCS_STRIPPED.0;
    assert_rejected(&image, "RELOCS_STRIPPED is set");
}

#[test]
fn rejects_bytes_that_are_not_an_image() {
    let problems = pecheck::check(b"MZ not really", &allowlist()).problems;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("not a PE32+ image"));
}

#[test]
fn the_command_fails_with_one_line_per_problem() {
    let dir = temp_dir("cli");
    let mut image = DriverImage::valid();
    image.subsystem = pe::IMAGE_SUBSYSTEM_WINDOWS_CUI.0;
    image.checksum = false;
    let path = dir.join("bad.sys");
    std::fs::write(&path, image.build()).unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pecheck"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines.iter().all(|line| line.starts_with("FAIL ")),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn package_writes_a_checksummed_image_and_a_stamped_inf() {
    let dir = temp_dir("package");
    let mut image = DriverImage::valid();
    image.checksum = false; // as the linker leaves it
    let dll = dir.join("vioblk.dll");
    let mut bytes = image.build();
    // Without the names of the tunables the INF sets, the image is not the driver that reads
    // them: the package says so.
    std::fs::write(&dll, &bytes).unwrap();
    let out = dir.join("package");
    let options = pecheck::PackageOptions {
        image: dll.clone(),
        inx: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../inf/vioblk.inx"),
        out: out.clone(),
        version: Some("0.1.0.0".into()),
        date: Some("06/15/2025".into()),
        allowlist: pecheck::default_allowlist_path(),
    };
    let package = pecheck::package(&options).unwrap();
    let missing: Vec<&String> = package
        .report
        .problems
        .iter()
        .filter(|p| p.contains("which the driver image never reads"))
        .collect();
    assert_eq!(missing.len(), 6, "{:#?}", package.report.problems);
    // The names as the driver holds them (NUL-terminated), after the sections.
    for name in [
        "NumberOfQueues",
        "QueueDepth",
        "MaxTransferKB",
        "PackedRing",
        "MsiX",
        "ResetTimeoutMs",
    ] {
        bytes.extend_from_slice(name.as_bytes());
        bytes.push(0);
    }
    std::fs::write(&dll, &bytes).unwrap();
    let package = pecheck::package(&options).unwrap();
    assert!(package.report.passed(), "{:#?}", package.report.problems);
    assert_eq!(package.sys, out.join("vioblk.sys"));
    let sys = std::fs::read(&package.sys).unwrap();
    assert_ne!(pecheck::checksum::stored(&sys).unwrap(), 0);
    assert_eq!(
        pecheck::checksum::stored(&sys).unwrap(),
        pecheck::checksum::compute(&sys).unwrap()
    );
    let inf = std::fs::read_to_string(out.join("vioblk.inf")).unwrap();
    assert!(inf.contains("DriverVer = 06/15/2025,0.1.0.0\r\n"));
    assert!(inf.contains("[vioblk.NTamd64.10.0...16299]"));
    assert!(!inf.contains("$ARCH$"));
    std::fs::remove_dir_all(dir).unwrap();
}

/// The real image, when a Windows build has produced one: it must package and pass.
#[test]
fn the_real_image_passes_when_built() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target_dirs = [
        std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from),
        Some(root.join("target")),
    ];
    let image = target_dirs
        .iter()
        .flatten()
        .map(|dir| dir.join("x86_64-pc-windows-msvc/release/vioblk.dll"))
        .find(|path| path.exists());
    let Some(image) = image else {
        println!(
            "note: no x86_64-pc-windows-msvc release vioblk.dll built; skipping the real-image check"
        );
        return;
    };
    let dir = temp_dir("real");
    let package = pecheck::package(&pecheck::PackageOptions {
        image: image.clone(),
        inx: root.join("inf/vioblk.inx"),
        out: dir.clone(),
        version: None,
        date: None,
        allowlist: pecheck::default_allowlist_path(),
    })
    .unwrap();
    assert!(
        package.report.passed(),
        "{}: {:#?}",
        image.display(),
        package.report.problems
    );
    std::fs::remove_dir_all(dir).unwrap();
}
