//! `vioblk-sim run --html FILE`: the report as one self-contained HTML page.
//!
//! No script, no network: the charts are inline SVG drawn with the plotters crate's SVG back end
//! (text as SVG `<text>`, so no font files), the style is one `<style>` block. The page shows
//! the verdict, IOPS and MiB/s over the run with the injected faults on the same time axis, the
//! latency percentile curve (from the hdrhistogram), the load of each request queue, the
//! per-thread table, and the verification and Storport rule-check results.

use std::fmt::Write as _;

use plotters::prelude::*;

use crate::image_report::ImageReport;
use crate::stats::Report;
use crate::workload::{Pattern, Stop, TIMELINE_INTERVAL};

/// Escapes `text` for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

const WIDTH: u32 = 900;
const FAULT: RGBColor = RGBColor(0xC6, 0x28, 0x28);
const READ: RGBColor = RGBColor(0x1E, 0x6F, 0xB8);
const WRITE: RGBColor = RGBColor(0xE0, 0x8A, 0x1E);
const LINE: RGBColor = RGBColor(0x2E, 0x7D, 0x32);

fn plot_error<E: std::fmt::Display>(e: E) -> String {
    format!("could not draw a chart: {e}")
}

/// One time series over the run, with the faults as red vertical lines.
fn timeline_chart(
    title: &str,
    unit: &str,
    points: &[(f64, f64)],
    faults: &[(f64, String)],
    end_s: f64,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let top = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0) * 1.15;
        let end = end_s.max(TIMELINE_INTERVAL.as_secs_f64());
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end, 0f64..top)
            .map_err(plot_error)?;
        let decimals = usize::from(top < 20.0);
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc(unit)
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(AreaSeries::new(points.iter().copied(), 0.0, LINE.mix(0.15)))
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                LINE.stroke_width(2),
            ))
            .map_err(plot_error)?;
        // Labels step down so that faults close together stay readable.
        for (i, (at, what)) in faults.iter().enumerate() {
            let y = top * (0.95 - 0.08 * (i % 5) as f64);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*at, 0.0), (*at, top)],
                    FAULT.stroke_width(2),
                )))
                .map_err(plot_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    what.clone(),
                    (*at, y),
                    ("sans-serif", 12).into_font().color(&FAULT),
                )))
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Latency against percentile, the percentile axis in "nines" (90%, 99%, 99.9%, ...).
fn latency_chart(curve: &[(f64, f64)]) -> Result<String, String> {
    // -log10(1 - q), capped where the histogram's resolution ends.
    let nines = |q: f64| (-(1.0 - q).max(1e-6).log10()).min(6.0);
    let points: Vec<(f64, f64)> = curve
        .iter()
        .map(|&(q, us)| (nines(q), us.max(0.1)))
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let lo = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).min(1e9) * 0.8;
    let hi = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.25;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile (every request)", ("sans-serif", 18))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x, (lo.max(0.05)..hi).log_scale())
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("microseconds (log)")
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.2}")
                }
            })
            .x_label_formatter(&|&x| {
                // 1 nine: 90%, 2: 99%, 3: 99.9%, ...
                let p = 100.0 * (1.0 - 10f64.powf(-x));
                let decimals = (x.ceil() as usize).saturating_sub(2);
                format!("{p:.decimals$}%")
            })
            .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
            .draw()
            .map_err(plot_error)?;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                READ.stroke_width(2),
            ))
            .map_err(plot_error)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, READ.filled())))
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

