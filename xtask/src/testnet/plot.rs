//! The report's plots (SVG): lookup hops beside the simulator's, latency
//! CDFs, gossip delivery over time, memory and CPU over time.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::{Figures, percentile};
use crate::error::{Error, Result};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type PlotResult = std::result::Result<(), Box<dyn std::error::Error>>;

const TESTNET: RGBColor = RGBColor(31, 119, 180);
const SIM: RGBColor = RGBColor(255, 127, 14);
const SERIES: [RGBColor; 4] = [TESTNET, SIM, RGBColor(44, 160, 44), RGBColor(214, 39, 40)];
const CAPTION: (&str, u32) = ("sans-serif", 22);
const LABELS: (&str, u32) = ("sans-serif", 15);

/// Writes `hops.svg`, `latency.svg`, `gossip.svg` and `resources.svg` into `dir`.
pub fn all(f: &Figures, dir: &Path) -> Result<()> {
    type Draw = fn(&Figures, &Area<'_>) -> PlotResult;
    let plots: [(&str, (u32, u32), Draw); 4] = [
        ("hops.svg", (1100, 450), hops),
        ("latency.svg", (900, 500), latency),
        ("gossip.svg", (1000, 700), gossip),
        ("resources.svg", (1000, 700), resources),
    ];
    for (name, size, draw) in plots {
        let path = dir.join(name);
        let root = SVGBackend::new(&path, size).into_drawing_area();
        draw(f, &root)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// (x, fraction of values <= x) at each distinct value: a CDF's steps.
fn cdf(values: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (i, x) in v.iter().enumerate() {
        let y = (i + 1) as f64 / n;
        match out.last_mut() {
            Some(last) if last.0 == *x => last.1 = y,
            _ => out.push((*x, y)),
        }
    }
    out
}

/// A CDF drawn as steps: horizontal to the next value, then up.
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    let mut y = 0.0;
    for &(x, next) in points {
        out.push((x, y));
        out.push((x, next));
        y = next;
    }
    out
}

fn hops(f: &Figures, root: &Area<'_>) -> PlotResult {
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let (testnet, sim) = (&f.hops.0, &f.hops.1);
    let max = testnet.iter().chain(sim).copied().fold(0.0, f64::max) as usize;
    let share = |values: &[f64], h: usize| {
        let n = values.iter().filter(|&&v| v as usize == h).count();
        100.0 * n as f64 / values.len().max(1) as f64
    };
    let top = (0..=max)
        .flat_map(|h| [share(testnet, h), share(sim, h)])
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("lookup hops", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..max as f64 + 0.5, 0.0..(top * 1.15).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("hops")
        .y_desc("% of lookups")
        .x_labels(max + 2)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .disable_x_mesh()
        .label_style(LABELS)
        .draw()?;
    for (name, values, color, offset) in [
        (
            format!("testnet ({})", testnet.len()),
            testnet,
            TESTNET,
            -0.4,
        ),
        (format!("dht-sim ({})", sim.len()), sim, SIM, 0.0),
    ] {
        chart
            .draw_series((0..=max).map(|h| {
                let x = h as f64 + offset;
                Rectangle::new([(x, 0.0), (x + 0.4, share(values, h))], color.filled())
            }))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .label_font(LABELS)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    let mut chart = ChartBuilder::on(&right)
        .caption("lookup hops, CDF", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..max as f64 + 1.0, 0.0..1.05)?;
    chart
        .configure_mesh()
        .x_desc("hops")
        .y_desc("fraction of lookups")
        .x_labels(max + 2)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(LABELS)
        .draw()?;
    for (name, values, color) in [("testnet", testnet, TESTNET), ("dht-sim", sim, SIM)] {
        let mut points = steps(&cdf(values));
        points.push((max as f64 + 1.0, 1.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(3)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(LABELS)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}

fn latency(f: &Figures, root: &Area<'_>) -> PlotResult {
    root.fill(&WHITE)?;
    let all: Vec<f64> = f
        .latency
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let low = percentile(&all, 0.0).unwrap_or(1.0).max(0.1);
    let high = percentile(&all, 100.0).unwrap_or(10.0).max(low * 10.0);
    let mut chart = ChartBuilder::on(root)
        .caption("latency, CDF", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((low * 0.8..high * 1.25).log_scale(), 0.0..1.05)?;
    chart
        .configure_mesh()
        .x_desc("ms (log scale)")
        .y_desc("fraction")
        .label_style(LABELS)
        .draw()?;
    for ((name, values), color) in f.latency.iter().zip(SERIES) {
        if values.is_empty() {
            continue;
        }
        let mut points = steps(&cdf(values));
        if let Some(first) = points.first_mut() {
            first.0 = first.0.max(low);
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(3)))?
            .label(format!("{name} ({})", values.len()))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(LABELS)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}

/// A vertical dashed line at the end of the warm-up.
fn warmup_line<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    x: f64,
    y: (f64, f64),
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(DashedLineSeries::new(
            [(x, y.0), (x, y.1)],
            6,
            4,
            BLACK.into(),
        ))?
        .label("end of warm-up")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    Ok(())
}

fn gossip(f: &Figures, root: &Area<'_>) -> PlotResult {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    let end = f.window.1.max(1.0);
    let ratios: Vec<(f64, f64)> = f
        .deliveries
        .iter()
        .filter(|d| d.live > 0)
        .map(|d| (d.at, 100.0 * d.reached as f64 / d.live as f64))
        .collect();
    let floor = ratios.iter().map(|r| r.1).fold(100.0, f64::min).min(99.0);
    let mut chart = ChartBuilder::on(&top)
        .caption("gossip delivery to live nodes, per message", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, (floor - 0.5)..100.5)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_desc("% of live nodes")
        .label_style(LABELS)
        .draw()?;
    chart.draw_series(
        ratios
            .iter()
            .map(|&(x, y)| Circle::new((x, y), 3, TESTNET.filled())),
    )?;
    let last: Vec<(f64, f64)> = f
        .deliveries
        .iter()
        .filter_map(|d| Some((d.at, d.last_ms?)))
        .collect();
    let high = last.iter().map(|l| l.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("gossip: latency to the last live receiver", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..high * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("s (publish time)")
        .y_desc("ms")
        .label_style(LABELS)
        .draw()?;
    chart.draw_series(
        last.iter()
            .map(|&(x, y)| Circle::new((x, y), 3, SIM.filled())),
    )?;
    Ok(())
}

fn resources(f: &Figures, root: &Area<'_>) -> PlotResult {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);
    let end = f.window.1.max(1.0);
    let high = f.rss.iter().map(|r| r.3).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&top)
        .caption("RSS per node", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..high * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_desc("MiB")
        .label_style(LABELS)
        .draw()?;
    type Pick = fn(&(f64, f64, f64, f64)) -> f64;
    let lines: [(&str, Pick, RGBColor); 3] = [
        ("median", |r| r.1, TESTNET),
        ("p95", |r| r.2, SIM),
        ("max", |r| r.3, SERIES[3]),
    ];
    for (name, pick, color) in lines {
        chart
            .draw_series(LineSeries::new(
                f.rss.iter().map(|r| (r.0, pick(r))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    warmup_line(&mut chart, f.window.0, (0.0, high * 1.15))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font(LABELS)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("CPU busy, all cores", CAPTION)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..105.0)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_desc("%")
        .label_style(LABELS)
        .draw()?;
    for (name, series, color) in [
        ("machine", &f.cpu.0, SERIES[2]),
        ("testnet nodes", &f.cpu.1, TESTNET),
    ] {
        chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    warmup_line(&mut chart, f.window.0, (0.0, 105.0))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleLeft)
        .label_font(LABELS)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_at_each_distinct_value() {
        assert_eq!(
            cdf(&[2.0, 1.0, 2.0, 3.0]),
            [(1.0, 0.25), (2.0, 0.75), (3.0, 1.0)]
        );
        assert_eq!(
            steps(&[(1.0, 0.5), (2.0, 1.0)]),
            [(1.0, 0.0), (1.0, 0.5), (2.0, 0.5), (2.0, 1.0)]
        );
    }
}
