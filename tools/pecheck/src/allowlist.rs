//! The import allowlist: every function the driver image may import, each with its reason.
//!
//! Format, one entry a line: `dll!function  # justification`. Blank lines and lines starting
//! with `#` are comments. An entry without a justification is an error: the file is where a
//! reviewer learns why a miniport reaches past storport.sys. DLL names compare
//! case-insensitively (the loader's rule); function names exactly.

use std::collections::BTreeMap;

use crate::Error;

/// A parsed allowlist: `(dll in lower case, function)` -> justification.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    entries: BTreeMap<(String, String), String>,
}

impl Allowlist {
    /// Parses the allowlist format; `source` names the file in error messages.
    pub fn parse(text: &str, source: &str) -> Result<Self, Error> {
        let mut entries = BTreeMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (entry, justification) = match line.split_once('#') {
                Some((entry, justification)) => (entry.trim(), justification.trim()),
                None => (line, ""),
            };
            if justification.is_empty() {
                return Err(Error::new(format!(
                    "{source}:{line_number}: `{entry}` has no `# justification`"
                )));
            }
            let Some((dll, function)) = entry.split_once('!') else {
                return Err(Error::new(format!(
                    "{source}:{line_number}: `{entry}` is not `dll!function`"
                )));
            };
            let (dll, function) = (dll.trim(), function.trim());
            if dll.is_empty() || function.is_empty() || function.contains(char::is_whitespace) {
                return Err(Error::new(format!(
                    "{source}:{line_number}: `{entry}` is not `dll!function`"
                )));
            }
            let key = (dll.to_ascii_lowercase(), function.to_owned());
            if entries.insert(key, justification.to_owned()).is_some() {
                return Err(Error::new(format!(
                    "{source}:{line_number}: `{entry}` is listed twice"
                )));
            }
        }
        Ok(Self { entries })
    }

    /// Reads and parses an allowlist file.
    pub fn load(path: &std::path::Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| Error::new(format!("cannot read {}: {error}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Returns whether `dll!function` may be imported.
    pub fn allows(&self, dll: &str, function: &str) -> bool {
        self.entries
            .contains_key(&(dll.to_ascii_lowercase(), function.to_owned()))
    }

    /// Returns the number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the allowlist has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_comments_and_blank_lines() {
        let list = Allowlist::parse(
            "# header\n\nstorport.sys!StorPortInitialize  # DriverEntry registers the miniport\n\
             NTOSKRNL.EXE!memcpy # rustc emits calls to memcpy\n",
            "test",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.allows("storport.sys", "StorPortInitialize"));
        assert!(list.allows("ntoskrnl.exe", "memcpy"));
        assert!(list.allows("NtosKrnl.exe", "memcpy"));
        assert!(!list.allows("ntoskrnl.exe", "MEMCPY"));
        assert!(!list.allows("hal.dll", "memcpy"));
    }

    #[test]
    fn rejects_entries_without_justification_or_shape() {
        let error = Allowlist::parse("storport.sys!StorPortInitialize\n", "a.txt").unwrap_err();
        assert!(error.to_string().contains("a.txt:1"), "{error}");
        assert!(Allowlist::parse("StorPortInitialize # why\n", "a").is_err());
        assert!(Allowlist::parse("storport.sys! # why\n", "a").is_err());
        assert!(Allowlist::parse("x.sys!a # one\nX.SYS!a # two\n", "a").is_err());
    }
}
