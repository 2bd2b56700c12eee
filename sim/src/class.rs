//! The class-driver model: what Windows' disk.sys (over classpnp) sends a disk, and how it reads
//! the answers.
//!
//! - The SCSI vocabulary it speaks (operation codes, CDB builders, sense data, status names)
//!   lives in [`crate::scsi`] and is re-exported here.
//! - [`start_disk`]: the start-up sequence disk.sys sends when a disk arrives (TEST UNIT READY,
//!   INQUIRY, the VPD pages, READ CAPACITY, the caching mode page), parsed into a
//!   [`DiskGeometry`].
//! - [`DiskGeometry::read`], [`DiskGeometry::write`], [`flush`] and [`DiskGeometry::unmap`]:
//!   the SRBs of the I/O path, choosing the 10- or 16-byte CDB as disk.sys does.
//!
//! Every byte a target returns is untrusted: parsing uses `get` and checked conversions and turns
//! short or inconsistent data into [`StartError::Malformed`], never a panic.

use std::fmt;

use storport::ffi::{self, SCSISTAT_CHECK_CONDITION};

pub use crate::scsi::{
    Sense, asc_name, cdb, opcode, scsi_status_name, sense_key, sense_key_name, srb_status_name,
};
use crate::target::{ScsiCompletion, ScsiRequest, ScsiTarget};

/// One line describing a completion: SRB status, SCSI status and the sense in words.
pub fn describe_completion(c: &ScsiCompletion) -> String {
    let mut s = format!(
        "SRB status {} (0x{:02x}), SCSI status {} (0x{:02x})",
        srb_status_name(c.srb_status),
        c.srb_status,
        scsi_status_name(c.scsi_status),
        c.scsi_status
    );
    if let Some(sense) = c.valid_sense().and_then(Sense::parse) {
        s.push_str(&format!(", sense {sense}"));
    }
    s
}

/// The Block Limits VPD page (B0h, SBC-3 6.5.3), the fields a disk driver uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockLimits {
    /// OPTIMAL TRANSFER LENGTH GRANULARITY, in blocks.
    pub optimal_granularity: u16,
    /// MAXIMUM TRANSFER LENGTH, in blocks (0: no limit reported).
    pub max_transfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH, in blocks.
    pub optimal_transfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_lba_count: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY, in blocks.
    pub unmap_granularity: u32,
}

/// The Logical Block Provisioning VPD page (B2h, SBC-3 6.5.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Provisioning {
    /// LBPU: UNMAP is supported.
    pub lbpu: bool,
    /// LBPWS: WRITE SAME (16) with UNMAP is supported.
    pub lbpws: bool,
    /// LBPWS10: WRITE SAME (10) with UNMAP is supported.
    pub lbpws10: bool,
    /// LBPRZ: unmapped blocks read as zeroes.
    pub lbprz: bool,
    /// PROVISIONING TYPE: 0 full, 1 resource, 2 thin.
    pub provisioning_type: u8,
}

