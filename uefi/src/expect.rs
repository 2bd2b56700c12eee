//! What the run should find: `vioblk.cfg` in the root of the boot FAT volume (the ESP), written
//! by the host test for each boot.
//!
//! One `key=value` per line (`#` starts a comment; numbers are decimal or 0x-hex). A `disk` line
//! starts the section of one virtio-blk device, named by its PCI location; the keys after it
//! describe that disk. A file without `disk` lines describes the first virtio-blk device found.
//!
//! | key | meaning |
//! |---|---|
//! | `disk` | PCI location `BB:DD.F` of the device the following keys describe |
//! | `name` | the configuration's name, echoed in the transcript |
//! | `seed` | seed of the pattern the run writes |
//! | `expect_seed` | seed of the pattern it expects to read back (default `seed`; a different value must fail) |
//! | `block_size` | logical block size READ CAPACITY must report |
//! | `capacity` | disk size in bytes |
//! | `read_only` | 1: writes must fail with DATA PROTECT / WRITE PROTECTED |
//! | `lbpme`, `lbprz` | the thin-provisioning bits READ CAPACITY(16) must report |
//! | `unmap` | 1: send UNMAP (and expect zeroes afterwards when LBPRZ is set) |

use uefi::boot;
use uefi::cstr16;
use uefi::proto::media::file::{File, FileAttribute, FileMode};

use crate::pci::Location;
use crate::say;

/// The most disks one file may describe.
pub const MAX_DISKS: usize = 12;

/// The expectations of one disk.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The device's PCI location (None: the first virtio-blk device found).
    pub location: Option<Location>,
    /// The configuration's name (ASCII).
    pub name: [u8; 32],
    /// Bytes of `name`.
    pub name_len: usize,
    /// Seed of the written pattern.
    pub seed: u64,
    /// Seed of the pattern expected on read-back.
    pub expect_seed: u64,
    /// Logical block size.
    pub block_size: Option<u32>,
    /// Disk size in bytes.
    pub capacity: Option<u64>,
    /// Whether the disk refuses writes.
    pub read_only: bool,
    /// Expected LBPME.
    pub lbpme: Option<bool>,
    /// Expected LBPRZ.
    pub lbprz: Option<bool>,
    /// Whether to send UNMAP.
    pub unmap: bool,
}

impl Expect {
    const DEFAULT: Expect = Expect {
        location: None,
        name: [0; 32],
        name_len: 0,
        seed: 0x5EED_0001,
        expect_seed: 0x5EED_0001,
        block_size: None,
        capacity: None,
        read_only: false,
        lbpme: None,
        lbprz: None,
        unmap: false,
    };

    /// The name as text.
    pub fn name(&self) -> &str {
        core::str::from_utf8(self.name.get(..self.name_len).unwrap_or(&[])).unwrap_or("?")
    }
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The disks of one run, in the order they are tested.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    disks: [Expect; MAX_DISKS],
    count: usize,
}

impl Plan {
    /// One disk, the first found, with nothing checked beyond the data.
    const DEFAULT: Plan = Plan {
        disks: [Expect::DEFAULT; MAX_DISKS],
        count: 1,
    };

    /// The disks.
    pub fn disks(&self) -> &[Expect] {
        self.disks.get(..self.count).unwrap_or(&[])
    }
}

/// Completes a section and adds it to the plan; `line` is the fault when the plan is full.
fn finish<'a>(
    plan: &mut Plan,
    mut disk: Expect,
    expect_seed: Option<u64>,
    line: &'a str,
) -> Result<(), &'a str> {
    disk.expect_seed = expect_seed.unwrap_or(disk.seed);
    let slot = plan.disks.get_mut(plan.count).ok_or(line)?;
    *slot = disk;
    plan.count += 1;
    Ok(())
}

/// Parses the file's text; on error returns the line at fault.
pub fn parse(text: &str) -> Result<Plan, &str> {
    let mut plan = Plan {
        count: 0,
        ..Plan::DEFAULT
    };
    // The section the keys go to, and its `expect_seed` until the section is complete.
    let mut current = Expect::DEFAULT;
    let mut expect_seed = None;
    let mut keys = 0usize;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(line)?;
        let (key, value) = (key.trim(), value.trim());
        if key == "disk" {
            // Keys before the first `disk` line would belong to no disk.
            match current.location {
                Some(_) => finish(&mut plan, current, expect_seed, line)?,
                None if keys > 0 => return Err(line),
                None => {}
            }
            let at = Location::parse(value).ok_or(line)?;
            // Two sections for one device would run it twice and check it once.
            if plan.disks().iter().any(|d| d.location == Some(at)) {
                return Err(line);
            }
            current = Expect {
                location: Some(at),
                ..Expect::DEFAULT
            };
            expect_seed = None;
            continue;
        }
        keys += 1;
        if key == "name" {
            let n = value.len().min(current.name.len());
            current.name[..n].copy_from_slice(&value.as_bytes()[..n]);
            current.name_len = n;
            continue;
        }
        let v = number(value).ok_or(line)?;
        match key {
            "seed" => current.seed = v,
            "expect_seed" => expect_seed = Some(v),
            "block_size" => current.block_size = Some(u32::try_from(v).map_err(|_| line)?),
            "capacity" => current.capacity = Some(v),
            "read_only" => current.read_only = v != 0,
            "lbpme" => current.lbpme = Some(v != 0),
            "lbprz" => current.lbprz = Some(v != 0),
            "unmap" => current.unmap = v != 0,
            _ => return Err(line),
        }
    }
    finish(&mut plan, current, expect_seed, "(end of file)")?;
    Ok(plan)
}

/// Reads `vioblk.cfg` from the volume the application was loaded from; the defaults (the first
/// disk, nothing checked beyond the data) when there is none.
pub fn load() -> Result<Plan, ()> {
    let mut buffer = [0u8; 4096];
    let read = (|| -> uefi::Result<usize> {
        let mut fs = boot::get_image_file_system(boot::image_handle())?;
        let mut root = fs.open_volume()?;
        let handle = root.open(
            cstr16!("vioblk.cfg"),
            FileMode::Read,
            FileAttribute::empty(),
        )?;
        let Some(mut file) = handle.into_regular_file() else {
            return Err(uefi::Status::NOT_FOUND.into());
        };
        file.read(&mut buffer).map_err(|e| e.status().into())
    })();
    let len = match read {
        Ok(len) => len,
        Err(e) => {
            say!(
                "expectations: no vioblk.cfg ({:?}); checking the data only",
                e.status()
            );
            return Ok(Plan::DEFAULT);
        }
    };
    if len == buffer.len() {
        say!("FAIL: vioblk.cfg is longer than {len} bytes");
        return Err(());
    }
    let text = core::str::from_utf8(buffer.get(..len).unwrap_or(&[]))
        .map_err(|_| say!("FAIL: vioblk.cfg is not UTF-8"))?;
    parse(text).map_err(|line| say!("FAIL: vioblk.cfg: cannot use `{line}`"))
}