/// Reads and writes each request queue served, as stacked bars.
fn queue_chart(queues: &[crate::stats::QueueStats]) -> Result<String, String> {
    let n = queues.len().max(1);
    let top = queues
        .iter()
        .map(|q| q.reads + q.writes + q.flushes + q.discards + q.other)
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.15;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Requests per queue", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc("queue")
            .y_desc("requests")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_labels(n.min(16))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .disable_x_mesh()
            .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
            .draw()
            .map_err(plot_error)?;
        for (i, q) in queues.iter().enumerate() {
            let x = i as f64;
            let reads = q.reads as f64;
            let rest = (q.writes + q.flushes + q.discards + q.other) as f64;
            chart
                .draw_series([
                    Rectangle::new([(x - 0.35, 0.0), (x + 0.35, reads)], READ.filled()),
                    Rectangle::new(
                        [(x - 0.35, reads), (x + 0.35, reads + rest)],
                        WRITE.filled(),
                    ),
                ])
                .map_err(plot_error)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px auto; max-width: 940px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.verdict { display: inline-block; padding: 4px 14px; border-radius: 4px; color: white;
  font-weight: bold; font-size: 18px; }
.pass { background: #2e7d32; } .fail { background: #c62828; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.kv td:first-child { text-align: left; color: #555; }
.kv td { text-align: left; }
.chart svg { display: block; margin: 6px 0; }
.ok { color: #2e7d32; font-weight: bold; } .bad { color: #c62828; font-weight: bold; }
pre { background: #f8f8f8; padding: 8px; font-size: 12px; white-space: pre-wrap; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px;
  vertical-align: middle; }
";

/// The report as a self-contained HTML page (`image`: the driver image run, if any).
///
/// # Errors
/// A chart that could not be drawn (a sentence).
pub fn to_html(report: &Report, image: Option<&ImageReport>) -> Result<String, String> {
    let r = &report.result;
    let job = &report.job;
    let disk = &report.disk;
    let passed = report.passed();
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(
        h,
        "<title>vioblk-sim report: {}</title>",
        if passed { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        h,
        "<h1>vioblk-sim report</h1>\n<p><span class=\"verdict {}\">{}</span> &nbsp; {} I/Os in \
         {:.2} s: <b>{:.0} IOPS</b>, <b>{:.2} MiB/s</b>, {} errors, {} mismatches, {} Storport \
         violations</p>",
        if passed { "pass" } else { "fail" },
        if passed { "PASS" } else { "FAIL" },
        r.counts.ios(),
        r.elapsed.as_secs_f64(),
        r.iops(),
        r.mib_per_s(),
        r.counts.errors,
        r.verification.mismatches,
        report.violations.len()
    );

    // The setup.
    let stop = match job.stop {
        Stop::Duration(d) => format!("{:.2} s", d.as_secs_f64()),
        Stop::Ios(n) => format!("{n} I/Os"),
    };
    let pattern = match job.pattern {
        Pattern::Random => "random",
        Pattern::Sequential => "sequential",
    };
    let mut rows = vec![
        (
            "job",
            format!(
                "{} threads x {} outstanding, {} bytes {pattern}, {}% writes, {}% unmaps{}{}, \
                 {stop}, seed {}",
                job.threads,
                job.outstanding,
                job.io_size,
                job.mix.write_percent,
                job.mix.unmap_percent,
                if job.fua { ", FUA" } else { "" },
                if job.flush_every > 0 {
                    format!(", a flush every {} writes", job.flush_every)
                } else {
                    String::new()
                },
                job.seed
            ),
        ),
        (
            "disk",
            format!(
                "{} {} {}, {} x {}-byte blocks, write cache {}",
                disk.vendor,
                disk.product,
                disk.revision,
                disk.capacity_blocks,
                disk.logical_block_size,
                if disk.write_cache_enabled {
                    "on"
                } else {
                    "off"
                }
            ),
        ),
        (
            "setup",
            format!(
                "target {}, {} queue(s), interrupts {}, backing {}",
                report.setup.target,
                report.setup.queues,
                report.setup.interrupts,
                report.setup.backing
            ),
        ),
    ];
    if let Some(i) = image {
        rows.push(("driver image", i.headline().trim().to_owned()));
    }
    h.push_str("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(h, "<tr><td>{k}</td><td>{}</td></tr>", escape(&v));
    }
    h.push_str("</table>\n");

    // Throughput over time, faults on the same axis.
    let dt = TIMELINE_INTERVAL.as_secs_f64();
    let end_s = r.elapsed.as_secs_f64().max(r.timeline.len() as f64 * dt);
    let iops: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .enumerate()
        .map(|(i, b)| ((i as f64 + 0.5) * dt, b.ios as f64 / dt))
        .collect();
    let mibs: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                (i as f64 + 0.5) * dt,
                b.bytes as f64 / dt / (1024.0 * 1024.0),
            )
        })
        .collect();
    let faults: Vec<(f64, String)> = report
        .faults
        .as_ref()
        .map(|f| {
            f.injected_at_ms
                .iter()
                .zip(&f.injected)
                .map(|(ms, what)| (*ms as f64 / 1000.0, what.clone()))
                .collect()
        })
        .unwrap_or_default();
    h.push_str("<h2>Throughput over the run</h2>\n");
    let _ = writeln!(
        h,
        "<p>Successful I/Os completed per {:.0} ms, as a rate.{}</p>",
        dt * 1000.0,
        if faults.is_empty() {
            String::new()
        } else {
            " Red lines: injected faults.".to_owned()
        }
    );
    let _ = writeln!(
        h,
        "<div class=\"chart\" id=\"iops\">{}</div>",
        timeline_chart("IOPS", "I/Os per second", &iops, &faults, end_s)?
    );
    let _ = writeln!(
        h,
        "<div class=\"chart\" id=\"mibs\">{}</div>",
        timeline_chart("MiB/s", "MiB per second", &mibs, &faults, end_s)?
    );

    // Latency.
    h.push_str("<h2>Latency</h2>\n");
    if r.latency_curve.is_empty() {
        h.push_str("<p>No request completed.</p>\n");
    } else {
        let _ = writeln!(
            h,
            "<div class=\"chart\" id=\"latency\">{}</div>",
            latency_chart(&r.latency_curve)?
        );
    }
    h.push_str(
        "<table><tr><th class=\"l\">us</th><th>count</th><th>min</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>\n",
    );
    for (name, l) in [
        ("read", &r.latencies.read),
        ("write", &r.latencies.write),
        ("all", &r.latencies.all),
    ] {
        if l.count == 0 {
            continue;
        }
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{name}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            l.count, l.min_us, l.p50_us, l.p90_us, l.p99_us, l.p99_9_us, l.max_us, l.mean_us
        );
    }
    h.push_str("</table>\n");

    // Queues and threads.
    if let Some(queues) = &report.queues {
        h.push_str("<h2>Per-queue load</h2>\n");
        let _ = writeln!(
            h,
            "<p class=\"legend\"><span style=\"background:#1e6fb8\"></span>reads\
             <span style=\"background:#e08a1e\"></span>writes, flushes, discards, other</p>\n\
             <div class=\"chart\" id=\"queues\">{}</div>",
            queue_chart(queues)?
        );
        h.push_str(
            "<table><tr><th>queue</th><th>reads</th><th>writes</th><th>flushes</th>\
             <th>discards</th><th>other</th><th>errors</th><th>notifies</th><th>interrupts</th>\
             </tr>\n",
        );
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        for q in queues {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                q.queue,
                q.reads,
                q.writes,
                q.flushes,
                q.discards,
                q.other,
                q.errors,
                opt(q.notifications),
                opt(q.interrupts)
            );
        }
        h.push_str("</table>\n");
    }
    if !r.threads.is_empty() {
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        h.push_str(
            "<h2>Per thread</h2>\n<table><tr><th>thread</th><th>bytes</th><th>I/Os</th>\
             <th>MiB/s</th><th>I/O per s</th><th>AvgLat (ms)</th><th>LatStdDev (ms)</th></tr>\n",
        );
        for t in &r.threads {
            let bytes = t.counts.bytes_read + t.counts.bytes_written;
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{bytes}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td>\
                 <td>{:.3}</td><td>{:.3}</td></tr>",
                t.thread,
                t.counts.ios(),
                bytes as f64 / secs / (1024.0 * 1024.0),
                t.counts.ios() as f64 / secs,
                t.mean_us / 1000.0,
                t.stdev_us / 1000.0
            );
        }
        h.push_str("</table>\n");
    }

    // Faults.
    if let Some(f) = &report.faults {
        h.push_str(
            "<h2>Injected faults</h2>\n<table><tr><th>ms</th><th class=\"l\">fault</th></tr>\n",
        );
        for (ms, what) in f.injected_at_ms.iter().zip(&f.injected) {
            let _ = writeln!(
                h,
                "<tr><td>{ms}</td><td class=\"l\">{}</td></tr>",
                escape(what)
            );
        }
        h.push_str("</table>\n");
        let _ = writeln!(h, "<pre>{}</pre>", escape(f.to_text().trim()));
        let _ = writeln!(
            h,
            "<p>Recovery: <span class=\"{}\">{}</span></p>",
            if f.recovered() { "ok" } else { "bad" },
            if f.recovered() {
                "the disk serves I/O again (or, removed, fails it with NO_DEVICE)"
            } else {
                "the disk did not recover"
            }
        );
    }

    // What the driver told the system.
    if !report.event_log.is_empty() || report.etw_events > 0 {
        h.push_str("<h2>Event log</h2>\n");
        if !report.event_log.is_empty() {
            h.push_str(
                "<table><tr><th class=\"l\">code</th><th>id</th><th class=\"l\">address</th>\
                 <th class=\"l\">event</th></tr>\n",
            );
            for e in &report.event_log {
                let _ = writeln!(
                    h,
                    "<tr><td class=\"l\">{:#010x}</td><td>{}</td><td class=\"l\">{}:{}:{}</td>\
                     <td class=\"l\">{}</td></tr>",
                    e.code,
                    e.unique_id,
                    e.address.0,
                    e.address.1,
                    e.address.2,
                    escape(crate::report::event_name(e.code))
                );
            }
            h.push_str("</table>\n");
        }
        if report.etw_events > 0 {
            let _ = writeln!(h, "<p>{} ETW events published.</p>", report.etw_events);
        }
    }

    // Verification and rule checks.
    h.push_str("<h2>Verification</h2>\n");
    let v = &r.verification;
    if v.enabled {
        let _ = writeln!(
            h,
            "<p><span class=\"{}\">{} mismatch(es)</span> in {} blocks verified{}.</p>",
            if v.mismatches == 0 { "ok" } else { "bad" },
            v.mismatches,
            v.blocks_verified,
            if v.blocks_unchecked > 0 {
                format!(
                    " ({} blocks read with unknown contents)",
                    v.blocks_unchecked
                )
            } else {
                String::new()
            }
        );
        if !v.samples.is_empty() {
            h.push_str("<ul>\n");
            for m in &v.samples {
                let _ = writeln!(h, "<li>{}</li>", escape(&m.to_string()));
            }
            h.push_str("</ul>\n");
        }
    } else {
        h.push_str("<p>Off (--no-verify).</p>\n");
    }
    if r.counts.errors > 0 {
        let _ = writeln!(
            h,
            "<p class=\"bad\">{} failed request(s):</p>\n<ul>",
            r.counts.errors
        );
        for (how, n) in &r.failures {
            let _ = writeln!(h, "<li>{n} x {}</li>", escape(how));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("<h2>Storport rule checks</h2>\n");
    if report.violations.is_empty() {
        h.push_str("<p><span class=\"ok\">No violations.</span></p>\n");
    } else {
        let _ = writeln!(
            h,
            "<p><span class=\"bad\">{} violation(s):</span></p>",
            report.violations.len()
        );
        for v in &report.violations {
            let _ = writeln!(h, "<pre>{}</pre>", escape(v));
        }
    }
    h.push_str("</body>\n</html>\n");
    Ok(h)
}
