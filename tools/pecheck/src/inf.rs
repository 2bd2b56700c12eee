//! Stamping an INX template into an INF, as the WDK's `stampinf` does.
//!
//! What `stampinf -a amd64 -d <date> -v <version>` changes, and so what this does:
//!
//! - every `$ARCH$` becomes the architecture (`amd64`), which turns `NT$ARCH$` decorations into
//!   `NTamd64`;
//! - the `DriverVer` line of `[Version]` becomes `DriverVer = MM/DD/YYYY,a.b.c.d` (inserted
//!   right after the section header when the template has none).
//!
//! `$KMDFVERSION$` and `$UMDFVERSION$` are stamped only for WDF drivers; vioblk is a Storport
//! miniport, so a template that contains them is rejected rather than left half-stamped. The
//! output uses CRLF line ends, the form the WDK tools write.

use crate::Error;

/// The `stampinf -a` value for x86_64.
pub const ARCH_AMD64: &str = "amd64";

/// Returns the INF text for `inx` with `$ARCH$` and `DriverVer` stamped.
///
/// `date` is `MM/DD/YYYY` and `version` `a.b.c.d` (each part at most 65535), as `DriverVer`
/// requires; both are validated.
pub fn stamp(inx: &str, arch: &str, date: &str, version: &str) -> Result<String, Error> {
    validate_date(date)?;
    validate_version(version)?;
    for token in ["$KMDFVERSION$", "$UMDFVERSION$"] {
        if inx.contains(token) {
            return Err(Error::new(format!(
                "the INX uses {token}, which only WDF drivers stamp; vioblk is a Storport miniport"
            )));
        }
    }

    let driver_ver = format!("DriverVer = {date},{version}");
    let mut lines: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut version_header: Option<usize> = None;
    let mut stamped = false;
    for raw in inx.lines() {
        let line = raw.replace("$ARCH$", arch);
        let trimmed = line.trim();
        if let Some(name) = section_name(trimmed) {
            section = name.to_ascii_lowercase();
            if section == "version" {
                version_header = Some(lines.len());
            }
        } else if section == "version" && key_of(trimmed).eq_ignore_ascii_case("DriverVer") {
            if stamped {
                return Err(Error::new("[Version] has more than one DriverVer line"));
            }
            lines.push(driver_ver.clone());
            stamped = true;
            continue;
        }
        lines.push(line);
    }
    let Some(header) = version_header else {
        return Err(Error::new("the INX has no [Version] section"));
    };
    if !stamped {
        lines.insert(header + 1, driver_ver);
    }

    let mut inf = lines.join("\r\n");
    inf.push_str("\r\n");
    Ok(inf)
}

/// Turns a crate version (`0.1.0`, `1.2.3-rc.1`) into a `DriverVer` version (`0.1.0.0`).
///
/// The pre-release and build suffixes are dropped; missing parts are 0.
pub fn driver_version_from_crate(crate_version: &str) -> Result<String, Error> {
    let core = crate_version
        .split(['-', '+'])
        .next()
        .unwrap_or(crate_version);
    let mut parts: Vec<&str> = core.split('.').collect();
    if parts.len() > 4 {
        return Err(Error::new(format!(
            "crate version {crate_version} has more than four parts"
        )));
    }
    parts.resize(4, "0");
    let version = parts.join(".");
    validate_version(&version)?;
    Ok(version)
}

/// Formats a date given as days since 1970-01-01 as `MM/DD/YYYY`.
pub fn date_from_unix_days(days: i64) -> String {
    let (year, month, day) = civil_from_days(days);
    format!("{month:02}/{day:02}/{year:04}")
}

/// Today's `DriverVer` date: `SOURCE_DATE_EPOCH` when set (reproducible builds), else the clock.
pub fn today() -> Result<String, Error> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<i64>()
            .map_err(|_| Error::new(format!("SOURCE_DATE_EPOCH={value} is not an integer")))?,
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Error::new("the system clock is before 1970"))?;
            i64::try_from(now.as_secs()).map_err(|_| Error::new("the system clock is too far"))?
        }
    };
    Ok(date_from_unix_days(seconds.div_euclid(86_400)))
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
///
/// Counts in 400-year eras of 146097 days, each starting on 1 March so that the leap day ends
/// a year; then converts the March-based year back to January-based.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction: month in 1..=12, day in 1..=31.
    (year, month as u32, day as u32)
}

