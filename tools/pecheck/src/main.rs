//! `pecheck`: checks a vioblk driver image, or packages it with its INF and checks the result.
//!
//! ```text
//! pecheck check <image> [--allowlist <file>]
//! pecheck package --image <dll> --inx <inx> --out <dir>
//!                 [--version a.b.c.d] [--date MM/DD/YYYY] [--allowlist <file>]
//! ```
//!
//! Exit status: 0 when the image passes, 1 when it breaks a rule (one line per problem on
//! stderr), 2 on a usage or I/O error.

use std::path::PathBuf;
use std::process::ExitCode;

use pecheck::{Allowlist, PackageOptions, Report};

const USAGE: &str = "usage:
  pecheck check <image> [--allowlist <file>]
  pecheck package --image <dll> --inx <inx> --out <dir> [--version a.b.c.d] [--date MM/DD/YYYY] [--allowlist <file>]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("pecheck: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs a command; `Ok(passed)` or a usage/I/O error.
fn run(args: &[String]) -> Result<bool, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err(USAGE.into());
    };
    let mut positional = Vec::new();
    let mut options = std::collections::BTreeMap::new();
    let mut iter = rest.iter();
    while let Some(arg) = iter.next() {
        if let Some(name) = arg.strip_prefix("--") {
            if name == "help" {
                println!("{USAGE}");
                return Ok(true);
            }
            let value = iter
                .next()
                .ok_or_else(|| format!("--{name} needs a value\n{USAGE}"))?;
            options.insert(name.to_owned(), value.clone());
        } else {
            positional.push(arg.clone());
        }
    }
    let allowlist_path = options
        .remove("allowlist")
        .map_or_else(pecheck::default_allowlist_path, PathBuf::from);

    match command.as_str() {
        "check" => {
            let [image] = positional.as_slice() else {
                return Err(format!("check takes one image\n{USAGE}"));
            };
            reject_unknown(&options)?;
            let allowlist = Allowlist::load(&allowlist_path).map_err(|e| e.to_string())?;
            let bytes =
                std::fs::read(image).map_err(|error| format!("cannot read {image}: {error}"))?;
            let report = pecheck::check(&bytes, &allowlist);
            Ok(print_report(image, &report))
        }
        "package" => {
            if !positional.is_empty() {
                return Err(format!("package takes no positional arguments\n{USAGE}"));
            }
            let mut required = |name: &str| {
                options
                    .remove(name)
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("package needs --{name}\n{USAGE}"))
            };
            let image = required("image")?;
            let inx = required("inx")?;
            let out = required("out")?;
            let package_options = PackageOptions {
                image,
                inx,
                out,
                version: options.remove("version"),
                date: options.remove("date"),
                allowlist: allowlist_path,
            };
            reject_unknown(&options)?;
            let package = pecheck::package(&package_options).map_err(|e| e.to_string())?;
            println!("wrote {}", package.sys.display());
            println!(
                "wrote {} (DriverVer = {})",
                package.inf.display(),
                package.driver_ver
            );
            Ok(print_report(
                &package.sys.display().to_string(),
                &package.report,
            ))
        }
        "help" | "-h" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command {other}\n{USAGE}")),
    }
}

fn reject_unknown(options: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    match options.keys().next() {
        Some(name) => Err(format!("unknown option --{name}\n{USAGE}")),
        None => Ok(()),
    }
}

/// Prints the summary to stdout and the problems to stderr; returns whether the image passed.
fn print_report(image: &str, report: &Report) -> bool {
    println!(
        "{image}: {} bytes, entry {:#x}, checksum {:#010x}",
        report.size, report.entry, report.checksum
    );
    let sections: Vec<String> = report
        .sections
        .iter()
        .map(|s| format!("{} {} {:#x}", s.name, s.protection(), s.virtual_size))
        .collect();
    println!("  sections: {}", sections.join(", "));
    println!("  exports:  {}", report.exports.join(", "));
    let imports: Vec<String> = report
        .imports
        .iter()
        .map(|i| format!("{}!{}", i.dll, i.function))
        .collect();
    println!("  imports ({}): {}", imports.len(), imports.join(", "));
    println!(
        "  register accesses ({}): {}",
        report.register_accesses.total(),
        report.register_accesses.summary()
    );
    for problem in &report.problems {
        eprintln!("FAIL {image}: {problem}");
    }
    if report.passed() {
        println!("  OK: a well-formed kernel driver image");
    }
    report.passed()
}
