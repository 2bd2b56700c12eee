//! Reads a vioblk driver image back and checks it is a well-formed kernel driver; packages it.
//!
//! The Windows image is linked on any host by rust-lld (DESIGN.md, "Windows image from Linux"),
//! so nothing from the WDK vouches for it. This crate does, from the bytes:
//!
//! - [`check()`] holds the image to the rules in [`check`](mod@check) (machine, subsystem, entry
//!   point, characteristics, sections, imports against the [`Allowlist`], checksum, and every
//!   register access one of the fixed instruction forms: [`registers`]);
//! - [`package()`] writes the package folder: `<name>.sys` with its PE [`checksum`] computed and
//!   written, `<name>.inf` stamped from the INX as `stampinf` would ([`inf`]), then checks the
//!   written `.sys`. The catalog and the signature need Windows tools (`inf2cat`, `signtool`):
//!   the `cargo make` flow on a Windows host does those.
#![forbid(unsafe_code)]

mod allowlist;
pub mod check;
pub mod checksum;
pub mod inf;
pub mod registers;

use std::fmt;
use std::path::{Path, PathBuf};

pub use allowlist::Allowlist;
pub use check::{Report, check};

/// A failure to read, parse or write something (not a rule the image breaks: see [`Report`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// Makes an error from a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The allowlist kept beside this crate.
pub fn default_allowlist_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("allowlist.txt")
}

/// The driver crate's version (the workspace root manifest's `[package] version`), read at
/// compile time so the package step needs no manifest at run time.
pub fn driver_crate_version() -> Result<String, Error> {
    let manifest = include_str!("../../../Cargo.toml");
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package
            && let Some(value) = line.strip_prefix("version")
            && let Some(value) = value.trim_start().strip_prefix('=')
        {
            return Ok(value.trim().trim_matches('"').to_owned());
        }
    }
    Err(Error::new("the root Cargo.toml has no [package] version"))
}

/// What [`package()`] needs.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// The linked image (cargo's `vioblk.dll`).
    pub image: PathBuf,
    /// The INF template; its file stem names the package files (`vioblk.inx`).
    pub inx: PathBuf,
    /// The package folder, created if missing.
    pub out: PathBuf,
    /// `DriverVer` version `a.b.c.d`; default: the driver crate's version.
    pub version: Option<String>,
    /// `DriverVer` date `MM/DD/YYYY`; default: today (or `SOURCE_DATE_EPOCH`).
    pub date: Option<String>,
    /// The import allowlist.
    pub allowlist: PathBuf,
}

/// What [`package()`] wrote, and the check of the written image.
#[derive(Debug, Clone)]
pub struct Package {
    /// The written `.sys`.
    pub sys: PathBuf,
    /// The written `.inf`.
    pub inf: PathBuf,
    /// The `DriverVer` stamped into the INF.
    pub driver_ver: String,
    /// The check of the written `.sys`, plus package-level problems.
    pub report: Report,
}

/// Writes `<out>/<name>.sys` (checksum set) and `<out>/<name>.inf` (stamped), then checks the
/// written image.
pub fn package(options: &PackageOptions) -> Result<Package, Error> {
    let allowlist = Allowlist::load(&options.allowlist)?;
    let name = options
        .inx
        .file_stem()
        .and_then(|stem| stem.to_str())
        .ok_or_else(|| Error::new(format!("{} has no file name", options.inx.display())))?
        .to_owned();

    let mut image = read(&options.image)?;
    checksum::update(&mut image)
        .map_err(|error| Error::new(format!("{}: {error}", options.image.display())))?;

    let version = match &options.version {
        Some(version) => version.clone(),
        None => inf::driver_version_from_crate(&driver_crate_version()?)?,
    };
    let date = match &options.date {
        Some(date) => date.clone(),
        None => inf::today()?,
    };
    let inx = std::fs::read_to_string(&options.inx)
        .map_err(|error| Error::new(format!("cannot read {}: {error}", options.inx.display())))?;
    let stamped = inf::stamp(&inx, inf::ARCH_AMD64, &date, &version)?;

    std::fs::create_dir_all(&options.out)
        .map_err(|error| Error::new(format!("cannot create {}: {error}", options.out.display())))?;
    let sys = options.out.join(format!("{name}.sys"));
    let inf_path = options.out.join(format!("{name}.inf"));
    write(&sys, &image)?;
    write(&inf_path, stamped.as_bytes())?;

    // Check what is on disk, not what is in memory.
    let mut report = check(&read(&sys)?, &allowlist);
    if report.register_accesses.total() == 0 {
        report.problems.push(
            "the driver image has no register access after the marker: it was not built from \
             crates/storport's register module"
                .into(),
        );
    }
    // The INF's tunables are values the driver reads: each name it writes under
    // Parameters\Device is in the image (the driver passes it to StorPortRegistryRead as a
    // NUL-terminated string), and each is a REG_DWORD (the only type the driver reads).
    let image_bytes = read(&sys)?;
    report
        .problems
        .extend(inf::check_device_parameters(&stamped, &image_bytes));
    let sys_name = format!("{name}.sys").to_ascii_lowercase();
    if !stamped.to_ascii_lowercase().contains(&sys_name) {
        report
            .problems
            .push(format!("{} never names {name}.sys", inf_path.display()));
    }
    Ok(Package {
        sys,
        inf: inf_path,
        driver_ver: format!("{date},{version}"),
        report,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|error| Error::new(format!("cannot read {}: {error}", path.display())))
}

fn write(path: &Path, data: &[u8]) -> Result<(), Error> {
    std::fs::write(path, data)
        .map_err(|error| Error::new(format!("cannot write {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_driver_crate_version() {
        let version = driver_crate_version().unwrap();
        assert!(
            inf::driver_version_from_crate(&version).is_ok(),
            "{version}"
        );
    }
}