/// Checks `MM/DD/YYYY`.
fn validate_date(date: &str) -> Result<(), Error> {
    let bad = || Error::new(format!("DriverVer date `{date}` is not MM/DD/YYYY"));
    let parts: Vec<&str> = date.split('/').collect();
    let [month, day, year] = parts.as_slice() else {
        return Err(bad());
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(month, 2) || !digits(day, 2) || !digits(year, 4) {
        return Err(bad());
    }
    let (month, day): (u32, u32) = (
        month.parse().map_err(|_| bad())?,
        day.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    Ok(())
}

/// Checks `a.b.c.d` with each part a 16-bit number.
fn validate_version(version: &str) -> Result<(), Error> {
    let parts: Vec<&str> = version.split('.').collect();
    let valid = parts.len() == 4
        && parts.iter().all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && part.parse::<u16>().is_ok()
        });
    if valid {
        Ok(())
    } else {
        Err(Error::new(format!(
            "DriverVer version `{version}` is not a.b.c.d with parts up to 65535"
        )))
    }
}

/// The values an INF writes under the service's `Parameters\Device` key: (name, type, value)
/// from `HKR, "Parameters\Device", "Name", TYPE, value` lines outside comments.
pub fn device_parameters(inf: &str) -> Vec<(String, String, String)> {
    inf.lines()
        .map(|line| line.split(';').next().unwrap_or(line))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            match fields.as_slice() {
                ["HKR", key, name, ty, value]
                    if key
                        .trim_matches('"')
                        .eq_ignore_ascii_case("Parameters\\Device") =>
                {
                    Some((
                        name.trim_matches('"').to_owned(),
                        (*ty).to_owned(),
                        (*value).to_owned(),
                    ))
                }
                _ => None,
            }
        })
        .collect()
}

/// Problems with the INF's `Parameters\Device` values against the driver `image`: a name the
/// image does not hold as a NUL-terminated string (a tunable the driver never reads), a type
/// other than REG_DWORD, or a value that is not a number.
pub fn check_device_parameters(inf: &str, image: &[u8]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, ty, value) in device_parameters(inf) {
        let mut needle = name.clone().into_bytes();
        needle.push(0);
        if name.is_empty() || !image.windows(needle.len()).any(|w| w == needle.as_slice()) {
            problems.push(format!(
                "the INF sets Parameters\\Device\\{name}, which the driver image never reads"
            ));
        }
        if !ty.eq_ignore_ascii_case("%REG_DWORD%") && ty != "0x00010001" {
            problems.push(format!(
                "the INF sets Parameters\\Device\\{name} as {ty}; the driver reads REG_DWORD only"
            ));
        }
        if value.parse::<u32>().is_err() {
            problems.push(format!(
                "the INF sets Parameters\\Device\\{name} to `{value}`, not a 32-bit number"
            ));
        }
    }
    problems
}

