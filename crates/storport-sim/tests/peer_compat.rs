//! tools/peer: the compatibility header and the mingw-w64 build of a Storport miniport.
//!
//! `compat_header_builds_a_native_miniport` builds `tools/peer/test/tiny_miniport.c` (written
//! here; it uses every part of the header viostor needs) with Debian's mingw-w64 and checks the
//! result is a native-subsystem PE importing exactly the storport.sys and ntoskrnl.exe routines
//! it calls. Without mingw-w64 it prints SKIPPED (and fails when `CI` is set and
//! `VIOBLK_PEER_REQUIRED` is too).
//!
//! `viostor_builds_from_a_supplied_checkout` runs `tools/peer/viostor.sh` on the checkout named by
//! `VIOSTOR_SRC`; without it, SKIPPED. Nothing of viostor is in this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{Object, pe};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vioblk-peer-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a tools/peer script; `None` (after printing SKIPPED) when mingw-w64 is missing.
fn run(script: &str, args: &[&Path]) -> Option<()> {
    let out = Command::new("bash")
        .arg(root().join(script))
        .args(args)
        .output()
        .expect("bash runs");
    if out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("mingw-w64") {
        eprintln!("SKIPPED: {}", String::from_utf8_lossy(&out.stderr).trim());
        assert!(
            std::env::var_os("VIOBLK_PEER_REQUIRED").is_none(),
            "VIOBLK_PEER_REQUIRED is set but mingw-w64 is missing"
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

/// (native subsystem?, imports as "dll!name").
fn inspect(path: &Path) -> (bool, Vec<String>) {
    let bytes = std::fs::read(path).unwrap();
    let file = PeFile64::parse(&*bytes).expect("a PE32+ image");
    let native = file.nt_headers().optional_header().subsystem() == pe::IMAGE_SUBSYSTEM_NATIVE;
    let mut imports: Vec<String> = file
        .imports()
        .unwrap()
        .map(|i| {
            let i = i.unwrap();
            format!(
                "{}!{}",
                String::from_utf8_lossy(i.library()),
                match i.name() {
                    object::read::NameOrOrdinal::Name(n) => String::from_utf8_lossy(n).into_owned(),
                    object::read::NameOrOrdinal::Ordinal(o) => format!("#{o}"),
                }
            )
        })
        .collect();
    imports.sort();
    (native, imports)
}

#[test]
fn compat_header_builds_a_native_miniport() {
    let dir = out_dir("tiny");
    let sys = dir.join("tiny.sys");
    if run("tools/peer/test/tiny.sh", &[&sys]).is_none() {
        return;
    }
    let (native, imports) = inspect(&sys);
    assert!(native, "subsystem NATIVE");
    assert_eq!(
        imports,
        [
            "ntoskrnl.exe!DbgPrint",
            "ntoskrnl.exe!KeBugCheck",
            "ntoskrnl.exe!KeQueryActiveProcessorCountEx",
            "ntoskrnl.exe!MmGetPhysicalAddress",
            "ntoskrnl.exe!memset",
            "storport.sys!StorPortExtendedFunction",
            "storport.sys!StorPortGetDeviceBase",
            "storport.sys!StorPortInitialize",
            "storport.sys!StorPortMoveMemory",
            "storport.sys!StorPortNotification",
            "storport.sys!StorPortSetDeviceQueueDepth",
        ]
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn viostor_builds_from_a_supplied_checkout() {
    let Some(src) = std::env::var_os("VIOSTOR_SRC") else {
        eprintln!("SKIPPED: set VIOSTOR_SRC to a kvm-guest-drivers-windows checkout");
        return;
    };
    let dir = out_dir("viostor");
    let sys = dir.join("viostor.sys");
    if run("tools/peer/viostor.sh", &[Path::new(&src), &sys]).is_none() {
        return;
    }
    let (native, imports) = inspect(&sys);
    assert!(native, "subsystem NATIVE");
    for needed in [
        "storport.sys!StorPortInitialize",
        "storport.sys!StorPortSetDeviceQueueDepth",
        "storport.sys!StorPortMoveMemory",
        "ntoskrnl.exe!MmGetPhysicalAddress",
        "ntoskrnl.exe!KeQueryActiveProcessorCountEx",
    ] {
        assert!(
            imports.iter().any(|i| i == needed),
            "viostor.sys lacks {needed}: {imports:?}"
        );
    }
    assert!(std::fs::read_to_string(dir.join("viostor.sys.commit")).is_ok());
    std::fs::remove_dir_all(dir).ok();
}
