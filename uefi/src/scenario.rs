//! The requests a crash dump sends, and what each must return.
//!
//! The disk is probed (INQUIRY, TEST UNIT READY, READ CAPACITY(10) and (16)), patterned blocks
//! are written with WRITE(10) and WRITE(16) (small, at the end of the disk, one as large as the
//! adapter's limits allow so the scatter-gather list has many elements, one with FUA) and read
//! back with READ(10) and READ(16) into a poisoned buffer, the cache is flushed with
//! SYNCHRONIZE CACHE(10) and (16), a never-written range must read as zeroes, a read past the end
//! must fail with ILLEGAL REQUEST / LBA OUT OF RANGE. Depending on the configuration, UNMAP is
//! sent (and the range must read as zeroes when the disk reports LBPRZ), or every write must fail
//! with DATA PROTECT / WRITE PROTECTED. Lines starting with `@` tell the host test what to check
//! in the image file afterwards.

use storport_sys as ffi;

use crate::expect::Expect;
use crate::pattern;
use crate::port::{Adapter, Completion, DATA_CAPACITY, Request};
use crate::say;

/// The poison a read buffer holds before the read.
const READ_POISON: u8 = 0xEE;

/// The running verdict.
struct Run<'a> {
    adapter: &'a mut Adapter,
    failures: u32,
}

/// What READ CAPACITY(16) reported.
#[derive(Clone, Copy, Debug)]
struct Capacity {
    blocks: u64,
    block_size: u32,
    lbpme: bool,
    lbprz: bool,
}

