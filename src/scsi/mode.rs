//! Mode parameters: the mode pages MODE SENSE reports and, for the write cache enable bit only,
//! MODE SELECT changes.
//!
//! Mode parameter data (SPC-4 7.5.4) is a header (SPC-4 7.5.5: 4 bytes for the 6-byte commands,
//! 8 for the 10-byte ones), an optional block descriptor (SBC-3 6.4.2: short, 8 bytes, or long,
//! 16 bytes when MODE SENSE(10) sets LLBAA), then mode pages. The header's DEVICE-SPECIFIC
//! PARAMETER (SBC-3 6.4.1) carries WP (the disk is write protected) and DPOFUA (the FUA bit is
//! honoured).
//!
//! Pages, in the ascending page-code order page 3Fh (all pages) returns them in:
//!
//! - Caching (08h, SBC-3 6.4.5) with WCE, changeable only when the device lets the host switch
//!   its cache;
//! - Control (0Ah, SPC-4 7.5.8), read-only, reporting unrestricted reordering (the device
//!   completes requests in any order) and no log pages;
//! - Power Condition (1Ah, SPC-4 7.5.13), read-only: no idle or standby condition timer is
//!   enabled (a virtio-blk device has no power conditions to enter on its own), and CHECK
//!   CONDITION on a transition from idle, standby or stopped is disabled (CCF fields 01b);
//! - Informational Exceptions Control (1Ch, SPC-4 7.5.14), read-only: DEXCPT = 1 and MRIE = 0
//!   (the device predicts no failures, so no informational exception is ever reported).
//!
//! **Saved values.** No page can be saved (every PS bit is 0, SPC-4 7.5.7). The saved values of a
//! logical unit are the values it loads when it powers on (SPC-4 7.5.3); with nothing saved, what
//! a power-on loads are the default values, so PC = 11b (saved values) reports the default
//! values. The default values are the device's own: WCE as the device came up
//! ([`DiskInfo::write_cache_default`]; a reset of the device returns to it), every other field
//! as it always is. MODE SELECT changes current values only and stays consistent with PS = 0:
//! SP = 1 (save the pages) is INVALID FIELD IN CDB, as SPC-4 6.9 requires of a logical unit that
//! implements no saved pages.
//!
//! MODE SELECT (SPC-4 6.9, 6.10) accepts a parameter list whose every field equals the current
//! value except the caching page's WCE when it is changeable; any other difference is INVALID
//! FIELD IN PARAMETER LIST, pointing at the first differing bit (SPC-4 7.5.1). Each of the four
//! pages may be restated. With PF = 0 the pages would be vendor specific, so a list with pages
//! and PF = 0 is INVALID FIELD IN CDB.

use super::data::Response;
use super::disk::DiskInfo;
use super::sense::Sense;

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0A;
const POWER_CONDITION: u8 = 0x1A;
const INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
/// Page code for "all pages".
pub(super) const ALL_PAGES: u8 = 0x3F;
/// The supported pages, in the order page 3Fh returns them (ascending page code, SPC-4 6.11.1).
const PAGES: [u8; 4] = [CACHING, CONTROL, POWER_CONDITION, INFORMATIONAL_EXCEPTIONS];
/// The longest supported page: Power Condition, 40 bytes.
const MAX_PAGE: usize = 40;

/// Which values MODE SENSE reports (the PC field, SPC-4 6.11, table 98).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageControl {
    Current,
    Changeable,
    Default,
    /// Saved values: the default values, as nothing can be saved (see the module documentation).
    Saved,
}

/// A decoded MODE SENSE(6) or MODE SENSE(10) request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ModeSense {
    /// MODE SENSE(10): 8-byte header.
    pub(super) ten: bool,
    pub(super) control: PageControl,
    pub(super) page: u8,
    /// DBD: no block descriptor.
    pub(super) dbd: bool,
    /// LLBAA: a long block descriptor (MODE SENSE(10) only).
    pub(super) llbaa: bool,
}

