//! `vioblk-sim run --html FILE` (issue 18): the page is self-contained and a real browser draws
//! it without a console message.
//!
//! The browser is Debian's Chromium, headless (`apt-get install chromium`; `.ci/run` installs
//! it and sets `VIOBLK_CHROMIUM_REQUIRED=1`, so there a missing browser fails the test). Without
//! it, and without that variable, the browser half is skipped with a message; the static half
//! (no external reference, every chart present) always runs.
//!
//! Each browser check has its negative: a page that logs to the console is caught, and a blank
//! page's screenshot is refused.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vioblk-html-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs a job with `--html`; returns the page.
fn report(dir: &Path, args: &[&str]) -> String {
    let page = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_vioblk-sim"))
        .args(args)
        .args(["--no-progress", "--html"])
        .arg(&page)
        .output()
        .expect("the binary runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&page).expect("the page was written")
}

/// What the page must hold, and must not: every chart, and nothing fetched from anywhere.
fn check_static(page: &str) {
    assert!(
        page.starts_with("<!DOCTYPE html>"),
        "{}",
        &page[..80.min(page.len())]
    );
    for id in ["iops", "mibs", "latency", "queues"] {
        assert!(
            page.contains(&format!("<div class=\"chart\" id=\"{id}\"><svg")),
            "chart {id} missing"
        );
    }
    for section in ["Per thread", "Verification", "Storport rule checks"] {
        assert!(page.contains(section), "no {section} section");
    }
    let lower = page.to_ascii_lowercase();
    for external in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import",
    ] {
        assert!(
            !lower.contains(external),
            "the page refers to something: {external}"
        );
    }
    // The only URL is the SVG namespace, which is a name, not a fetch.
    let urls = lower.matches("http").count();
    let namespaces = lower
        .matches("xmlns=\"http://www.w3.org/2000/svg\"")
        .count()
        + lower
            .matches("xmlns:xlink=\"http://www.w3.org/1999/xlink\"")
            .count();
    assert_eq!(urls, namespaces, "a URL other than the SVG namespace");
}

/// The Chromium binary, if there is one.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VIOBLK_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn required() -> bool {
    std::env::var_os("VIOBLK_CHROMIUM_REQUIRED").is_some_and(|v| v == "1")
}

/// What the browser said: its console messages, and the screenshot.
struct Rendered {
    console: Vec<String>,
    png: Vec<u8>,
}

/// Loads `page` in headless Chromium with a new, empty profile; screenshots it.
fn render(browser: &Path, page: &Path, dir: &Path) -> Rendered {
    let profile = dir.join("profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let shot = dir.join("shot.png");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    // Console messages (console.*, uncaught errors) are logged as "...:CONSOLE:<line>] ...".
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    let png = std::fs::read(&shot).unwrap_or_default();
    Rendered { console, png }
}

/// Why a screenshot shows nothing worth having, if it does not: it must decode, and more than
/// 3% of its pixels must be drawn (not white), in at least 8 colours.
fn screenshot_problem(png_bytes: &[u8]) -> Option<String> {
    if png_bytes.is_empty() {
        return Some("no screenshot".to_owned());
    }
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = match decoder.read_info() {
        Ok(r) => r,
        Err(e) => return Some(format!("not a PNG: {e}")),
    };
    let Some(size) = reader.output_buffer_size() else {
        return Some("a PNG too large to decode".to_owned());
    };
    let mut buf = vec![0; size];
    let info = match reader.next_frame(&mut buf) {
        Ok(i) => i,
        Err(e) => return Some(format!("a PNG that does not decode: {e}")),
    };
    let channels = info.color_type.samples();
    if info.bit_depth != png::BitDepth::Eight || channels < 3 {
        return Some(format!(
            "an unexpected PNG: {:?} {:?}",
            info.color_type, info.bit_depth
        ));
    }
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let total = (info.width as usize * info.height as usize).max(1);
    let mut drawn = 0usize;
    let mut colours = std::collections::HashSet::new();
    for p in pixels {
        if p[..3] != [255, 255, 255] {
            drawn += 1;
        }
        if colours.len() < 64 {
            colours.insert([p[0] >> 4, p[1] >> 4, p[2] >> 4]);
        }
    }
    if drawn * 100 < total * 3 {
        return Some(format!(
            "a nearly blank screenshot: {drawn} of {total} pixels drawn"
        ));
    }
    if colours.len() < 8 {
        return Some(format!("a screenshot in {} colours", colours.len()));
    }
    None
}

fn browser_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Some(b) => Some(b),
        None if required() => panic!("VIOBLK_CHROMIUM_REQUIRED=1 but no chromium found"),
        None => {
            eprintln!(
                "{test}: skipped the browser check: chromium is not installed (apt-get install chromium)"
            );
            None
        }
    }
}

#[test]
fn the_report_renders_in_chromium_without_a_console_message() {
    let dir = temp("driver");
    // The real driver, four threads, ETW tracing on, a slow request injected on the way: every
    // chart has data and the fault is on the time line.
    let page = report(
        &dir,
        &[
            "-t4",
            "-o8",
            "-b4K",
            "-w30",
            "-c16M",
            "--ios",
            "6000",
            "--trace",
            "--fault",
            "slow,after=20,ms=50",
        ],
    );
    check_static(&page);
    assert!(page.contains("Injected faults"), "no faults section");
    assert!(page.contains("slow on queue"), "the fault is not named");
    assert!(page.contains("<h2>Event log</h2>"), "no event log section");
    assert!(
        page.contains(" ETW events published."),
        "the ETW events are not counted"
    );
    assert!(page.contains("<span class=\"verdict pass\">PASS</span>"));
    let Some(browser) = browser_or_skip("the_report_renders") else {
        return;
    };
    let r = render(&browser, &dir.join("report.html"), &dir);
    assert!(r.console.is_empty(), "console messages: {:?}", r.console);
    assert_eq!(screenshot_problem(&r.png), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_ram_target_report_is_self_contained_too() {
    let dir = temp("ram");
    let page = report(&dir, &["--target", "ram", "-c4M", "--ios", "2000", "-t2"]);
    check_static(&page);
    assert!(!page.contains("Injected faults"));
}

#[test]
fn the_browser_checks_can_fire() {
    let Some(browser) = browser_or_skip("the_browser_checks_can_fire") else {
        return;
    };
    let dir = temp("negative");
    // A console message is caught.
    let noisy = dir.join("noisy.html");
    std::fs::write(
        &noisy,
        "<!DOCTYPE html><html><body><p>hello</p><script>console.error('boom')</script></body></html>",
    )
    .expect("write");
    let r = render(&browser, &noisy, &dir);
    assert_eq!(r.console.len(), 1, "{:?}", r.console);
    assert!(r.console[0].contains("\"boom\""), "{:?}", r.console);
    // A blank page's screenshot is refused.
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").expect("write");
    let r = render(&browser, &blank, &dir);
    assert!(r.console.is_empty());
    let problem = screenshot_problem(&r.png).expect("a blank page is refused");
    assert!(
        problem.starts_with("a nearly blank screenshot"),
        "{problem}"
    );
    assert_eq!(
        screenshot_problem(b"not a png").map(|p| p.starts_with("not a PNG")),
        Some(true)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
