//! What the run should find: `vioblk.cfg` in the root of the boot FAT volume (the ESP), written
//! by the host test for each device configuration.
//!
//! One `key=value` per line (`#` starts a comment; numbers are decimal or 0x-hex):
//!
//! | key | meaning |
//! |---|---|
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

use crate::say;

/// The expectations of one run.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
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

/// Parses the file's text.
pub fn parse(text: &str) -> Result<Expect, &str> {
    let mut e = Expect::DEFAULT;
    let mut expect_seed = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(line)?;
        let (key, value) = (key.trim(), value.trim());
        if key == "name" {
            let n = value.len().min(e.name.len());
            e.name[..n].copy_from_slice(&value.as_bytes()[..n]);
            e.name_len = n;
            continue;
        }
        let v = number(value).ok_or(line)?;
        match key {
            "seed" => e.seed = v,
            "expect_seed" => expect_seed = Some(v),
            "block_size" => e.block_size = Some(u32::try_from(v).map_err(|_| line)?),
            "capacity" => e.capacity = Some(v),
            "read_only" => e.read_only = v != 0,
            "lbpme" => e.lbpme = Some(v != 0),
            "lbprz" => e.lbprz = Some(v != 0),
            "unmap" => e.unmap = v != 0,
            _ => return Err(line),
        }
    }
    e.expect_seed = expect_seed.unwrap_or(e.seed);
    Ok(e)
}

/// Reads `vioblk.cfg` from the volume the application was loaded from; the defaults (nothing
/// checked beyond the data) when there is none.
pub fn load() -> Result<Expect, ()> {
    let mut buffer = [0u8; 1024];
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
            return Ok(Expect::DEFAULT);
        }
    };
    let text = core::str::from_utf8(buffer.get(..len).unwrap_or(&[]))
        .map_err(|_| say!("FAIL: vioblk.cfg is not UTF-8"))?;
    parse(text).map_err(|line| say!("FAIL: vioblk.cfg: cannot parse `{line}`"))
}
