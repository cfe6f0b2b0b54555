//! `results.svg`: the headline ratios at a glance. One horizontal bar per metric and
//! subject, each subject's median over the Go shim's (1.0 = as Go; for throughput, higher
//! is better, for everything else lower), with the floor (what the row's title names: mostly
//! `runc` alone) where it exists.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::cli::REFERENCE;
use crate::report::Metric;

const ROW_HEIGHT: u32 = 22;
const PALETTE: [RGBColor; 4] = [
    RGBColor(0x99, 0x99, 0x99),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x75, 0x70, 0xb3),
];

/// One bar: a metric's title, who, and the ratio to the reference.
struct Bar {
    label: String,
    subject: usize,
    ratio: f64,
}

/// The bars of every metric with a reference median: the floor first, then each other shim.
fn bars(metrics: &[Metric], others: &[&str]) -> Vec<Bar> {
    let mut bars = Vec::new();
    for metric in metrics {
        let reference = metric
            .shims
            .iter()
            .find(|s| s.shim == REFERENCE)
            .and_then(|s| s.series.summary)
            .map(|s| s.median)
            .filter(|median| *median > 0.0);
        let Some(reference) = reference else { continue };
        let floor = metric.floor.as_ref().and_then(|f| f.summary);
        if let Some(floor) = floor {
            bars.push(Bar {
                label: format!("{} (floor)", metric.title),
                subject: 0,
                ratio: floor.median / reference,
            });
        }
        for (index, other) in others.iter().enumerate() {
            if let Some(ratio) = metric.ratio(other) {
                bars.push(Bar {
                    label: format!("{} ({other})", metric.title),
                    subject: index + 1,
                    ratio,
                });
            }
        }
    }
    bars
}

/// Writes the chart to `path`; `Ok(false)` when there is nothing to compare with Go.
pub fn write(path: &Path, metrics: &[Metric], shims: &[String]) -> Result<bool> {
    let others: Vec<&str> = shims
        .iter()
        .map(String::as_str)
        .filter(|s| *s != REFERENCE)
        .collect();
    let bars = bars(metrics, &others);
    if bars.is_empty() {
        return Ok(false);
    }
    let rows = u32::try_from(bars.len()).unwrap_or(u32::MAX);
    let size = (1100, 80 + rows.saturating_mul(ROW_HEIGHT));
    let root = SVGBackend::new(path, size).into_drawing_area();
    draw(&root, &bars).map_err(|err| anyhow!("drawing {}: {err}", path.display()))?;
    root.present()
        .map_err(|err| anyhow!("writing {}: {err}", path.display()))?;
    Ok(true)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn draw(root: &Area<'_>, bars: &[Bar]) -> Result<(), Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let widest = bars.iter().map(|b| b.ratio).fold(1.0, f64::max) * 1.15;
    let rows = bars.len();
    // Segmented rows put each label at the middle of its bar; row 0 is at the bottom, so
    // the first bar gets the last row.
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("median / {REFERENCE} (1.0 = as {REFERENCE})"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(520)
        // An integer range includes its end: rows - 1 is the last of `rows` segments.
        .build_cartesian_2d(0.0..widest, (0..rows - 1).into_segmented())?;
    let label = |row: &SegmentValue<usize>| match row {
        SegmentValue::CenterOf(row) => bars
            .get(rows.saturating_sub(row + 1))
            .map_or_else(String::new, |bar| bar.label.clone()),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows)
        .y_label_formatter(&label)
        .x_desc("ratio")
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(index, bar)| {
        let row = rows - index - 1;
        let color = PALETTE[bar.subject % PALETTE.len()];
        let corners = [
            (0.0, SegmentValue::Exact(row)),
            (bar.ratio, SegmentValue::Exact(row + 1)),
        ];
        let mut rectangle = Rectangle::new(corners, color.filled());
        rectangle.set_margin(3, 3, 0, 0);
        rectangle
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(index, bar)| {
        let row = rows - index - 1;
        let at = (bar.ratio + widest / 200.0, SegmentValue::CenterOf(row));
        let style = TextStyle::from(("sans-serif", 12)).pos(Pos::new(HPos::Left, VPos::Center));
        Text::new(format!("{:.2}×", bar.ratio), at, style)
    }))?;
    // The reference line: 1.0 is "as the Go shim".
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Last)],
        BLACK,
    )))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Series, ShimSeries};

    #[test]
    fn chart_has_a_bar_per_ratio_and_the_floor() {
        let mut metric = Metric::new("x", "cold run", "ms", Better::Lower);
        metric.floor = Some(Series::from_result(Ok(vec![2.0, 2.0])));
        for (shim, value) in [("go", 10.0), ("wren", 5.0)] {
            metric.shims.push(ShimSeries {
                shim: shim.into(),
                series: Series::from_result(Ok(vec![value, value])),
            });
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.svg");
        let shims = ["go".to_owned(), "wren".to_owned()];
        assert!(write(&path, &[metric], &shims).unwrap());
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(
            svg.contains("cold run (wren)") && svg.contains("0.50×"),
            "{svg}"
        );
        assert!(
            svg.contains("cold run (floor)") && svg.contains("0.20×"),
            "{svg}"
        );
        assert!(!write(&path, &[], &shims).unwrap());
    }
}