/// `[Name]` -> `Name`, for a section header line (a trailing `; comment` allowed).
fn section_name(line: &str) -> Option<&str> {
    let line = line.split(';').next().unwrap_or(line).trim();
    line.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

/// The key of a `key = value` line (the whole line, trimmed, if it has no `=`).
fn key_of(line: &str) -> &str {
    line.split('=').next().unwrap_or(line).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_parameters_are_checked_against_the_image() {
        let inf = "; HKR, \"Parameters\\Device\", \"Commented\", %REG_DWORD%, 1\r\n\
                   HKR, \"Parameters\\Device\", \"QueueDepth\", %REG_DWORD%, 64 ; note\r\n\
                   HKR, \"Parameters\", \"BusType\", %REG_DWORD%, 1\r\n";
        assert_eq!(
            device_parameters(inf),
            [(
                "QueueDepth".to_owned(),
                "%REG_DWORD%".to_owned(),
                "64".to_owned()
            )]
        );
        let image = b"....QueueDepth\0....";
        assert!(check_device_parameters(inf, image).is_empty());
        // A name the driver does not read, a string type, a value that is not a number.
        let problems = check_device_parameters(
            "HKR, \"Parameters\\Device\", \"QueueDepht\", %REG_SZ%, deep\r\n",
            image,
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("never reads"));
        assert!(problems[1].contains("REG_DWORD only"));
        assert!(problems[2].contains("not a 32-bit number"));
        // A prefix of a longer string is not the name.
        assert_eq!(
            check_device_parameters(
                "HKR, \"Parameters\\Device\", \"Queue\", %REG_DWORD%, 1\r\n",
                image
            )
            .len(),
            1
        );
    }

    #[test]
    fn the_shipped_template_sets_only_dwords() {
        let inx = include_str!("../../../inf/vioblk.inx");
        let parameters = device_parameters(inx);
        assert_eq!(parameters.len(), 6, "{parameters:?}");
        let names: Vec<&str> = parameters.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut image = Vec::new();
        for name in &names {
            image.extend_from_slice(name.as_bytes());
            image.push(0);
        }
        assert!(check_device_parameters(inx, &image).is_empty());
    }

    const INX: &str = "; comment\n[Version]\nSignature=\"$Windows NT$\"\nClass=SCSIAdapter\n\
                       DriverVer = 01/01/1970,0.0.0.0 ; stamped\nCatalogFile=vioblk.cat\n\n\
                       [Manufacturer]\n%Mfg% = Models,NT$ARCH$.10.0...16299\n\n\
                       [Models.NT$ARCH$.10.0...16299]\n%Desc% = Install, PCI\\VEN_1AF4&DEV_1042\n";

    #[test]
    fn stamps_arch_and_driver_ver() {
        let inf = stamp(INX, ARCH_AMD64, "03/04/2025", "0.1.0.0").unwrap();
        assert!(
            inf.contains("\r\nDriverVer = 03/04/2025,0.1.0.0\r\n"),
            "{inf}"
        );
        assert!(!inf.contains("01/01/1970"));
        assert!(inf.contains("%Mfg% = Models,NTamd64.10.0...16299\r\n"));
        assert!(inf.contains("[Models.NTamd64.10.0...16299]"));
        // `$Windows NT$` is not a stampinf token and stays.
        assert!(inf.contains("Signature=\"$Windows NT$\""));
        assert!(!inf.contains("$ARCH$"));
        assert!(
            !inf.replace("\r\n", "").contains('\n'),
            "every line ends in CRLF"
        );
    }

    #[test]
    fn inserts_driver_ver_when_missing() {
        let inf = stamp(
            "[Version]\nSignature=\"$Windows NT$\"\n",
            "amd64",
            "12/31/2024",
            "1.2.3.4",
        )
        .unwrap();
        assert_eq!(
            inf,
            "[Version]\r\nDriverVer = 12/31/2024,1.2.3.4\r\nSignature=\"$Windows NT$\"\r\n"
        );
    }

    #[test]
    fn only_the_version_section_is_stamped() {
        let inx = "[Version]\nDriverVer=1\n[Other]\nDriverVer=keep\n";
        let inf = stamp(inx, "amd64", "01/02/2003", "1.0.0.0").unwrap();
        assert!(inf.contains("DriverVer=keep"));
        assert!(
            stamp(
                "[Version]\nDriverVer=1\ndriverver=2\n",
                "amd64",
                "01/02/2003",
                "1.0.0.0"
            )
            .is_err()
        );
    }

    #[test]
    fn rejects_wdf_tokens_bad_dates_and_versions() {
        assert!(
            stamp(
                "[Version]\nKmdfLibraryVersion=$KMDFVERSION$\n",
                "amd64",
                "01/02/2003",
                "1.0.0.0"
            )
            .is_err()
        );
        assert!(stamp("[Strings]\n", "amd64", "01/02/2003", "1.0.0.0").is_err());
        for date in [
            "1/2/2003",
            "13/01/2003",
            "01/32/2003",
            "2003-01-02",
            "01/02/03",
        ] {
            assert!(stamp(INX, "amd64", date, "1.0.0.0").is_err(), "{date}");
        }
        for version in ["1.0.0", "1.0.0.0.0", "1.0.0.65536", "1.a.0.0", "1..0.0"] {
            assert!(
                stamp(INX, "amd64", "01/02/2003", version).is_err(),
                "{version}"
            );
        }
    }

    #[test]
    fn driver_version_comes_from_the_crate_version() {
        assert_eq!(driver_version_from_crate("0.1.0").unwrap(), "0.1.0.0");
        assert_eq!(driver_version_from_crate("1.2.3-rc.1").unwrap(), "1.2.3.0");
        assert_eq!(driver_version_from_crate("2").unwrap(), "2.0.0.0");
        assert!(driver_version_from_crate("1.2.3.4.5").is_err());
        assert!(driver_version_from_crate("1.70000.0").is_err());
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(date_from_unix_days(0), "01/01/1970");
        assert_eq!(date_from_unix_days(-1), "12/31/1969");
        // 2000-02-29 (a leap day of a century divisible by 400) is day 11016.
        assert_eq!(date_from_unix_days(11_016), "02/29/2000");
        assert_eq!(date_from_unix_days(11_017), "03/01/2000");
        // 2024-12-31 is day 20088; 2100 is not a leap year: 2100-02-28 + 1 = 2100-03-01.
        assert_eq!(date_from_unix_days(20_088), "12/31/2024");
        assert_eq!(date_from_unix_days(47_540), "02/28/2100");
        assert_eq!(date_from_unix_days(47_541), "03/01/2100");
    }
}
