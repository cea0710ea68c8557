//! Results: rows, tables with ratios, CSV, JSON and SVG line charts (no dependencies).

use crate::workloads::median;
use std::{fmt::Write as _, path::Path};

/// One measured value.
#[derive(Clone, Debug)]
pub struct Row {
    /// Section: `faults`, `writer`, `ebizzy`, `memory`.
    pub section: &'static str,
    /// Variant within the section (e.g. `private`, `shared+writer`).
    pub variant: String,
    /// Thread count (0 where not applicable).
    pub threads: usize,
    /// System: engine name or kernel reference.
    pub system: &'static str,
    /// Metric name.
    pub metric: &'static str,
    /// Value: the median of `samples`.
    pub value: f64,
    /// Every measurement behind `value`, in order.
    pub samples: Vec<f64>,
}

/// All rows of a run.
#[derive(Default)]
pub struct Report {
    /// The rows, in measurement order.
    pub rows: Vec<Row>,
}

impl Report {
    /// Records a value.
    pub fn add(
        &mut self,
        section: &'static str,
        variant: &str,
        threads: usize,
        system: &'static str,
        metric: &'static str,
        value: f64,
    ) {
        self.add_samples(section, variant, threads, system, metric, vec![value]);
    }

    /// Records the repeated measurements of a value (reported as their median).
    pub fn add_samples(
        &mut self,
        section: &'static str,
        variant: &str,
        threads: usize,
        system: &'static str,
        metric: &'static str,
        samples: Vec<f64>,
    ) {
        self.rows.push(Row {
            section,
            variant: variant.to_string(),
            threads,
            system,
            metric,
            value: median(samples.clone()),
            samples,
        });
    }

    /// The value of a metric for another system in the same cell, if measured.
    pub fn peer(&self, r: &Row, system: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|o| {
                o.section == r.section
                    && o.variant == r.variant
                    && o.threads == r.threads
                    && o.metric == r.metric
                    && o.system == system
            })
            .map(|o| o.value)
    }

    /// Prints one section as a table: value, ratio to `rwsem`, ratio to the `none`
    /// floor (or the named reference where there is no floor).
    pub fn print_section(&self, section: &str, metric: &str, unit: &str) {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.section == section && r.metric == metric)
            .collect();
        if rows.is_empty() {
            return;
        }
        println!();
        println!("## {section}: {metric} ({unit})");
        println!(
            "{:<22} {:>7} {:<12} {:>14} {:>9} {:>9} {:>9} {:>12} {:>12}",
            "variant", "threads", "system", metric, "/rwsem", "/none", "/kernel", "min", "max"
        );
        for r in rows {
            let ratio = |sys: &str| {
                self.peer(r, sys)
                    .filter(|v| *v != 0.0)
                    .map_or("-".to_string(), |v| format!("{:.2}", r.value / v))
            };
            let kernel = if self.peer(r, "memfd").is_some() {
                ratio("memfd")
            } else {
                ratio("mmap")
            };
            let (min, max) = r
                .samples
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let spread = |v: f64| {
                if r.samples.len() > 1 {
                    fmt_value(v)
                } else {
                    "-".into()
                }
            };
            println!(
                "{:<22} {:>7} {:<12} {:>14} {:>9} {:>9} {:>9} {:>12} {:>12}",
                r.variant,
                r.threads,
                r.system,
                fmt_value(r.value),
                ratio("rwsem"),
                ratio("none"),
                kernel,
                spread(min),
                spread(max)
            );
        }
    }

    /// Writes `results.csv` and `results.json` into `dir`.
    pub fn write_files(&self, dir: &Path, meta: &[(String, String)]) -> std::io::Result<()> {
        let mut csv = String::from("section,variant,threads,system,metric,value\n");
        let mut json = String::from("{\n  \"meta\": {");
        for (i, (k, v)) in meta.iter().enumerate() {
            let _ = write!(
                json,
                "{}\"{k}\": \"{}\"",
                if i == 0 { "" } else { ", " },
                v.replace('\\', "/").replace('"', "'")
            );
        }
        json.push_str("},\n  \"rows\": [\n");
        for (i, r) in self.rows.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{}",
                r.section, r.variant, r.threads, r.system, r.metric, r.value
            );
            let _ = writeln!(
                json,
                "    {{\"section\": \"{}\", \"variant\": \"{}\", \"threads\": {}, \"system\": \"{}\", \"metric\": \"{}\", \"value\": {}, \"samples\": [{}]}}{}",
                r.section,
                r.variant,
                r.threads,
                r.system,
                r.metric,
                json_num(r.value),
                r.samples
                    .iter()
                    .map(|v| json_num(*v))
                    .collect::<Vec<_>>()
                    .join(", "),
                if i + 1 == self.rows.len() { "" } else { "," }
            );
        }
        json.push_str("  ]\n}\n");
        std::fs::write(dir.join("results.csv"), csv)?;
        std::fs::write(dir.join("results.json"), json)
    }

    /// Writes one SVG line chart per fault variant: faults/s vs threads per system.
    pub fn write_svgs(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut variants: Vec<String> = Vec::new();
        for r in self.rows.iter().filter(|r| r.section == "faults") {
            if !variants.contains(&r.variant) {
                variants.push(r.variant.clone());
            }
        }
        let mut written = Vec::new();
        for v in variants {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.section == "faults" && r.variant == v && r.metric == "faults/s")
                .collect();
            let name = format!("faults-{}.svg", v.replace('+', "-"));
            std::fs::write(
                dir.join(&name),
                line_chart(&format!("fault throughput: {v}"), &rows),
            )?;
            written.push(name);
        }
        // Bar charts of the sections that compare systems at one point.
        for (section, metric, title) in [(
            "inversion",
            "max_us",
            "priority inversion: worst SCHED_FIFO fault (µs)",
        )] {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| r.section == section && r.metric == metric)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let name = format!("{section}-{}.svg", metric.replace('/', "-"));
            std::fs::write(dir.join(&name), bar_chart(title, &rows))?;
            written.push(name);
        }
        // Two writers: one bar chart per scene (variant, faulters).
        let mut scenes: Vec<(String, usize)> = Vec::new();
        for r in self.rows.iter().filter(|r| r.section == "writers") {
            if !scenes.contains(&(r.variant.clone(), r.threads)) {
                scenes.push((r.variant.clone(), r.threads));
            }
        }
        for (variant, faulters) in scenes {
            let rows: Vec<&Row> = self
                .rows
                .iter()
                .filter(|r| {
                    r.section == "writers"
                        && r.metric == "cycles/s"
                        && r.variant == variant
                        && r.threads == faulters
                })
                .collect();
            let name = format!("writers-{variant}-{faulters}-faulters.svg");
            let title =
                format!("two writers, {variant} ranges, {faulters} slow faulters: cycles/s");
            std::fs::write(dir.join(&name), bar_chart(&title, &rows))?;
            written.push(name);
        }
        Ok(written)
    }
}