/// Whether MODE SENSE page code `page` (subpage 00h or FFh) is supported.
pub(super) fn supports_page(page: u8) -> bool {
    page == ALL_PAGES || PAGES.contains(&page)
}

/// One mode page's bytes: page code, page length, parameters.
///
/// # Invariants
///
/// `len <= MAX_PAGE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    bytes: [u8; MAX_PAGE],
    len: usize,
}

impl Page {
    /// A page of `code` with `parameters` bytes after the 2-byte header; the PS bit is 0 (the
    /// page cannot be saved) and SPF is 0 (page_0 format).
    fn new(code: u8, parameters: u8) -> Self {
        let mut bytes = [0u8; MAX_PAGE];
        bytes[0] = code;
        bytes[1] = parameters;
        // INVARIANT: clamped to the array.
        let len = usize::from(parameters).saturating_add(2).min(MAX_PAGE);
        Self { bytes, len }
    }

    fn set(&mut self, at: usize, value: u8) {
        if let Some(byte) = self.bytes.get_mut(at) {
            *byte = value;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

/// Mode page `code` of `disk` with the values `control` selects, or `None` for an unsupported
/// page.
fn page(code: u8, disk: &DiskInfo, control: PageControl) -> Option<Page> {
    match code {
        CACHING => Some(caching_page(disk, control)),
        CONTROL => Some(control_page(control)),
        POWER_CONDITION => Some(power_condition_page(control)),
        INFORMATIONAL_EXCEPTIONS => Some(informational_exceptions_page(control)),
        _ => None,
    }
}

/// The caching mode page, 20 bytes (SBC-3 table 182).
fn caching_page(disk: &DiskInfo, control: PageControl) -> Page {
    let mut page = Page::new(CACHING, 0x12);
    // Byte 2: IC ABPF CAP DISC SIZE WCE MF RCD. RCD = 0: the read cache is enabled.
    let wce = match control {
        PageControl::Changeable => disk.write_cache.is_some_and(|cache| cache.changeable),
        PageControl::Current => disk.write_cache_enabled(),
        PageControl::Default | PageControl::Saved => disk.write_cache_enabled_by_default(),
    };
    page.set(2, if wce { 0x04 } else { 0 });
    page
}

/// The control mode page, 12 bytes (SPC-4 table 457); nothing is changeable.
fn control_page(control: PageControl) -> Page {
    let mut page = Page::new(CONTROL, 0x0A);
    if control != PageControl::Changeable {
        page.set(2, 0x02); // GLTSD = 1: no log parameters are saved.
        page.set(3, 0x10); // QUEUE ALGORITHM MODIFIER = 1: unrestricted reordering; QERR = 00b.
    }
    page
}

/// The power condition mode page, 40 bytes (SPC-4 7.5.13); nothing is changeable.
///
/// Bytes 2-3 enable the condition timers (PM_BG_PRECEDENCE, STANDBY_Y; IDLE_C, IDLE_B, IDLE_A,
/// STANDBY_Z): none is enabled and every timer (bytes 4-23) is 0. Byte 39: CCF IDLE (7:6),
/// CCF STANDBY (5:4), CCF STOPPED (3:2), each 01b: returning CHECK CONDITION after a transition
/// from that condition is disabled.
fn power_condition_page(control: PageControl) -> Page {
    let mut page = Page::new(POWER_CONDITION, 0x26);
    if control != PageControl::Changeable {
        page.set(39, 0x54);
    }
    page
}

/// The informational exceptions control mode page, 12 bytes (SPC-4 7.5.14); nothing is
/// changeable.
///
/// Byte 2: PERF, EBF, EWASC, DEXCPT (bit 3), TEST, EBACKERR, LOGERR; byte 3: MRIE (3:0);
/// bytes 4-7 INTERVAL TIMER, 8-11 REPORT COUNT. DEXCPT = 1 disables informational exception
/// operations, MRIE = 0 reports none.
fn informational_exceptions_page(control: PageControl) -> Page {
    let mut page = Page::new(INFORMATIONAL_EXCEPTIONS, 0x0A);
    if control != PageControl::Changeable {
        page.set(2, 0x08);
    }
    page
}

/// The header's DEVICE-SPECIFIC PARAMETER: WP (bit 7) and DPOFUA (bit 4).
fn device_specific(disk: &DiskInfo) -> u8 {
    let mut value = 0;
    if disk.read_only {
        value |= 0x80;
    }
    if disk.supports_fua() {
        value |= 0x10;
    }
    value
}

/// The NUMBER OF LOGICAL BLOCKS of a short block descriptor (FFFFFFFFh when it does not fit,
/// SBC-3 6.4.2.2).
fn short_block_count(disk: &DiskInfo) -> u32 {
    u32::try_from(disk.capacity).unwrap_or(u32::MAX)
}

/// MODE SENSE parameter data.
pub(super) fn mode_sense(request: &ModeSense, disk: &DiskInfo, r: &mut Response) {
    let long = request.ten && request.llbaa;
    let descriptor_length: u8 = match (request.dbd, long) {
        (true, _) => 0,
        (false, true) => 16,
        (false, false) => 8,
    };
    if request.ten {
        r.be16(0); // MODE DATA LENGTH, patched below.
        r.u8(0x00); // MEDIUM TYPE
        r.u8(device_specific(disk));
        r.u8(if long && descriptor_length != 0 {
            0x01
        } else {
            0x00
        }); // LONGLBA
        r.u8(0x00);
        r.be16(u16::from(descriptor_length));
    } else {
        r.u8(0); // MODE DATA LENGTH, patched below.
        r.u8(0x00);
        r.u8(device_specific(disk));
        r.u8(descriptor_length);
    }
    // The header and block descriptor always carry current values (SPC-4 6.11.1).
    match descriptor_length {
        8 => {
            r.be32(short_block_count(disk));
            r.put(&disk.block_size.bytes().to_be_bytes()); // reserved (0) + 24-bit length
        }
        16 => {
            r.be64(disk.capacity);
            r.be32(0);
            r.be32(disk.block_size.bytes());
        }
        _ => {}
    }
    for code in PAGES {
        if (request.page == code || request.page == ALL_PAGES)
            && let Some(page) = page(code, disk, request.control)
        {
            r.put(page.as_bytes());
        }
    }
    // MODE DATA LENGTH excludes itself and ignores truncation by the allocation length.
    if request.ten {
        let length = u16::try_from(r.len().saturating_sub(2)).unwrap_or(u16::MAX);
        r.patch(0, &length.to_be_bytes());
    } else {
        let length = u8::try_from(r.len().saturating_sub(1)).unwrap_or(u8::MAX);
        r.patch(0, &[length]);
    }
}

/// A write cache change MODE SELECT asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheChange {
    /// The new state of the write cache (WCE).
    pub write_cache_enabled: bool,
}

/// A decoded MODE SELECT(6) or MODE SELECT(10): fetch the parameter list, then [`Self::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModeSelect {
    /// The PARAMETER LIST LENGTH: bytes of data-out to fetch (never 0).
    pub parameter_list_length: u16,
    /// MODE SELECT(10): 8-byte header.
    pub(super) ten: bool,
    /// PF: the pages are in the standard page format.
    pub(super) page_format: bool,
}

fn field(offset: usize, bit: Option<u8>) -> Sense {
    Sense::invalid_parameter_field(u16::try_from(offset).unwrap_or(u16::MAX), bit)
}

fn be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

impl ModeSelect {
    /// Validates the parameter list (at most [`Self::parameter_list_length`] bytes of `params`
    /// are read) against `disk`; returns the write cache change to apply, if any.
    ///
    /// # Errors
    ///
    /// PARAMETER LIST LENGTH ERROR when the list truncates a header, descriptor or page;
    /// INVALID FIELD IN PARAMETER LIST for any field that differs from the current value and
    /// cannot change; INVALID FIELD IN CDB for pages sent with PF = 0.
    pub fn parse(&self, params: &[u8], disk: &DiskInfo) -> Result<Option<CacheChange>, Sense> {
        let params = params
            .get(..usize::from(self.parameter_list_length))
            .unwrap_or(params);
        let byte = |at: usize| params.get(at).copied().unwrap_or(0);
        let (header_length, medium_at) = if self.ten { (8usize, 2usize) } else { (4, 1) };
        if params.len() < header_length {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        }
        if byte(medium_at) != 0 {
            return Err(field(medium_at, None));
        }
        // The DEVICE-SPECIFIC PARAMETER's WP and DPOFUA are ignored by MODE SELECT (SBC-3 6.4.1).
        let (descriptor_length, long, length_at) = if self.ten {
            (
                usize::from(u16::from_be_bytes([byte(6), byte(7)])),
                byte(4) & 0x01 != 0,
                6,
            )
        } else {
            (usize::from(byte(3)), false, 3)
        };
        let expected = if long { 16 } else { 8 };
        if descriptor_length != 0 && descriptor_length != expected {
            return Err(field(length_at, None));
        }
        let pages_at = header_length.saturating_add(descriptor_length);
        let Some(descriptor) = params.get(header_length..pages_at) else {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        };
        check_block_descriptor(descriptor, long, header_length, disk)?;

        let mut wce = None;
        let mut offset = pages_at;
        while offset < params.len() {
            if !self.page_format {
                return Err(Sense::invalid_cdb_field(1, Some(4)));
            }
            let head = params.get(offset..offset.saturating_add(2));
            let Some(&[code, length]) = head else {
                return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
            };
            if code & 0x40 != 0 {
                return Err(field(offset, Some(6))); // SPF: no subpages are supported.
            }
            let end = offset.saturating_add(2).saturating_add(usize::from(length));
            let Some(page) = params.get(offset..end) else {
                return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
            };
            // The PS bit is reserved in MODE SELECT; byte 0 is otherwise the page code.
            let (Some(current), Some(changeable)) = (
                self::page(code & 0x3F, disk, PageControl::Current),
                self::page(code & 0x3F, disk, PageControl::Changeable),
            ) else {
                return Err(field(offset, Some(5)));
            };
            let page_length = current.as_bytes().get(1).copied().unwrap_or(0);
            if length != page_length {
                return Err(field(offset.saturating_add(1), None));
            }
            for (i, ((&sent, &now), &mask)) in page
                .iter()
                .zip(current.as_bytes())
                .zip(changeable.as_bytes())
                .enumerate()
                .skip(2)
            {
                let wrong = (sent ^ now) & !mask;
                if wrong != 0 {
                    let bit = 7u8.saturating_sub(u8::try_from(wrong.leading_zeros()).unwrap_or(0));
                    return Err(field(offset.saturating_add(i), Some(bit)));
                }
            }
            if code & 0x3F == CACHING {
                wce = page.get(2).map(|&b| b & 0x04 != 0);
            }
            offset = end;
        }
        Ok(wce
            .filter(|&enabled| enabled != disk.write_cache_enabled())
            .map(|write_cache_enabled| CacheChange {
                write_cache_enabled,
            }))
    }
}

/// A block descriptor may restate the current geometry (or 0 blocks: keep the capacity,
/// SBC-3 6.4.2.2) but not change it.
fn check_block_descriptor(
    descriptor: &[u8],
    long: bool,
    at: usize,
    disk: &DiskInfo,
) -> Result<(), Sense> {
    if descriptor.is_empty() {
        return Ok(());
    }
    let (blocks, current, length_at, length) = if long {
        (
            be(descriptor.get(..8).unwrap_or(&[])),
            disk.capacity,
            12,
            be(descriptor.get(12..16).unwrap_or(&[])),
        )
    } else {
        (
            be(descriptor.get(..4).unwrap_or(&[])),
            u64::from(short_block_count(disk)),
            5,
            be(descriptor.get(5..8).unwrap_or(&[])),
        )
    };
    if blocks != 0 && blocks != current {
        return Err(field(at, None));
    }
    if length != u64::from(disk.block_size.bytes()) {
        return Err(field(at.saturating_add(length_at), None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::arithmetic_side_effects,
        clippy::cast_possible_truncation,
        clippy::panic,
        reason = "tests index fixed buffers and fail by panicking"
    )]

    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::scsi::disk::WriteCache;
    use crate::scsi::testdisk::{disk4k, disk512};

    fn sense(request: ModeSense, disk: &DiskInfo) -> Vec<u8> {
        let mut r = Response::new();
        mode_sense(&request, disk, &mut r);
        assert!(!r.overflowed());
        r.as_bytes().to_vec()
    }

    const SIX_CACHING: ModeSense = ModeSense {
        ten: false,
        control: PageControl::Current,
        page: CACHING,
        dbd: false,
        llbaa: false,
    };

    #[test]
    fn mode_sense_6_caching_with_descriptor() {
        let data = sense(SIX_CACHING, &disk512());
        assert_eq!(data.len(), 4 + 8 + 20);
        assert_eq!(data[..4], [31, 0, 0x10, 8]);
        assert_eq!(data[4..12], [0x00, 0x20, 0x00, 0x00, 0, 0, 0x02, 0x00]);
        assert_eq!(data[12..16], [0x08, 0x12, 0x04, 0]);
        assert!(data[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn mode_sense_read_only_without_cache() {
        let mut d = disk4k();
        d.read_only = true;
        d.write_cache = None;
        d.flush = false;
        let data = sense(
            ModeSense {
                dbd: true,
                ..SIX_CACHING
            },
            &d,
        );
        assert_eq!(data[..4], [23, 0, 0x80, 0]);
        assert_eq!(data[4..7], [0x08, 0x12, 0x00]);
    }

    #[test]
    fn mode_sense_10_long_descriptor_all_pages() {
        let mut d = disk512();
        d.capacity = 1 << 33;
        let request = ModeSense {
            ten: true,
            page: ALL_PAGES,
            llbaa: true,
            ..SIX_CACHING
        };
        let data = sense(request, &d);
        assert_eq!(data.len(), 8 + 16 + 20 + 12 + 40 + 12);
        assert_eq!(data[..8], [0, 106, 0, 0x10, 0x01, 0, 0, 16]);
        assert_eq!(data[8..16], (1u64 << 33).to_be_bytes());
        assert_eq!(data[20..24], 512u32.to_be_bytes());
        assert_eq!(data[24..27], [0x08, 0x12, 0x04]);
        assert_eq!(data[44..48], [0x0A, 0x0A, 0x02, 0x10]);
        // MODE SENSE(10) without LLBAA: short descriptor saturating at FFFFFFFFh.
        let data = sense(
            ModeSense {
                llbaa: false,
                ..request
            },
            &d,
        );
        assert_eq!(data[..8], [0, 98, 0, 0x10, 0, 0, 0, 8]);
        assert_eq!(data[8..12], [0xFF; 4]);
    }

    #[test]
    fn mode_sense_changeable_values() {
        let request = ModeSense {
            control: PageControl::Changeable,
            page: ALL_PAGES,
            dbd: true,
            ..SIX_CACHING
        };
        let data = sense(request, &disk512());
        assert_eq!(data[4..7], [0x08, 0x12, 0x04]);
        assert!(data[7..24].iter().all(|&b| b == 0));
        assert_eq!(data[24..26], [0x0A, 0x0A]);
        assert!(data[26..36].iter().all(|&b| b == 0));
        assert_eq!(data[36..38], [0x1A, 0x26]);
        assert!(data[38..76].iter().all(|&b| b == 0));
        assert_eq!(data[76..78], [0x1C, 0x0A]);
        assert!(data[78..].iter().all(|&b| b == 0));
        assert_eq!(data.len(), 88);
        let mut fixed = disk512();
        fixed.write_cache = Some(WriteCache {
            enabled: true,
            changeable: false,
        });
        let data = sense(request, &fixed);
        assert_eq!(data[6], 0x00);
        let current = sense(
            ModeSense {
                control: PageControl::Current,
                ..request
            },
            &fixed,
        );
        assert_eq!(current[6], 0x04);
    }

    fn select(ten: bool, params: &[u8], disk: &DiskInfo) -> Result<Option<CacheChange>, Sense> {
        let parameter_list_length = u16::try_from(params.len()).unwrap();
        ModeSelect {
            parameter_list_length,
            ten,
            page_format: true,
        }
        .parse(params, disk)
    }

    fn caching_list(wce: bool) -> Vec<u8> {
        let mut list = std::vec![0u8, 0, 0, 0];
        let mut page = [0u8; 20];
        page[0] = 0x08;
        page[1] = 0x12;
        page[2] = if wce { 0x04 } else { 0 };
        list.extend_from_slice(&page);
        list
    }

    #[test]
    fn mode_select_toggles_wce() {
        let d = disk512();
        assert_eq!(
            select(false, &caching_list(false), &d),
            Ok(Some(CacheChange {
                write_cache_enabled: false
            }))
        );
        assert_eq!(select(false, &caching_list(true), &d), Ok(None));
        // The PS bit is ignored; a header with WP/DPOFUA set is ignored too.
        let mut list = caching_list(false);
        list[2] = 0x90;
        list[4] |= 0x80;
        assert_eq!(
            select(false, &list, &d),
            Ok(Some(CacheChange {
                write_cache_enabled: false
            }))
        );
    }

    #[test]
    fn mode_select_10_with_block_descriptor() {
        let d = disk512();
        let mut list = std::vec![0u8, 0, 0, 0, 0, 0, 0, 8];
        list.extend_from_slice(&[0, 0x20, 0, 0, 0, 0, 0x02, 0x00]);
        list.extend_from_slice(&caching_list(false)[4..]);
        assert_eq!(
            select(true, &list, &d),
            Ok(Some(CacheChange {
                write_cache_enabled: false
            }))
        );
        // Zero blocks keeps the capacity.
        list[8..12].copy_from_slice(&[0; 4]);
        assert!(select(true, &list, &d).is_ok());
        // Another block length is a format change: refused, pointing at the length.
        list[14] = 0x10;
        assert_eq!(
            select(true, &list, &d),
            Err(Sense::invalid_parameter_field(13, None))
        );
        list[14] = 0x02;
        list[9] = 0x21;
        assert_eq!(
            select(true, &list, &d),
            Err(Sense::invalid_parameter_field(8, None))
        );
    }

    #[test]
    fn mode_select_refuses_unchangeable_fields() {
        let mut fixed = disk512();
        fixed.write_cache = Some(WriteCache {
            enabled: true,
            changeable: false,
        });
        assert_eq!(
            select(false, &caching_list(false), &fixed),
            Err(Sense::invalid_parameter_field(6, Some(2)))
        );
        let mut list = caching_list(true);
        list[6] |= 0x01; // RCD
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(6, Some(0)))
        );
        let mut list = caching_list(true);
        list[1] = 3; // medium type
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(1, None))
        );
        let mut list = caching_list(true);
        list[5] = 0x10; // page length
        list.truncate(4 + 18);
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(5, None))
        );
        let mut list = caching_list(true);
        list[4] = 0x19; // protocol-specific port: unsupported page
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(4, Some(5)))
        );
        let mut list = caching_list(true);
        list[4] = 0x48; // SPF
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(4, Some(6)))
        );
        let mut list = std::vec![0u8, 0, 0, 4];
        list.extend_from_slice(&[0; 4]);
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(3, None))
        );
    }

    #[test]
    fn mode_select_control_page_restated_is_accepted() {
        let mut list = std::vec![0u8, 0, 0, 0];
        list.extend_from_slice(control_page(PageControl::Current).as_bytes());
        assert_eq!(select(false, &list, &disk512()), Ok(None));
        list[6] = 0x06; // D_SENSE
        assert_eq!(
            select(false, &list, &disk512()),
            Err(Sense::invalid_parameter_field(6, Some(2)))
        );
    }

    #[test]
    fn mode_select_truncations() {
        let d = disk512();
        assert_eq!(
            select(false, &[0, 0, 0], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        assert_eq!(
            select(true, &[0; 7], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        assert_eq!(
            select(false, &[0, 0, 0, 8, 0, 0], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        assert_eq!(
            select(false, &[0, 0, 0, 0, 0x08], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        let list = caching_list(false);
        assert_eq!(
            select(false, &list[..20], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        // Header only: nothing to change.
        assert_eq!(select(false, &[0; 4], &d), Ok(None));
        // The parameter list length bounds what is read, not the buffer.
        let request = ModeSelect {
            parameter_list_length: 4,
            ten: false,
            page_format: true,
        };
        assert_eq!(request.parse(&list, &d), Ok(None));
    }

    #[test]
    fn mode_select_pages_need_pf() {
        let list = caching_list(false);
        let request = ModeSelect {
            parameter_list_length: 24,
            ten: false,
            page_format: false,
        };
        assert_eq!(
            request.parse(&list, &disk512()),
            Err(Sense::invalid_cdb_field(1, Some(4)))
        );
        assert_eq!(request.parse(&list[..4], &disk512()), Ok(None));
    }
    /// The Power Condition page as SPC-4 7.5.13 lays it out: no timer enabled, CCF 01b.
    fn power_condition_bytes() -> [u8; 40] {
        let mut page = [0u8; 40];
        page[0] = 0x1A;
        page[1] = 0x26;
        page[39] = 0x54;
        page
    }

    /// The Informational Exceptions Control page (SPC-4 7.5.14): DEXCPT = 1, MRIE = 0.
    const IEC_BYTES: [u8; 12] = [0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    #[test]
    fn mode_sense_power_condition_and_informational_exceptions() {
        let request = ModeSense {
            page: POWER_CONDITION,
            dbd: true,
            ..SIX_CACHING
        };
        let data = sense(request, &disk512());
        assert_eq!(data[..4], [43, 0, 0x10, 0]);
        assert_eq!(data[4..], power_condition_bytes());
        let data = sense(
            ModeSense {
                page: INFORMATIONAL_EXCEPTIONS,
                ..request
            },
            &disk512(),
        );
        assert_eq!(data[..4], [15, 0, 0x10, 0]);
        assert_eq!(data[4..], IEC_BYTES);
        // Nothing in either page is changeable.
        for page in [POWER_CONDITION, INFORMATIONAL_EXCEPTIONS] {
            let data = sense(
                ModeSense {
                    page,
                    control: PageControl::Changeable,
                    ..request
                },
                &disk512(),
            );
            assert_eq!(data[4], page);
            assert!(data[6..].iter().all(|&b| b == 0), "{page:02X}: {data:02X?}");
        }
    }

    #[test]
    fn all_pages_for_every_page_control() {
        let d = disk512();
        let request = ModeSense {
            page: ALL_PAGES,
            dbd: true,
            ..SIX_CACHING
        };
        let mut caching = [0u8; 20];
        caching[0] = 0x08;
        caching[1] = 0x12;
        caching[2] = 0x04;
        let control = [0x0A, 0x0A, 0x02, 0x10, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut expected = std::vec![87u8, 0, 0x10, 0];
        expected.extend_from_slice(&caching);
        expected.extend_from_slice(&control);
        expected.extend_from_slice(&power_condition_bytes());
        expected.extend_from_slice(&IEC_BYTES);
        // Current, default and saved values are the same: nothing is saved, defaults are the
        // device's configuration.
        for control in [
            PageControl::Current,
            PageControl::Default,
            PageControl::Saved,
        ] {
            assert_eq!(
                sense(ModeSense { control, ..request }, &d),
                expected,
                "{control:?}"
            );
        }
        // Changeable: only WCE.
        let changeable = sense(
            ModeSense {
                control: PageControl::Changeable,
                ..request
            },
            &d,
        );
        assert_eq!(changeable.len(), expected.len());
        let masks: Vec<(usize, u8)> = changeable
            .iter()
            .enumerate()
            .skip(4)
            .filter(|&(_, &b)| b != 0)
            .map(|(i, &b)| (i, b))
            .collect();
        assert_eq!(
            masks,
            [
                (4, 0x08),
                (5, 0x12),
                (6, 0x04),
                (24, 0x0A),
                (25, 0x0A),
                (36, 0x1A),
                (37, 0x26),
                (76, 0x1C),
                (77, 0x0A)
            ]
        );
        // Saved values of a disk whose cache is off follow its configuration too.
        let mut off = d;
        off.write_cache = Some(WriteCache {
            enabled: false,
            changeable: true,
        });
        let wce = |control, disk: &DiskInfo| sense(ModeSense { control, ..request }, disk)[6];
        assert_eq!(wce(PageControl::Saved, &off), 0x00);
        // A cache switched off by MODE SELECT after coming up on: the default and saved values
        // are the power-on ones, the current value is the new one.
        off.write_cache_default = Some(true);
        assert_eq!(wce(PageControl::Current, &off), 0x00);
        assert_eq!(wce(PageControl::Default, &off), 0x04);
        assert_eq!(wce(PageControl::Saved, &off), 0x04);
        // And the other way round.
        let mut on = d;
        on.write_cache_default = Some(false);
        assert_eq!(wce(PageControl::Current, &on), 0x04);
        assert_eq!(wce(PageControl::Default, &on), 0x00);
        assert_eq!(wce(PageControl::Saved, &on), 0x00);
        // Without a cache there is nothing to enable, whatever the default says.
        let mut none = on;
        none.write_cache = None;
        none.write_cache_default = Some(true);
        assert_eq!(wce(PageControl::Default, &none), 0x00);
    }

    #[test]
    fn mode_select_restates_power_condition_and_informational_exceptions() {
        let d = disk512();
        let mut list = std::vec![0u8, 0, 0, 0];
        list.extend_from_slice(&power_condition_bytes());
        list.extend_from_slice(&IEC_BYTES);
        list.extend_from_slice(&caching_list(false)[4..]);
        assert_eq!(
            select(false, &list, &d),
            Ok(Some(CacheChange {
                write_cache_enabled: false
            }))
        );
        // Enabling the idle_a timer is not possible: the first differing bit is named.
        let mut idle = list.clone();
        idle[4 + 3] = 0x02;
        assert_eq!(
            select(false, &idle, &d),
            Err(Sense::invalid_parameter_field(7, Some(1)))
        );
        // A timer value.
        let mut timer = list.clone();
        timer[4 + 7] = 0x10;
        assert_eq!(
            select(false, &timer, &d),
            Err(Sense::invalid_parameter_field(11, Some(4)))
        );
        // Turning informational exceptions on (DEXCPT = 0) or asking for reports (MRIE).
        let mut dexcpt = list.clone();
        dexcpt[44 + 2] = 0x00;
        assert_eq!(
            select(false, &dexcpt, &d),
            Err(Sense::invalid_parameter_field(46, Some(3)))
        );
        let mut mrie = list.clone();
        mrie[44 + 3] = 0x06;
        assert_eq!(
            select(false, &mrie, &d),
            Err(Sense::invalid_parameter_field(47, Some(2)))
        );
        // The power condition page with a wrong page length.
        let mut short = list.clone();
        short[5] = 0x0A;
        assert_eq!(
            select(false, &short, &d),
            Err(Sense::invalid_parameter_field(5, None))
        );
        // A list cut inside the power condition page.
        assert_eq!(
            select(false, &list[..30], &d),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
    }
}
