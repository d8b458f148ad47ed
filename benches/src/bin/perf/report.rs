//! The results: one [`Row`] per figure, printed as a table, written as
//! JSON and drawn as a chart of ratios.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `pinned` or `unpinned`.
    pub placement: String,
    /// What was measured (`bulk`, `rtt`, ...).
    pub scenario: &'static str,
    /// Which stack (`raw tcp`, `SecureStream aes-gcm`, `node`, ...).
    pub layer: String,
    /// The figure (p50 for latencies).
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// p99, for latencies.
    pub p99: Option<f64>,
    /// What `ratio` compares against.
    pub baseline: String,
    /// `value` over the baseline's value (for latencies and memory: the
    /// baseline over `value` is not used; it is always value / baseline).
    pub ratio: Option<f64>,
    /// The highest ratio the work allows, where a bound is known.
    pub limit: Option<f64>,
    /// The target for the ratio (or value), as text.
    pub target: &'static str,
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Short iterations (a check, not a measurement).
    pub quick: bool,
    /// The CPU of the pinned placement.
    pub cpu: usize,
    /// CPUs the process could use.
    pub cpus: usize,
    /// The figures.
    pub rows: Vec<Row>,
}

fn human(value: f64, unit: &str) -> String {
    match unit {
        "B/s" => format!("{:.2} GB/s", value / 1e9),
        "s" if value < 1e-3 => format!("{:.1} us", value * 1e6),
        "s" => format!("{:.2} ms", value * 1e3),
        "msg/s" | "hs/s" => format!("{:.0} {unit}", value),
        "B" => format!("{:.1} KiB", value / 1024.0),
        _ => format!("{value:.3} {unit}"),
    }
}

impl Report {
    /// The table, one block per placement.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut placements: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !placements.contains(&r.placement.as_str()) {
                placements.push(&r.placement);
            }
        }
        for p in placements {
            let _ = writeln!(out, "\n== {p}{}", if self.quick { " (quick)" } else { "" });
            let _ = writeln!(
                out,
                "{:<14} {:<36} {:>13} {:>11} {:>8} {:>7}  {:<24} target",
                "scenario", "layer", "value", "p99", "ratio", "limit", "vs"
            );
            for r in self.rows.iter().filter(|r| r.placement == p) {
                let _ = writeln!(
                    out,
                    "{:<14} {:<36} {:>13} {:>11} {:>8} {:>7}  {:<24} {}",
                    r.scenario,
                    r.layer,
                    human(r.value, r.unit),
                    r.p99.map(|v| human(v, r.unit)).unwrap_or_default(),
                    r.ratio.map(|v| format!("{v:.3}x")).unwrap_or_default(),
                    r.limit.map(|v| format!("{v:.2}x")).unwrap_or_default(),
                    r.baseline,
                    r.target
                );
            }
        }
        out
    }

    /// Writes `perf.json` and `perf.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("perf.json"), serde_json::to_string_pretty(self)?)?;
        self.chart(&dir.join("perf.svg"))
    }

    /// Horizontal bars: each figure's ratio, pinned and unpinned side by
    /// side (multi-core rows have labels of their own).
    fn chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.ratio.is_some()).collect();
        let mut labels: Vec<String> = Vec::new();
        for r in &rows {
            let l = format!("{} {}", r.scenario, r.layer);
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        let n = labels.len().max(1);
        let top = rows
            .iter()
            .filter_map(|r| r.ratio)
            .fold(1.0f64, f64::max)
            .min(50.0);
        let root = SVGBackend::new(path, (1000, 60 + 34 * n as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "knotwork / baseline (ratio; see perf.json for the baselines)",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(290)
            .build_cartesian_2d(0f64..top * 1.05, 0f64..n as f64)?;
        let names = labels.clone();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&move |y| {
                let i = (n as f64 - *y - 0.5).round();
                if i < 0.0 {
                    return String::new();
                }
                names.get(i as usize).cloned().unwrap_or_default()
            })
            .x_desc("ratio")
            .draw()?;
        for (series, colour) in [("pinned", BLUE), ("unpinned", RED), ("multicore", GREEN)] {
            let bars = rows
                .iter()
                .filter(|r| r.placement == series)
                .filter_map(|r| {
                    let i = labels
                        .iter()
                        .position(|l| *l == format!("{} {}", r.scenario, r.layer))?;
                    let y = (n - 1 - i) as f64;
                    let (y0, y1) = if series == "unpinned" {
                        (y + 0.1, y + 0.5)
                    } else {
                        (y + 0.5, y + 0.9)
                    };
                    let x = r.ratio?.min(top);
                    Some(Rectangle::new(
                        [(0.0, y0), (x, y1)],
                        colour.mix(0.6).filled(),
                    ))
                });
            chart
                .draw_series(bars)?
                .label(series)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    }
}