/// What disk.sys learns about a disk at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiskGeometry {
    /// T10 VENDOR IDENTIFICATION, trimmed.
    pub vendor: String,
    /// PRODUCT IDENTIFICATION, trimmed.
    pub product: String,
    /// PRODUCT REVISION LEVEL, trimmed.
    pub revision: String,
    /// CMDQUE: the target queues commands.
    pub command_queueing: bool,
    /// The VPD pages the target lists on page 00h.
    pub vpd_pages: Vec<u8>,
    /// The unit serial number (page 80h), trimmed.
    pub serial: Option<String>,
    /// The designators of page 83h, as `type:value` (ASCII values as text, binary as hex).
    pub identifiers: Vec<String>,
    /// Logical block size in bytes.
    pub logical_block_size: u32,
    /// Number of logical blocks.
    pub capacity_blocks: u64,
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT.
    pub physical_block_exponent: u8,
    /// LOWEST ALIGNED LOGICAL BLOCK ADDRESS.
    pub lowest_aligned_lba: u16,
    /// Whether READ CAPACITY (16) answered (else the capacity came from READ CAPACITY (10)).
    pub read_capacity_16: bool,
    /// LBPME: logical block provisioning management (UNMAP) is enabled.
    pub lbpme: bool,
    /// LBPRZ from READ CAPACITY (16): unmapped blocks read as zeroes.
    pub lbprz: bool,
    /// Page B0h, when the target has it.
    pub limits: Option<BlockLimits>,
    /// Page B2h, when the target has it.
    pub provisioning: Option<Provisioning>,
    /// MEDIUM ROTATION RATE of page B1h is 1 (solid state), when the target has the page.
    pub non_rotating: Option<bool>,
    /// WCE of the caching mode page: the write cache is enabled (so disk.sys sends flushes).
    pub write_cache_enabled: bool,
    /// RCD of the caching mode page: the read cache is disabled.
    pub read_cache_disabled: bool,
    /// DPOFUA of the mode parameter header: FUA is honoured.
    pub fua_supported: bool,
    /// WP of the mode parameter header: the medium is write-protected.
    pub write_protected: bool,
}

impl DiskGeometry {
    /// The capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_blocks
            .saturating_mul(u64::from(self.logical_block_size))
    }

    /// The physical block size in bytes.
    pub fn physical_block_size(&self) -> u64 {
        u64::from(self.logical_block_size) << self.physical_block_exponent.min(15)
    }

    /// Whether disk.sys would send UNMAP: LBPME with a non-zero MAXIMUM UNMAP LBA COUNT.
    pub fn unmap_supported(&self) -> bool {
        self.lbpme && self.limits.is_some_and(|l| l.max_unmap_lba_count != 0)
    }

    /// Whether the 16-byte CDBs are needed for this LBA range (disk.sys uses the 10-byte ones
    /// while the disk's last LBA and the transfer fit them).
    fn needs_16(&self, lba: u64, blocks: u32) -> bool {
        self.capacity_blocks > u64::from(u32::MAX)
            || u32::try_from(lba).is_err()
            || u16::try_from(blocks).is_err()
    }

    /// A READ of `blocks` blocks at `lba`.
    pub fn read(&self, lba: u64, blocks: u32, fua: bool) -> ScsiRequest {
        let len = blocks.saturating_mul(self.logical_block_size);
        match (u32::try_from(lba), u16::try_from(blocks)) {
            (Ok(l), Ok(b)) if !self.needs_16(lba, blocks) => {
                ScsiRequest::data_in(cdb::read_10(l, b, fua), len)
            }
            _ => ScsiRequest::data_in(cdb::read_16(lba, blocks, fua), len),
        }
    }

    /// A WRITE of `data` (whole blocks) at `lba`.
    pub fn write(&self, lba: u64, data: Vec<u8>, fua: bool) -> ScsiRequest {
        let blocks =
            u32::try_from(data.len() / self.logical_block_size.max(1) as usize).unwrap_or(u32::MAX);
        match (u32::try_from(lba), u16::try_from(blocks)) {
            (Ok(l), Ok(b)) if !self.needs_16(lba, blocks) => {
                ScsiRequest::data_out(cdb::write_10(l, b, fua), data)
            }
            _ => ScsiRequest::data_out(cdb::write_16(lba, blocks, fua), data),
        }
    }

    /// An UNMAP of the given `(lba, blocks)` ranges.
    pub fn unmap(&self, ranges: &[(u64, u32)]) -> ScsiRequest {
        let params = cdb::unmap_parameter_list(ranges);
        let len = u16::try_from(params.len()).unwrap_or(u16::MAX);
        ScsiRequest::data_out(cdb::unmap(len), params)
    }
}

/// A cache flush as disk.sys sends it for a flush IRP: SYNCHRONIZE CACHE (10).
pub fn flush() -> ScsiRequest {
    ScsiRequest::no_data(cdb::synchronize_cache_10())
}

