//! What the report says about a driver image run in place of the linked driver
//! (`--driver-image PATH`): which file (path, size, PE checksum), how deep each routine went on
//! its 24 KiB kernel stack, and how many register accesses the MMIO emulation performed.

use std::fmt::Write as _;

use serde_json::{Value, json};
use storport_sim::image::{self, Image};

/// The image part of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReport {
    /// The file the image was loaded from.
    pub path: String,
    /// Its size in bytes.
    pub size: usize,
    /// The PE checksum stored in it.
    pub checksum: u32,
    /// Per routine handed to Storport: calls and deepest kernel-stack use.
    pub stack_use: Vec<image::StackUse>,
    /// Register accesses emulated: read 8/16/32/64, write 8/16/32/64.
    pub mmio: [u64; 8],
}

impl ImageReport {
    /// The figures for `image` so far (stack use and MMIO counts are process-wide).
    pub fn of(image: &Image) -> ImageReport {
        ImageReport {
            path: image.path.display().to_string(),
            size: image.file_size,
            checksum: image.checksum,
            stack_use: image::stack_use(),
            mmio: image::mmio_accesses(),
        }
    }

    /// `image:   PATH, N bytes, checksum 0x...`: one line naming the image.
    pub fn headline(&self) -> String {
        format!(
            "image:   {}, {} bytes, checksum 0x{:08x}\n",
            self.path, self.size, self.checksum
        )
    }

    /// The headline, then the stack and MMIO figures.
    pub fn to_text(&self) -> String {
        let mut s = self.headline();
        let _ = writeln!(
            s,
            "kernel stack ({} KiB), deepest use per routine:",
            image::KERNEL_STACK_SIZE >> 10
        );
        for u in &self.stack_use {
            match u.calls {
                0 => writeln!(s, "  {:<48}{:>13}", u.routine, "not called"),
                n => writeln!(s, "  {:<48}{:>7} bytes {n:>10} calls", u.routine, u.deepest),
            }
            .unwrap_or(());
        }
        let names = [
            "read8", "read16", "read32", "read64", "write8", "write16", "write32", "write64",
        ];
        let forms: Vec<String> = names
            .iter()
            .zip(self.mmio)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "mmio:    {} register accesses emulated ({})",
            self.mmio.iter().sum::<u64>(),
            forms.join(", ")
        );
        let plain = image::PLAIN_ACCESSES
            .each_ref()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed));
        if plain.iter().any(|&n| n > 0) {
            let _ = writeln!(
                s,
                "mmio:    {} unmarked mov/movzx accesses emulated (--windows-rules-only): \
                 {} loads, {} register stores, {} immediate stores",
                plain.iter().sum::<u64>(),
                plain[0],
                plain[1],
                plain[2]
            );
        }
        s
    }

    /// The same as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "path": self.path,
            "size": self.size,
            "checksum": format!("0x{:08x}", self.checksum),
            "kernel_stack_bytes": image::KERNEL_STACK_SIZE,
            "stack_use": self.stack_use.iter()
                .map(|u| json!({"routine": u.routine, "calls": u.calls, "bytes": u.deepest}))
                .collect::<Vec<_>>(),
            "mmio": {
                "read8": self.mmio[0], "read16": self.mmio[1], "read32": self.mmio[2],
                "read64": self.mmio[3], "write8": self.mmio[4], "write16": self.mmio[5],
                "write32": self.mmio[6], "write64": self.mmio[7],
            },
        })
    }
}