/// A JSON number (JSON has no NaN or infinities: those become `null`).
fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

/// 1500 -> "1.5k", 2000000 -> "2M".
fn si(v: f64) -> String {
    let (d, suffix) = if v >= 1e6 {
        (1e6, "M")
    } else if v >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / d;
    if x.fract().abs() < 1e-9 {
        format!("{x:.0}{suffix}")
    } else {
        format!("{x:.1}{suffix}")
    }
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#7f7f7f", "#9467bd", "#ff7f0e",
];

/// Horizontal bars, one per row (system), labelled with their values and, as whiskers,
/// the range of the samples.
fn bar_chart(title: &str, rows: &[&Row]) -> String {
    let (w, ml, mr, mt, bar, gap) = (640.0, 110.0, 90.0, 40.0, 22.0, 10.0);
    let h = mt + (bar + gap) * rows.len() as f64 + 30.0;
    let top = rows
        .iter()
        .flat_map(|r| r.samples.iter().copied().chain([r.value]))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-9);
    let x = |v: f64| ml + (w - ml - mr) * (v / top).clamp(0.0, 1.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = mt + (bar + gap) * i as f64;
        let color = COLORS[i % COLORS.len()];
        let (lo, hi) = r
            .samples
            .iter()
            .fold((r.value, r.value), |(a, b), &v| (a.min(v), b.max(v)));
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{ml}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{color}\"/>\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            ml - 6.0,
            y + bar / 2.0 + 4.0,
            r.system,
            (x(r.value) - ml).max(1.0),
            x(lo),
            x(hi),
            y + bar / 2.0,
            y + bar / 2.0,
            x(hi) + 6.0,
            y + bar / 2.0 + 4.0,
            fmt_value(r.value)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn line_chart(title: &str, rows: &[&Row]) -> String {
    let (w, h, ml, mr, mt, mb) = (640.0, 400.0, 80.0, 120.0, 40.0, 50.0);
    let mut threads: Vec<usize> = rows.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    let mut systems: Vec<&str> = Vec::new();
    for r in rows {
        if !systems.contains(&r.system) {
            systems.push(r.system);
        }
    }
    // A "nice" tick step (1, 2 or 5 times a power of ten) and five or so ticks.
    let top = rows.iter().map(|r| r.value).fold(0.0, f64::max).max(1.0);
    let raw = top / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let ticks = (top / step).ceil() as usize;
    let ymax = step * ticks as f64;
    let x = |t: usize| {
        let i = threads.iter().position(|&u| u == t).unwrap_or(0) as f64;
        ml + if threads.len() > 1 {
            i * (w - ml - mr) / (threads.len() - 1) as f64
        } else {
            (w - ml - mr) / 2.0
        }
    };
    let y = |v: f64| mt + (h - mt - mb) * (1.0 - v / ymax);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n",
        w / 2.0
    );
    // Axes, grid and labels.
    for k in 0..=ticks {
        let v = step * k as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{ml}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - mr,
            ml - 6.0,
            y(v) + 4.0,
            si(v),
            y = y(v)
        );
    }
    for &t in &threads {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            h - mb + 18.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">threads</text>",
        (ml + w - mr) / 2.0,
        h - 8.0
    );
    let _ = writeln!(s, "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">faults/s</text>", h / 2.0, h / 2.0);
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" x2=\"{ml}\" y1=\"{mt}\" y2=\"{}\" stroke=\"black\"/>",
        h - mb
    );
    let _ = writeln!(
        s,
        "<line x1=\"{ml}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        w - mr,
        h - mb,
        h - mb
    );
    for (i, sys) in systems.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts: Vec<(usize, f64)> = rows
            .iter()
            .filter(|r| r.system == *sys)
            .map(|r| (r.threads, r.value))
            .collect();
        pts.sort_by_key(|p| p.0);
        let path: Vec<String> = pts
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(t, v) in &pts {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(t),
                y(v)
            );
        }
        let ly = mt + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"3\"/><text x=\"{}\" y=\"{}\">{sys}</text>",
            w - mr + 10.0,
            w - mr + 30.0,
            w - mr + 36.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
