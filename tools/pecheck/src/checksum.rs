//! The PE image checksum (`IMAGE_OPTIONAL_HEADER.CheckSum`).
//!
//! The kernel verifies it for boot drivers, and the linker leaves it 0 unless asked (`/RELEASE`),
//! so the package step computes and writes it. The algorithm is the one ImageHlp's
//! `CheckSumMappedFile` implements: the image is read as little-endian 16-bit words (a trailing
//! odd byte is the low byte of a last word) with the 4-byte `CheckSum` field itself read as
//! zero; the words are added with end-around carry (a ones'-complement sum folded to 16 bits);
//! the file length in bytes is added to the folded sum.

use crate::Error;

/// Offset of `e_lfanew` (the file offset of the NT headers) in the DOS header.
const E_LFANEW_OFFSET: usize = 0x3C;

/// Offset of `CheckSum` from the start of the NT headers: the 4-byte `PE\0\0` signature, the
/// 20-byte `IMAGE_FILE_HEADER`, then 64 bytes into the optional header (the same for PE32 and
/// PE32+: the fields before it differ in type but not in total size).
const CHECKSUM_OFFSET_IN_NT_HEADERS: usize = 4 + 20 + 64;

/// Returns the file offset of the `CheckSum` field of a PE image.
pub fn field_offset(image: &[u8]) -> Result<usize, Error> {
    if image.get(..2) != Some(b"MZ".as_slice()) {
        return Err(Error::new("not a PE image: no MZ signature"));
    }
    let e_lfanew = read_u32(image, E_LFANEW_OFFSET)
        .ok_or_else(|| Error::new("not a PE image: truncated DOS header"))?;
    let nt_headers = usize::try_from(e_lfanew)
        .map_err(|_| Error::new("not a PE image: e_lfanew out of range"))?;
    let signature_end = nt_headers
        .checked_add(4)
        .ok_or_else(|| Error::new("not a PE image: e_lfanew out of range"))?;
    if image.get(nt_headers..signature_end) != Some(b"PE\0\0".as_slice()) {
        return Err(Error::new("not a PE image: no PE signature at e_lfanew"));
    }
    let offset = nt_headers + CHECKSUM_OFFSET_IN_NT_HEADERS;
    if offset + 4 > image.len() {
        return Err(Error::new("not a PE image: truncated optional header"));
    }
    Ok(offset)
}

/// Returns the `CheckSum` value stored in a PE image.
pub fn stored(image: &[u8]) -> Result<u32, Error> {
    let offset = field_offset(image)?;
    read_u32(image, offset).ok_or_else(|| Error::new("truncated optional header"))
}

/// Computes the checksum of a PE image (its stored `CheckSum` field does not take part).
pub fn compute(image: &[u8]) -> Result<u32, Error> {
    let offset = field_offset(image)?;
    compute_skipping(image, offset)
}

/// Computes the checksum and writes it into the image's `CheckSum` field; returns it.
pub fn update(image: &mut [u8]) -> Result<u32, Error> {
    let offset = field_offset(image)?;
    let checksum = compute_skipping(image, offset)?;
    image[offset..offset + 4].copy_from_slice(&checksum.to_le_bytes());
    Ok(checksum)
}

/// The checksum algorithm over `data`, reading the 4 bytes at `field` as zero.
///
/// `field` need not be even: bytes are masked one by one, so any placement of the field works.
pub fn compute_skipping(data: &[u8], field: usize) -> Result<u32, Error> {
    let length = u32::try_from(data.len())
        .map_err(|_| Error::new("image larger than 4 GiB has no PE checksum"))?;
    let field = field..field.saturating_add(4);
    let byte_at = |index: usize| -> u32 {
        if field.contains(&index) {
            0
        } else {
            data.get(index).copied().map_or(0, u32::from)
        }
    };
    let mut sum: u32 = 0;
    for word_start in (0..data.len()).step_by(2) {
        let word = byte_at(word_start) | (byte_at(word_start + 1) << 8);
        // End-around carry keeps `sum` within 16 bits (plus at most one carry) at every step.
        sum += word;
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    Ok(sum.wrapping_add(length))
}

/// Reads a little-endian `u32` at `offset`, if it is in bounds.
fn read_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_words_with_end_around_carry_and_adds_the_length() {
        // 0xFFFF + 0xFFFF = 0x1FFFE -> folded 0xFFFF; + 0x0001 = 0x10000 -> folded 0x0001.
        // The skipped field lies past the end; the length (6) is added last.
        let data = [0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x00];
        assert_eq!(compute_skipping(&data, 100).unwrap(), 0x0001 + 6);
    }

    #[test]
    fn a_trailing_odd_byte_is_the_low_byte_of_a_last_word() {
        let data = [0x34, 0x12, 0x78];
        assert_eq!(compute_skipping(&data, 100).unwrap(), 0x1234 + 0x0078 + 3);
    }

    #[test]
    fn the_checksum_field_reads_as_zero() {
        let mut data = vec![0u8; 16];
        data[0] = 0x01;
        data[8..12].copy_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD]);
        let with_field = compute_skipping(&data, 8).unwrap();
        data[8..12].fill(0);
        assert_eq!(with_field, compute_skipping(&data, 8).unwrap());
        assert_eq!(with_field, 1 + 16);
    }

    #[test]
    fn an_odd_field_offset_masks_exactly_four_bytes() {
        // Words: 0x0201, 0x0403, 0x0605 with bytes 1..5 (0x02, 0x03, 0x04, 0x05) masked:
        // 0x0001 + 0x0000 + 0x0600.
        let data = [1, 2, 3, 4, 5, 6];
        assert_eq!(compute_skipping(&data, 1).unwrap(), 0x0001 + 0x0600 + 6);
    }

    #[test]
    fn empty_input_sums_to_zero() {
        assert_eq!(compute_skipping(&[], 0).unwrap(), 0);
    }

    #[test]
    fn field_offset_follows_e_lfanew() {
        let mut image = vec![0u8; 0x200];
        image[..2].copy_from_slice(b"MZ");
        image[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        image[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert_eq!(field_offset(&image).unwrap(), 0x80 + 88);

        let stored_before = stored(&image).unwrap();
        assert_eq!(stored_before, 0);
        let written = update(&mut image).unwrap();
        assert_eq!(stored(&image).unwrap(), written);
        // Writing the checksum does not change it: the field does not take part.
        assert_eq!(compute(&image).unwrap(), written);
    }

    #[test]
    fn rejects_images_without_signatures() {
        assert!(field_offset(b"not an image").is_err());
        let mut image = vec![0u8; 0x100];
        image[..2].copy_from_slice(b"MZ");
        image[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        assert!(field_offset(&image).is_err());
        image[0x3C..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(field_offset(&image).is_err());
    }
}
