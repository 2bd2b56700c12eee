//! REPORT LUNS parameter data: the target has exactly one logical unit, LUN 0.
//!
//! SPC-4 6.33: an 8-byte header (LUN LIST LENGTH, reserved) and one 8-byte entry per LUN.
//! SELECT REPORT 00h and 02h list LUN 0; 01h asks for well-known LUNs only, of which there are
//! none. Other SELECT REPORT values are refused by the decoder.

use super::data::Response;

/// Whether SELECT REPORT `select` is supported.
pub(super) fn supports_select(select: u8) -> bool {
    matches!(select, 0x00..=0x02)
}

/// REPORT LUNS data for SELECT REPORT `select`.
pub(super) fn report_luns(select: u8, r: &mut Response) {
    let luns: u32 = if select == 0x01 { 0 } else { 1 };
    r.be32(luns.saturating_mul(8)); // LUN LIST LENGTH
    r.be32(0);
    if luns == 1 {
        r.be64(0); // LUN 0, peripheral device addressing.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lun_or_no_well_known_ones() {
        let mut r = Response::new();
        report_luns(0, &mut r);
        assert_eq!(
            r.as_bytes(),
            [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut r = Response::new();
        report_luns(1, &mut r);
        assert_eq!(r.as_bytes(), [0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(supports_select(2));
        assert!(!supports_select(3));
        assert!(!supports_select(0x10));
    }
}