/// Why a disk could not be started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// A command of the sequence failed.
    Failed {
        /// The command, e.g. `"INQUIRY"`.
        step: &'static str,
        /// How it completed.
        completion: ScsiCompletion,
    },
    /// The target is not a direct-access block device (peripheral type and qualifier byte).
    NotADisk(u8),
    /// A command answered with data that cannot be right.
    Malformed {
        /// The command.
        step: &'static str,
        /// What is wrong with the data.
        what: String,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { step, completion } => {
                write!(f, "{step} failed: {}", describe_completion(completion))
            }
            Self::NotADisk(byte) => write!(
                f,
                "not a disk: peripheral qualifier {} and device type 0x{:02x}",
                byte >> 5,
                byte & 0x1F
            ),
            Self::Malformed { step, what } => write!(f, "{step} returned bad data: {what}"),
        }
    }
}

impl std::error::Error for StartError {}

/// How often a command is retried after UNIT ATTENTION or BUSY before giving up.
const RETRIES: usize = 3;

/// Sends one command of the start sequence, retrying as classpnp does after a unit attention
/// (a reset or power-on is reported once to the first command after it) or a busy target.
fn send(
    target: &dyn ScsiTarget,
    step: &'static str,
    request: &ScsiRequest,
) -> Result<ScsiCompletion, StartError> {
    let mut last = None;
    for _ in 0..RETRIES {
        let completion = target.execute(request.clone());
        // An underrun (less data than the allocation length allows) is SRB_STATUS_DATA_OVERRUN
        // with the length that moved: success for these commands, as classpnp treats it.
        let underrun = completion.status() == ffi::SRB_STATUS_DATA_OVERRUN
            && completion.scsi_status == ffi::SCSISTAT_GOOD;
        if completion.is_success() || underrun {
            return Ok(completion);
        }
        let retry = completion.scsi_status == ffi::SCSISTAT_BUSY
            || completion.status() == ffi::SRB_STATUS_BUSY
            || (completion.scsi_status == SCSISTAT_CHECK_CONDITION
                && completion
                    .valid_sense()
                    .and_then(Sense::parse)
                    .is_some_and(|s| s.key == sense_key::UNIT_ATTENTION));
        if !retry {
            return Err(StartError::Failed { step, completion });
        }
        last = Some(completion);
    }
    Err(StartError::Failed {
        step,
        completion: last.unwrap_or_default(),
    })
}

