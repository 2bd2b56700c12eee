//! Mode parameters: the caching and control mode pages, reported by MODE SENSE and, for the
//! write cache enable bit only, changed by MODE SELECT.
//!
//! Mode parameter data (SPC-4 7.5.4) is a header (SPC-4 7.5.5: 4 bytes for the 6-byte commands,
//! 8 for the 10-byte ones), an optional block descriptor (SBC-3 6.4.2: short, 8 bytes, or long,
//! 16 bytes when MODE SENSE(10) sets LLBAA), then mode pages. The header's DEVICE-SPECIFIC
//! PARAMETER (SBC-3 6.4.1) carries WP (the disk is write protected) and DPOFUA (the FUA bit is
//! honoured).
//!
//! Pages: Caching (08h, SBC-3 6.4.5) with WCE, changeable only when the device lets the host
//! switch its cache; Control (0Ah, SPC-4 7.5.8), read-only, reporting unrestricted reordering
//! (the device completes requests in any order) and no log pages. Page 3Fh returns both.
//! Parameters cannot be saved: PC = 11b (saved values) is SAVING PARAMETERS NOT SUPPORTED and
//! MODE SELECT with SP = 1 is INVALID FIELD IN CDB. Default values are the current values.
//!
//! MODE SELECT (SPC-4 6.9, 6.10) accepts a parameter list whose every field equals the current
//! value except the caching page's WCE when it is changeable; any other difference is INVALID
//! FIELD IN PARAMETER LIST, pointing at the first differing bit (SPC-4 7.5.1). With PF = 0 the
//! pages would be vendor specific, so a list with pages and PF = 0 is INVALID FIELD IN CDB.

use super::data::Response;
use super::disk::DiskInfo;
use super::sense::Sense;

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0A;
/// Page code for "all pages".
pub(super) const ALL_PAGES: u8 = 0x3F;

/// Which values MODE SENSE reports (the PC field, SPC-4 6.11, table 98).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PageControl {
    Current,
    Changeable,
    Default,
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
    matches!(page, CACHING | CONTROL | ALL_PAGES)
}

/// The caching mode page, 20 bytes (SBC-3 table 182).
fn caching_page(disk: &DiskInfo, control: PageControl) -> [u8; 20] {
    let mut page = [0u8; 20];
    page[0] = CACHING; // PS = 0: not savable; SPF = 0.
    page[1] = 0x12;
    // Byte 2: IC ABPF CAP DISC SIZE WCE MF RCD. RCD = 0: the read cache is enabled.
    page[2] = match control {
        PageControl::Changeable => {
            if disk.write_cache.is_some_and(|cache| cache.changeable) {
                0x04
            } else {
                0
            }
        }
        PageControl::Current | PageControl::Default => {
            if disk.write_cache_enabled() {
                0x04
            } else {
                0
            }
        }
    };
    page
}

/// The control mode page, 12 bytes (SPC-4 table 457); nothing is changeable.
fn control_page(control: PageControl) -> [u8; 12] {
    let mut page = [0u8; 12];
    page[0] = CONTROL;
    page[1] = 0x0A;
    if control != PageControl::Changeable {
        page[2] = 0x02; // GLTSD = 1: no log parameters are saved.
        page[3] = 0x10; // QUEUE ALGORITHM MODIFIER = 1: unrestricted reordering; QERR = 00b.
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
    if matches!(request.page, CACHING | ALL_PAGES) {
        r.put(&caching_page(disk, request.control));
    }
    if matches!(request.page, CONTROL | ALL_PAGES) {
        r.put(&control_page(request.control));
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
            let (current, changeable): ([u8; 20], [u8; 20]) = match code & 0x3F {
                CACHING => (
                    caching_page(disk, PageControl::Current),
                    caching_page(disk, PageControl::Changeable),
                ),
                CONTROL => (pad(&control_page(PageControl::Current)), [0; 20]),
                _ => return Err(field(offset, Some(5))),
            };
            let page_length = usize::from(current.get(1).copied().unwrap_or(0));
            if usize::from(length) != page_length {
                return Err(field(offset.saturating_add(1), None));
            }
            for (i, ((&sent, &now), &mask)) in page
                .iter()
                .zip(&current)
                .zip(&changeable)
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

fn pad(page: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (dst, &src) in out.iter_mut().zip(page) {
        *dst = src;
    }
    out
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
        assert_eq!(data.len(), 8 + 16 + 20 + 12);
        assert_eq!(data[..8], [0, 54, 0, 0x10, 0x01, 0, 0, 16]);
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
        assert_eq!(data[..8], [0, 46, 0, 0x10, 0, 0, 0, 8]);
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
        assert!(data[26..].iter().all(|&b| b == 0));
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
        list[4] = 0x1C; // informational exceptions: unsupported page
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
        list.extend_from_slice(&control_page(PageControl::Current));
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
}