impl Run<'_> {
    fn fail(&mut self, args: core::fmt::Arguments<'_>) {
        self.failures += 1;
        say!("FAIL: {}", args);
    }

    /// Sends a SCSI command; prints one line; returns the completion.
    fn scsi(&mut self, what: &str, cdb: &[u8], direction: u32, length: u32) -> Option<Completion> {
        let request = Request {
            function: u32::from(ffi::SRB_FUNCTION_EXECUTE_SCSI),
            cdb,
            direction,
            length,
        };
        let Some(c) = self.adapter.execute(&request) else {
            self.fail(format_args!("{what}: not completed"));
            return None;
        };
        match c.sense_key() {
            Some((key, asc, ascq)) => say!(
                "{what}: SrbStatus={:#04x} ScsiStatus={:#04x} transferred={} sense={key:x}/{asc:02x}/{ascq:02x} polls={} completed in {}",
                c.srb_status,
                c.scsi_status,
                c.transferred,
                c.polls,
                c.completed_in.map_or("?", |cb| cb.name())
            ),
            None => say!(
                "{what}: SrbStatus={:#04x} ScsiStatus={:#04x} transferred={} polls={} completed in {}",
                c.srb_status,
                c.scsi_status,
                c.transferred,
                c.polls,
                c.completed_in.map_or("?", |cb| cb.name())
            ),
        }
        Some(c)
    }

    /// Sends a SCSI command that must succeed and move `length` bytes.
    fn scsi_ok(&mut self, what: &str, cdb: &[u8], direction: u32, length: u32) -> bool {
        let Some(c) = self.scsi(what, cdb, direction, length) else {
            return false;
        };
        if c.status() != ffi::SRB_STATUS_SUCCESS || c.scsi_status != ffi::SCSISTAT_GOOD {
            self.fail(format_args!(
                "{what}: expected SRB_STATUS_SUCCESS with GOOD"
            ));
            return false;
        }
        if direction != 0 && c.transferred != length {
            self.fail(format_args!(
                "{what}: moved {} of {length} bytes",
                c.transferred
            ));
            return false;
        }
        true
    }

    /// Sends a SCSI command that must fail with CHECK CONDITION and the given sense.
    fn scsi_sense(
        &mut self,
        what: &str,
        cdb: &[u8],
        direction: u32,
        length: u32,
        key: u8,
        asc: u8,
    ) {
        let Some(c) = self.scsi(what, cdb, direction, length) else {
            return;
        };
        if c.status() != ffi::SRB_STATUS_ERROR || c.scsi_status != ffi::SCSISTAT_CHECK_CONDITION {
            self.fail(format_args!(
                "{what}: expected SRB_STATUS_ERROR with CHECK CONDITION"
            ));
            return;
        }
        match c.sense_key() {
            Some((k, a, _)) if k == key && a == asc => {}
            Some((k, a, q)) => self.fail(format_args!(
                "{what}: sense {k:x}/{a:02x}/{q:02x}, expected {key:x}/{asc:02x}"
            )),
            None => self.fail(format_args!(
                "{what}: no autosense data (SRB_STATUS_AUTOSENSE_VALID)"
            )),
        }
    }

    fn inquiry(&mut self) {
        let length = 96u32;
        let cdb = [0x12, 0, 0, 0, length as u8, 0];
        if !self.scsi_ok_at_least("INQUIRY", &cdb, length, 36) {
            return;
        }
        let data = self.adapter.data();
        let device_type = data[0] & 0x1F;
        let mut text = [0u8; 28];
        text.copy_from_slice(&data[8..36]);
        let printable = |b: &u8| {
            if b.is_ascii_graphic() || *b == b' ' {
                *b
            } else {
                b'.'
            }
        };
        for b in text.iter_mut() {
            *b = printable(b);
        }
        say!(
            "  INQUIRY: peripheral type {device_type}, version {:#x}, \"{}\"",
            data[2],
            core::str::from_utf8(&text).unwrap_or("?")
        );
        if device_type != 0 {
            self.fail(format_args!(
                "INQUIRY: peripheral device type {device_type}, expected 0 (direct access)"
            ));
        }
        let cdb = [0x12, 1, 0x00, 0, 64, 0];
        if self.scsi_ok_at_least("INQUIRY VPD 00h", &cdb, 64, 4) {
            let data = self.adapter.data();
            let n = usize::from(data[3]).min(60);
            let mut pages = [0u8; 60];
            pages[..n].copy_from_slice(&data[4..4 + n]);
            say!("  VPD pages: {:02x?}", &pages[..n]);
        }
    }

    /// Like `scsi_ok` for data-in commands that may return less than asked (at least `min`).
    fn scsi_ok_at_least(&mut self, what: &str, cdb: &[u8], length: u32, min: u32) -> bool {
        self.adapter.data()[..length as usize].fill(0);
        let Some(c) = self.scsi(what, cdb, ffi::SRB_FLAGS_DATA_IN, length) else {
            return false;
        };
        let status = c.status();
        let good = (status == ffi::SRB_STATUS_SUCCESS || status == ffi::SRB_STATUS_DATA_OVERRUN)
            && c.scsi_status == ffi::SCSISTAT_GOOD;
        if !good {
            self.fail(format_args!("{what}: expected success"));
            return false;
        }
        if c.transferred < min || c.transferred > length {
            self.fail(format_args!("{what}: {} bytes returned", c.transferred));
            return false;
        }
        true
    }

    fn capacity(&mut self, expect: &Expect) -> Option<Capacity> {
        let cdb10 = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut capacity10 = None;
        if self.scsi_ok("READ CAPACITY(10)", &cdb10, ffi::SRB_FLAGS_DATA_IN, 8) {
            let d = self.adapter.data();
            let last = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            let size = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            say!("  READ CAPACITY(10): last LBA {last}, block {size}");
            capacity10 = Some((last, size));
        }
        let cdb16 = [0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        if !self.scsi_ok_at_least("READ CAPACITY(16)", &cdb16, 32, 12) {
            return None;
        }
        let d = self.adapter.data();
        let mut last = [0u8; 8];
        last.copy_from_slice(&d[0..8]);
        let last = u64::from_be_bytes(last);
        let block_size = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        let exponent = d[13] & 0x0F;
        let lbpme = d[14] & 0x80 != 0;
        let lbprz = d[14] & 0x40 != 0;
        say!(
            "  READ CAPACITY(16): last LBA {last}, block {block_size}, {} logical per physical, LBPME {}, LBPRZ {}",
            1u32 << exponent,
            u8::from(lbpme),
            u8::from(lbprz)
        );
        let capacity = Capacity {
            blocks: last + 1,
            block_size,
            lbpme,
            lbprz,
        };
        if let Some((last10, size10)) = capacity10
            && (u64::from(last10) != last || size10 != block_size)
        {
            self.fail(format_args!("READ CAPACITY(10) and (16) disagree"));
        }
        if block_size == 0 || !block_size.is_multiple_of(512) {
            self.fail(format_args!("block size {block_size}"));
            return None;
        }
        if let Some(want) = expect.block_size
            && want != block_size
        {
            self.fail(format_args!("block size {block_size}, expected {want}"));
        }
        if let Some(want) = expect.capacity
            && capacity.blocks * u64::from(block_size) != want
        {
            self.fail(format_args!(
                "capacity {} bytes, expected {want}",
                capacity.blocks * u64::from(block_size)
            ));
        }
        if let Some(want) = expect.lbpme
            && want != lbpme
        {
            self.fail(format_args!(
                "LBPME {}, expected {}",
                u8::from(lbpme),
                u8::from(want)
            ));
        }
        if let Some(want) = expect.lbprz
            && want != lbprz
        {
            self.fail(format_args!(
                "LBPRZ {}, expected {}",
                u8::from(lbprz),
                u8::from(want)
            ));
        }
        Some(capacity)
    }

    fn rw_cdb(opcode16: bool, write: bool, lba: u64, blocks: u32, fua: bool) -> ([u8; 16], usize) {
        let mut cdb = [0u8; 16];
        let flags = if fua { 0x08 } else { 0 };
        if opcode16 {
            cdb[0] = if write { 0x8A } else { 0x88 };
            cdb[1] = flags;
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
            (cdb, 16)
        } else {
            cdb[0] = if write { 0x2A } else { 0x28 };
            cdb[1] = flags;
            cdb[2..6].copy_from_slice(&(lba as u32).to_be_bytes());
            cdb[7..9].copy_from_slice(&(blocks as u16).to_be_bytes());
            (cdb, 10)
        }
    }

    fn write(
        &mut self,
        cap: &Capacity,
        seed: u64,
        long: bool,
        lba: u64,
        blocks: u32,
        fua: bool,
    ) -> bool {
        let bytes = blocks * cap.block_size;
        let offset = lba * u64::from(cap.block_size);
        pattern::fill(seed, offset, &mut self.adapter.data()[..bytes as usize]);
        let (cdb, n) = Self::rw_cdb(long, true, lba, blocks, fua);
        let what = if long { "WRITE(16)" } else { "WRITE(10)" };
        let mut label = Label::new();
        label.push(format_args!(
            "{what} LBA {lba} x{blocks}{}",
            if fua { " FUA" } else { "" }
        ));
        let ok = self.scsi_ok(label.as_str(), &cdb[..n], ffi::SRB_FLAGS_DATA_OUT, bytes);
        if ok {
            say!("@wrote {offset} {bytes} {seed:#x}");
        }
        ok
    }

    fn read_check(&mut self, cap: &Capacity, long: bool, lba: u64, blocks: u32, want: Want) {
        let bytes = blocks * cap.block_size;
        let offset = lba * u64::from(cap.block_size);
        self.adapter.data()[..bytes as usize].fill(READ_POISON);
        let (cdb, n) = Self::rw_cdb(long, false, lba, blocks, false);
        let what = if long { "READ(16)" } else { "READ(10)" };
        let mut label = Label::new();
        label.push(format_args!("{what} LBA {lba} x{blocks}"));
        if !self.scsi_ok(label.as_str(), &cdb[..n], ffi::SRB_FLAGS_DATA_IN, bytes) {
            return;
        }
        let data = &self.adapter.data()[..bytes as usize];
        let bad = match want {
            Want::Pattern(seed) => pattern::mismatch(seed, offset, data),
            Want::Zeroes => data.iter().position(|&b| b != 0),
        };
        if let Some(at) = bad {
            let got = data[at];
            self.fail(format_args!(
                "{}: data differs at byte {at} (disk offset {}): {got:#04x}, expected {}",
                label.as_str(),
                offset + at as u64,
                match want {
                    Want::Pattern(_) => "the pattern",
                    Want::Zeroes => "zeroes",
                }
            ));
        } else {
            say!(
                "  data OK ({bytes} bytes, {})",
                if matches!(want, Want::Zeroes) {
                    "zeroes"
                } else {
                    "pattern"
                }
            );
        }
    }

    fn synchronize_cache(&mut self) {
        let cdb10 = [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        self.scsi_ok("SYNCHRONIZE CACHE(10)", &cdb10, 0, 0);
        let cdb16 = [0x91, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        self.scsi_ok("SYNCHRONIZE CACHE(16)", &cdb16, 0, 0);
    }

    fn unmap(&mut self, cap: &Capacity, lba: u64, blocks: u32) -> bool {
        let data = self.adapter.data();
        data[..24].fill(0);
        data[0..2].copy_from_slice(&22u16.to_be_bytes()); // UNMAP DATA LENGTH
        data[2..4].copy_from_slice(&16u16.to_be_bytes()); // BLOCK DESCRIPTOR DATA LENGTH
        data[8..16].copy_from_slice(&lba.to_be_bytes());
        data[16..20].copy_from_slice(&blocks.to_be_bytes());
        let cdb = [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        let mut label = Label::new();
        label.push(format_args!("UNMAP LBA {lba} x{blocks}"));
        let ok = self.scsi_ok(label.as_str(), &cdb, ffi::SRB_FLAGS_DATA_OUT, 24);
        if ok {
            say!(
                "@unmapped {} {}",
                lba * u64::from(cap.block_size),
                blocks * cap.block_size
            );
        }
        ok
    }
}

/// What a read must return.
#[derive(Clone, Copy)]
enum Want {
    Pattern(u64),
    Zeroes,
}

/// A short formatted label on the stack.
struct Label {
    buffer: [u8; 64],
    len: usize,
}

impl Label {
    fn new() -> Self {
        Self {
            buffer: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, args: core::fmt::Arguments<'_>) {
        let _ = core::fmt::write(self, args);
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buffer[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Label {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buffer.len() - self.len);
        self.buffer[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Runs the requests; returns the number of failed checks.
pub fn run(adapter: &mut Adapter, expect: &Expect) -> u32 {
    let limits = (
        adapter.config.MaximumTransferLength,
        adapter.config.NumberOfPhysicalBreaks,
    );
    let mut run = Run {
        adapter,
        failures: 0,
    };
    run.inquiry();
    run.scsi_ok("TEST UNIT READY", &[0; 6], 0, 0);
    let Some(cap) = run.capacity(expect) else {
        run.fail(format_args!("no usable capacity: stopping"));
        return run.failures;
    };
    let bs = cap.block_size;
    if cap.blocks < 8192 * 512 / u64::from(bs) {
        run.fail(format_args!(
            "disk too small for the test ({} blocks)",
            cap.blocks
        ));
        return run.failures;
    }
    // The largest transfer the adapter takes: its MaximumTransferLength, and as many pages as
    // its scatter-gather list holds (a buffer 64 bytes past a page boundary spans one page more
    // than its length in pages).
    let (max_transfer, breaks) = limits;
    let by_sg = u64::from(breaks.min(4096)) * 4096;
    let large = (u64::from(max_transfer)
        .min(by_sg)
        .min(128 * 1024)
        .min(DATA_CAPACITY as u64) as u32
        / bs)
        .max(1);
    say!("  large transfer: {large} blocks ({} bytes)", large * bs);
    let small = (12 * 1024 / bs).max(1);
    let end = cap.blocks - 4;
    let far = cap.blocks / 4;
    let untouched = cap.blocks / 2;

    if expect.read_only {
        let write_protect = |run: &mut Run<'_>, long: bool| {
            let (cdb, n) = Run::rw_cdb(long, true, 16, 1, false);
            pattern::fill(
                expect.seed,
                16 * u64::from(bs),
                &mut run.adapter.data()[..bs as usize],
            );
            run.scsi_sense(
                if long {
                    "WRITE(16) on a read-only disk"
                } else {
                    "WRITE(10) on a read-only disk"
                },
                &cdb[..n],
                ffi::SRB_FLAGS_DATA_OUT,
                bs,
                0x7,
                0x27,
            );
        };
        write_protect(&mut run, false);
        write_protect(&mut run, true);
        run.read_check(&cap, false, 16, small, Want::Zeroes);
        say!("@zero {} {}", 16 * u64::from(bs), small * bs);
        if let Some(c) = run.scsi(
            "SYNCHRONIZE CACHE(10) on a read-only disk",
            &[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            0,
            0,
        ) {
            say!("  (status {:#04x} accepted either way)", c.srb_status);
        }
    } else {
        let seed = expect.seed;
        let regions = [
            (false, 16, small, false),
            (true, end, 4, false),
            (false, 64, large, false),
            (true, far, 1, true),
        ];
        let mut written = [false; 4];
        for (i, &(long, lba, blocks, fua)) in regions.iter().enumerate() {
            written[i] = run.write(&cap, seed, long, lba, blocks, fua);
        }
        run.synchronize_cache();
        for (i, &(long, lba, blocks, _)) in regions.iter().enumerate() {
            if written[i] {
                run.read_check(&cap, long, lba, blocks, Want::Pattern(expect.expect_seed));
                run.read_check(&cap, !long, lba, blocks, Want::Pattern(expect.expect_seed));
            }
        }
        if expect.unmap {
            if !cap.lbpme {
                run.fail(format_args!("UNMAP expected but LBPME is 0"));
            } else if run.unmap(&cap, 64, large) {
                if cap.lbprz {
                    run.read_check(&cap, false, 64, large, Want::Zeroes);
                    say!("@zero {} {}", 64 * u64::from(bs), large * bs);
                } else {
                    say!("  (LBPRZ is 0: unmapped blocks may read anything)");
                }
            }
            run.synchronize_cache();
        }
    }
    run.read_check(&cap, true, untouched, 8, Want::Zeroes);
    say!("@zero {} {}", untouched * u64::from(bs), 8 * bs);
    let (past, n) = Run::rw_cdb(true, false, cap.blocks, 1, false);
    run.scsi_sense(
        "READ(16) past the end",
        &past[..n],
        ffi::SRB_FLAGS_DATA_IN,
        bs,
        0x5,
        0x21,
    );
    let (straddle, n) = Run::rw_cdb(false, false, cap.blocks - 1, 2, false);
    if cap.blocks <= u64::from(u32::MAX) {
        run.scsi_sense(
            "READ(10) across the end",
            &straddle[..n],
            ffi::SRB_FLAGS_DATA_IN,
            2 * bs,
            0x5,
            0x21,
        );
    }
    run.failures
}