/// Reads an ASCII field, trimmed of the padding spaces and NULs.
fn ascii(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned()
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn malformed(step: &'static str, what: impl Into<String>) -> StartError {
    StartError::Malformed {
        step,
        what: what.into(),
    }
}

/// The payload of a VPD page (after its 4-byte header), checked against the page code.
fn vpd_page(target: &dyn ScsiTarget, page: u8) -> Result<Vec<u8>, StartError> {
    const STEP: &str = "INQUIRY (VPD)";
    let c = send(
        target,
        STEP,
        &ScsiRequest::data_in(cdb::inquiry_vpd(page, 0xFF), 0xFF),
    )?;
    let data = c.data_in;
    if data.len() < 4 || data[1] != page {
        return Err(malformed(
            STEP,
            format!("page {page:02X}h has a bad header"),
        ));
    }
    let len = usize::from(be_u16(&data, 2).unwrap_or(0));
    // A page longer than the buffer is cut to what arrived (SPC-4 4.2.5.6).
    let end = 4usize.saturating_add(len).min(data.len());
    Ok(data[4..end].to_vec())
}

/// The designators of the Device Identification page (SPC-4 7.8.6), as `type:value` strings.
fn designators(page: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    // Each designator is a 4-byte header and DESIGNATOR LENGTH bytes; the loop advances by at
    // least 4 bytes, so it ends.
    while let Some(header) = page.get(at..at + 4) {
        let code_set = header[0] & 0x0F;
        let kind = header[1] & 0x0F;
        let len = usize::from(header[3]);
        let Some(value) = page.get(at + 4..at + 4 + len) else {
            break;
        };
        let kind_name = match kind {
            0 => "vendor",
            1 => "t10",
            2 => "eui64",
            3 => "naa",
            8 => "scsi-name",
            _ => "other",
        };
        let text = if matches!(code_set, 2 | 3) {
            ascii(value)
        } else {
            value.iter().map(|b| format!("{b:02x}")).collect()
        };
        out.push(format!("{kind_name}:{text}"));
        at += 4 + len;
    }
    out
}

/// Starts a disk as disk.sys does when it arrives, and returns what it learnt.
///
/// The sequence: TEST UNIT READY (retried after a unit attention), standard INQUIRY, the VPD
/// pages 00h, then 80h, 83h, B0h, B1h and B2h when listed, READ CAPACITY (16) (READ CAPACITY
/// (10) when the target refuses it), MODE SENSE (6) of the caching page.
///
/// # Errors
/// A command failing with something other than a unit attention or busy, a target that is not
/// a direct-access device, or data that cannot be right (e.g. a block size of 0).
pub fn start_disk(target: &dyn ScsiTarget) -> Result<DiskGeometry, StartError> {
    let mut g = DiskGeometry::default();

    send(
        target,
        "TEST UNIT READY",
        &ScsiRequest::no_data(cdb::test_unit_ready()),
    )?;

    const INQUIRY: &str = "INQUIRY";
    let c = send(target, INQUIRY, &ScsiRequest::data_in(cdb::inquiry(36), 36))?;
    let d = c.data_in;
    if d.len() < 36 {
        return Err(malformed(INQUIRY, format!("{} bytes, not 36", d.len())));
    }
    if d[0] != 0 {
        return Err(StartError::NotADisk(d[0]));
    }
    g.command_queueing = d[7] & 0x02 != 0;
    g.vendor = ascii(&d[8..16]);
    g.product = ascii(&d[16..32]);
    g.revision = ascii(&d[32..36]);

    // Page 00h is mandatory for a target that has VPD pages at all; without it disk.sys
    // queries nothing else.
    g.vpd_pages = vpd_page(target, 0x00).unwrap_or_default();
    let has = |p: u8| g.vpd_pages.contains(&p);
    if has(0x80) {
        let s = ascii(&vpd_page(target, 0x80)?);
        g.serial = (!s.is_empty()).then_some(s);
    }
    if has(0x83) {
        g.identifiers = designators(&vpd_page(target, 0x83)?);
    }
    if has(0xB0) {
        let p = vpd_page(target, 0xB0)?;
        if p.len() < 0x24 {
            return Err(malformed(
                "INQUIRY (VPD)",
                "page B0h is shorter than 28h bytes",
            ));
        }
        g.limits = Some(BlockLimits {
            optimal_granularity: be_u16(&p, 2).unwrap_or(0),
            max_transfer_blocks: be_u32(&p, 4).unwrap_or(0),
            optimal_transfer_blocks: be_u32(&p, 8).unwrap_or(0),
            max_unmap_lba_count: be_u32(&p, 16).unwrap_or(0),
            max_unmap_descriptors: be_u32(&p, 20).unwrap_or(0),
            unmap_granularity: be_u32(&p, 24).unwrap_or(0),
        });
    }
    if has(0xB1) {
        let p = vpd_page(target, 0xB1)?;
        g.non_rotating = be_u16(&p, 0).map(|rate| rate == 1);
    }
    if has(0xB2) {
        let p = vpd_page(target, 0xB2)?;
        let flags = p.get(1).copied().unwrap_or(0);
        g.provisioning = Some(Provisioning {
            lbpu: flags & 0x80 != 0,
            lbpws: flags & 0x40 != 0,
            lbpws10: flags & 0x20 != 0,
            lbprz: flags & 0x04 != 0,
            provisioning_type: p.get(2).map_or(0, |b| b & 0x07),
        });
    }

    read_capacity(target, &mut g)?;

    // The caching page, as disk.sys reads it to decide whether to send flushes (SBC-3 6.4.5).
    const MODE_SENSE: &str = "MODE SENSE (6)";
    let request = ScsiRequest::data_in(
        cdb::mode_sense_6(0x08, cdb::PageControl::Current, false, 0xC0),
        0xC0,
    );
    match send(target, MODE_SENSE, &request) {
        Ok(c) => {
            let d = c.data_in;
            if d.len() < 4 {
                return Err(malformed(MODE_SENSE, "no mode parameter header"));
            }
            g.write_protected = d[2] & 0x80 != 0;
            g.fua_supported = d[2] & 0x10 != 0;
            let page_at = 4 + usize::from(d[3]);
            match d.get(page_at..page_at + 3) {
                Some(page) if page[0] & 0x3F == 0x08 => {
                    g.write_cache_enabled = page[2] & 0x04 != 0;
                    g.read_cache_disabled = page[2] & 0x01 != 0;
                }
                _ => return Err(malformed(MODE_SENSE, "no caching page")),
            }
        }
        // A target without the caching page is taken as write-through, as disk.sys does.
        Err(StartError::Failed { completion, .. })
            if completion
                .valid_sense()
                .and_then(Sense::parse)
                .is_some_and(|s| s.key == sense_key::ILLEGAL_REQUEST) => {}
        Err(e) => return Err(e),
    }
    Ok(g)
}

/// READ CAPACITY (16), or (10) when the target does not know (16).
fn read_capacity(target: &dyn ScsiTarget, g: &mut DiskGeometry) -> Result<(), StartError> {
    const RC16: &str = "READ CAPACITY (16)";
    const RC10: &str = "READ CAPACITY (10)";
    let (last_lba, block) = match send(
        target,
        RC16,
        &ScsiRequest::data_in(cdb::read_capacity_16(32), 32),
    ) {
        Ok(c) => {
            let d = c.data_in;
            let (Some(last), Some(block)) = (be_u64(&d, 0), be_u32(&d, 8)) else {
                return Err(malformed(RC16, format!("{} bytes, not 32", d.len())));
            };
            g.read_capacity_16 = true;
            g.physical_block_exponent = d.get(13).map_or(0, |b| b & 0x0F);
            g.lbpme = d.get(14).is_some_and(|b| b & 0x80 != 0);
            g.lbprz = d.get(14).is_some_and(|b| b & 0x40 != 0);
            g.lowest_aligned_lba = be_u16(&d, 14).map_or(0, |v| v & 0x3FFF);
            (last, block)
        }
        Err(StartError::Failed { completion, .. })
            if completion
                .valid_sense()
                .and_then(Sense::parse)
                .is_some_and(|s| s.key == sense_key::ILLEGAL_REQUEST) =>
        {
            let c = send(
                target,
                RC10,
                &ScsiRequest::data_in(cdb::read_capacity_10(), 8),
            )?;
            let (Some(last), Some(block)) = (be_u32(&c.data_in, 0), be_u32(&c.data_in, 4)) else {
                return Err(malformed(RC10, format!("{} bytes, not 8", c.data_in.len())));
            };
            (u64::from(last), block)
        }
        Err(e) => return Err(e),
    };
    let step = if g.read_capacity_16 { RC16 } else { RC10 };
    if !block.is_power_of_two() || !(512..=65536).contains(&block) {
        return Err(malformed(step, format!("logical block size {block}")));
    }
    g.logical_block_size = block;
    g.capacity_blocks = last_lba
        .checked_add(1)
        .ok_or_else(|| malformed(step, "last LBA is the largest 64-bit value"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::{RamConfig, RamScsiTarget};

    fn ram(config: RamConfig) -> RamScsiTarget {
        RamScsiTarget::new(config).expect("valid RAM disk")
    }

    #[test]
    fn cdb_layouts() {
        assert_eq!(
            cdb::read_10(0x0102_0304, 0x0506, true),
            [0x28, 0x08, 1, 2, 3, 4, 0, 5, 6, 0]
        );
        let w = cdb::write_16(0x0102_0304_0506_0708, 0x090A_0B0C, false);
        assert_eq!(w[..14], [0x8A, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(cdb::read_capacity_16(32)[..2], [0x9E, 0x10]);
        assert_eq!(cdb::read_capacity_16(32)[13], 32);
        assert_eq!(cdb::inquiry_vpd(0xB0, 0x100), [0x12, 1, 0xB0, 1, 0, 0]);
        assert_eq!(
            cdb::mode_sense_6(0x08, cdb::PageControl::Changeable, true, 0xC0),
            [0x1A, 0x08, 0x48, 0, 0xC0, 0]
        );
        assert_eq!(
            cdb::mode_sense_10(0x3F, cdb::PageControl::Current, false, 0x200)[7..9],
            [2, 0]
        );
        assert_eq!(cdb::report_luns(16)[6..10], [0, 0, 0, 16]);
        assert_eq!(cdb::unmap(24), [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]);
        let list = cdb::unmap_parameter_list(&[(0x10, 8)]);
        assert_eq!(list.len(), 24);
        assert_eq!(list[..4], [0, 22, 0, 16]);
        assert_eq!(list[8..16], 0x10u64.to_be_bytes());
        assert_eq!(list[16..20], 8u32.to_be_bytes());
    }

    #[test]
    fn sense_fixed_and_descriptor() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0xF0;
        fixed[2] = 0x05;
        fixed[3..7].copy_from_slice(&7u32.to_be_bytes());
        fixed[12] = 0x24;
        let s = Sense::parse(&fixed).expect("fixed sense");
        assert_eq!((s.key, s.asc, s.ascq, s.information), (5, 0x24, 0, Some(7)));
        assert_eq!(
            s.to_string(),
            "ILLEGAL REQUEST: INVALID FIELD IN CDB (24h/00h)"
        );
        let s = Sense::parse(&[0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]).expect("descriptor sense");
        assert_eq!(
            s.to_string(),
            "UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h)"
        );
        assert_eq!(Sense::parse(&[0x00]), None);
        assert_eq!(Sense::parse(&[]), None);
        let s = Sense::parse(&[0x70, 0, 0x03]).expect("short fixed sense");
        assert_eq!(
            s.to_string(),
            "MEDIUM ERROR: NO ADDITIONAL SENSE INFORMATION (00h/00h)"
        );
    }

    #[test]
    fn start_reads_the_ram_disk() {
        let t = ram(RamConfig {
            capacity_bytes: 8 << 20,
            logical_block_size: 4096,
            ..RamConfig::default()
        });
        t.raise_unit_attention();
        let g = start_disk(&t).expect("starts after one unit attention");
        assert_eq!(g.logical_block_size, 4096);
        assert_eq!(g.capacity_blocks, 2048);
        assert_eq!(g.capacity_bytes(), 8 << 20);
        assert_eq!(g.vendor, "VIOBLK");
        assert_eq!(g.serial.as_deref(), Some("RAM0001"));
        assert_eq!(g.identifiers, ["t10:VIOBLK  RAM0001"]);
        assert_eq!(g.vpd_pages, [0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]);
        assert!(g.read_capacity_16 && g.lbpme && g.lbprz && g.unmap_supported());
        assert!(g.write_cache_enabled && g.fua_supported && !g.write_protected);
        assert_eq!(g.non_rotating, Some(true));
        assert_eq!(g.limits.map(|l| l.max_unmap_descriptors), Some(256));
        assert!(g.provisioning.is_some_and(|p| p.lbpu && p.lbprz));
    }

    /// A target that refuses READ CAPACITY (16) and fails everything after a set of opcodes.
    struct Old(RamScsiTarget);

    impl ScsiTarget for Old {
        fn submit(&self, request: ScsiRequest, done: crate::target::Done) {
            if request.cdb.first() == Some(&opcode::SERVICE_ACTION_IN_16) {
                let mut sense = vec![0u8; 18];
                sense[0] = 0x70;
                sense[2] = sense_key::ILLEGAL_REQUEST;
                sense[12] = 0x20;
                done(ScsiCompletion {
                    srb_status: ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
                    scsi_status: SCSISTAT_CHECK_CONDITION,
                    sense,
                    ..ScsiCompletion::default()
                });
            } else {
                self.0.submit(request, done);
            }
        }
    }

    #[test]
    fn read_capacity_falls_back_to_10() {
        let t = Old(ram(RamConfig::default()));
        let g = start_disk(&t).expect("starts");
        assert!(!g.read_capacity_16);
        assert_eq!((g.logical_block_size, g.capacity_blocks), (512, 131_072));
        assert!(!g.lbpme);
    }

    #[test]
    fn persistent_unit_attention_fails_with_words() {
        struct Attention;
        impl ScsiTarget for Attention {
            fn submit(&self, _: ScsiRequest, done: crate::target::Done) {
                let mut sense = vec![0u8; 18];
                sense[0] = 0x70;
                sense[2] = sense_key::UNIT_ATTENTION;
                sense[12] = 0x29;
                done(ScsiCompletion {
                    srb_status: ffi::SRB_STATUS_ERROR | ffi::SRB_STATUS_AUTOSENSE_VALID,
                    scsi_status: SCSISTAT_CHECK_CONDITION,
                    sense,
                    ..ScsiCompletion::default()
                });
            }
        }
        let e = start_disk(&Attention).expect_err("never ready");
        assert_eq!(
            e.to_string(),
            "TEST UNIT READY failed: SRB status ERROR (0x84), SCSI status CHECK CONDITION (0x02), \
             sense UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29h/00h)"
        );
    }

    #[test]
    fn io_requests_pick_the_cdb_size() {
        let g = DiskGeometry {
            logical_block_size: 512,
            capacity_blocks: 1 << 20,
            ..DiskGeometry::default()
        };
        let r = g.read(5, 8, false);
        assert_eq!(
            (r.cdb.len(), r.cdb[0], r.data_in_len),
            (10, opcode::READ_10, 4096)
        );
        let r = g.read(5, 0x1_0000, false);
        assert_eq!(r.cdb[0], opcode::READ_16);
        let big = DiskGeometry {
            capacity_blocks: 1 << 33,
            ..g.clone()
        };
        let w = big.write(5, vec![0; 1024], true);
        assert_eq!((w.cdb[0], w.cdb[1], w.cdb[13]), (opcode::WRITE_16, 0x08, 2));
        assert_eq!(g.unmap(&[(1, 2)]).data_out.len(), 24);
    }

    #[test]
    fn ram_target_reads_back_writes_and_checks_ranges() {
        let t = ram(RamConfig {
            capacity_bytes: 1 << 20,
            ..RamConfig::default()
        });
        let g = start_disk(&t).expect("starts");
        let data: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        assert!(t.execute(g.write(7, data.clone(), false)).is_success());
        let c = t.execute(g.read(7, 2, false));
        assert_eq!(c.data_in, data);
        let c = t.execute(g.read(g.capacity_blocks - 1, 2, false));
        assert_eq!(
            describe_completion(&c),
            "SRB status ERROR (0x84), SCSI status CHECK CONDITION (0x02), sense ILLEGAL REQUEST: \
             LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h)"
        );
        assert!(t.execute(g.unmap(&[(7, 1)])).is_success());
        assert_eq!(t.execute(g.read(7, 2, false)).data_in[..512], [0; 512]);
        assert!(t.execute(flush()).is_success());
        let c = t.execute(ScsiRequest::data_in(cdb::report_luns(16), 16));
        assert_eq!(c.data_in[..4], [0, 0, 0, 8]);
    }
}
