//! Results: one [`Metric`] per measured quantity, rendered as a markdown table and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::REFERENCE;
use crate::stats::Summary;

/// Which direction is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller numbers win (latency, memory).
    Lower,
    /// Larger numbers win (throughput).
    Higher,
}

/// The samples of one subject for one metric, or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Order statistics of `samples`.
    pub summary: Option<Summary>,
    /// Every sample, in trial order.
    pub samples: Vec<f64>,
    /// Why the subject could not be measured.
    pub error: Option<String>,
}

impl Series {
    /// A series from a measurement's outcome.
    pub fn from_result(result: anyhow::Result<Vec<f64>>) -> Self {
        match result {
            Ok(samples) => Self {
                summary: Summary::of(&samples),
                samples,
                error: None,
            },
            Err(err) => Self {
                summary: None,
                samples: Vec::new(),
                // The outermost context says what failed; the causes go to the log (see
                // `main`) and the JSON, not into a table cell.
                error: Some(format!("{err:#}")),
            },
        }
    }

    fn median(&self) -> Option<f64> {
        self.summary.map(|s| s.median)
    }

    fn trials(&self) -> usize {
        self.summary.map_or(0, |s| s.n)
    }
}

/// One shim's series.
#[derive(Debug, Clone, Serialize)]
pub struct ShimSeries {
    /// The shim's name.
    pub shim: String,
    /// Its samples.
    pub series: Series,
}

/// One measured quantity across the floor (mostly runc alone) and every shim.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Stable JSON key (`cold_run_ms`).
    pub key: &'static str,
    /// Row title.
    pub title: String,
    /// Unit of every sample.
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
    /// The floor the title names (`runc` alone, or one exec for start-up), where one exists.
    pub floor: Option<Series>,
    /// Each shim, in table order.
    pub shims: Vec<ShimSeries>,
}

impl Metric {
    /// A metric without shim series yet.
    pub fn new(
        key: &'static str,
        title: impl Into<String>,
        unit: &'static str,
        better: Better,
    ) -> Self {
        Self {
            key,
            title: title.into(),
            unit,
            better,
            floor: None,
            shims: Vec::new(),
        }
    }

    /// `shim median / reference median`, if both exist.
    pub fn ratio(&self, shim: &str) -> Option<f64> {
        let find = |name: &str| self.shims.iter().find(|s| s.shim == name)?.series.median();
        let reference = find(REFERENCE).or_else(|| self.shims.first()?.series.median())?;
        (reference != 0.0)
            .then(|| find(shim).map(|m| m / reference))
            .flatten()
    }

    /// The most trials any subject of this row has: what its medians rest on.
    pub fn trials(&self) -> usize {
        let floor = self.floor.as_ref().map_or(0, Series::trials);
        let shims = self.shims.iter().map(|s| s.series.trials());
        shims.chain([floor]).max().unwrap_or(0)
    }
}

/// The markdown table: `metric | unit | runc | <shim>… | <shim>/go…`.
pub fn markdown(metrics: &[Metric], shims: &[String]) -> String {
    let reference = if shims.iter().any(|s| s == REFERENCE) {
        REFERENCE
    } else {
        shims.first().map_or("", String::as_str)
    };
    let others: Vec<&String> = shims.iter().filter(|s| *s != reference).collect();
    let mut out = String::from("| metric | unit | trials | floor |");
    for shim in shims {
        let _ = write!(out, " {shim} |");
    }
    for other in &others {
        let _ = write!(out, " {other}/{reference} |");
    }
    out.push_str("\n|---|---|---|---|");
    out.push_str(&"---|".repeat(shims.len() + others.len()));
    for metric in metrics {
        let floor = metric.floor.as_ref().map_or_else(|| "—".to_owned(), cell);
        let _ = write!(
            out,
            "\n| {} | {} | {} | {floor} |",
            metric.title,
            metric.unit,
            metric.trials()
        );
        for shim in shims {
            let series = metric.shims.iter().find(|s| s.shim == *shim);
            let _ = write!(
                out,
                " {} |",
                series.map_or_else(|| "—".to_owned(), |s| cell(&s.series))
            );
        }
        for other in &others {
            let ratio = metric
                .ratio(other)
                .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×"));
            let _ = write!(out, " {ratio} |");
        }
    }
    out.push('\n');
    out
}

/// `median (p90 x, IQR y)`, or the error, or a dash.
fn cell(series: &Series) -> String {
    match (&series.summary, &series.error) {
        (Some(s), _) if s.n == 1 => number(s.median),
        (Some(s), _) => format!(
            "{} (p90 {}, IQR {})",
            number(s.median),
            number(s.p90),
            number(s.iqr())
        ),
        (None, Some(err)) => format!("error: {}", first_line(err)),
        (None, None) => "—".to_owned(),
    }
}

/// Three significant digits, no exponent for the ranges measured here.
pub fn number(x: f64) -> String {
    let magnitude = x.abs();
    if magnitude >= 100.0 || magnitude == 0.0 {
        format!("{x:.0}")
    } else if magnitude >= 10.0 {
        format!("{x:.1}")
    } else if magnitude >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The error's outermost message (before the first `: ` of its cause chain), short enough
/// for a table cell, on one line.
fn first_line(text: &str) -> String {
    const MAX: usize = 60;
    let line = text.lines().next().unwrap_or("");
    let outer = line.split(": ").next().unwrap_or(line);
    let mut short: String = outer.chars().take(MAX).collect();
    if outer.chars().count() > MAX {
        short.push('…');
    }
    short.replace('|', "/")
}

/// The terminal summary: per metric one line, `title [unit, n trials]`, then per subject
/// its median and, against the reference, its ratio; narrow enough not to wrap.
pub fn summary(metrics: &[Metric], shims: &[String]) -> String {
    let mut out = String::new();
    for metric in metrics {
        let _ = writeln!(
            out,
            "{} [{}, {} trials]",
            metric.title,
            metric.unit,
            metric.trials()
        );
        let mut parts = Vec::new();
        if let Some(floor) = metric.floor.as_ref().and_then(Series::median) {
            parts.push(format!("floor {}", number(floor)));
        }
        for shim in shims {
            let Some(series) = metric.shims.iter().find(|s| s.shim == *shim) else {
                continue;
            };
            let value = match (series.series.median(), &series.series.error) {
                (Some(median), _) => number(median),
                (None, Some(err)) => format!("error: {}", first_line(err)),
                (None, None) => "—".to_owned(),
            };
            let ratio = match metric.ratio(shim) {
                Some(ratio) if shim != REFERENCE => format!(" ({ratio:.2}×)"),
                _ => String::new(),
            };
            parts.push(format!("{shim} {value}{ratio}"));
        }
        let _ = writeln!(out, "    {}", parts.join("   "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(samples: &[f64]) -> Series {
        Series::from_result(Ok(samples.to_vec()))
    }

    #[test]
    fn ratio_is_against_go() {
        let mut metric = Metric::new("x", "x", "ms", Better::Lower);
        metric.shims.push(ShimSeries {
            shim: "go".into(),
            series: series(&[10.0, 10.0]),
        });
        metric.shims.push(ShimSeries {
            shim: "wren".into(),
            series: series(&[5.0, 5.0]),
        });
        assert_eq!(metric.ratio("wren"), Some(0.5));
        let table = markdown(std::slice::from_ref(&metric), &["go".into(), "wren".into()]);
        assert!(table.contains("| wren/go |"), "{table}");
        assert!(table.contains("0.50×"), "{table}");
        assert!(
            table.contains("| x | ms | 2 |"),
            "trial count per row: {table}"
        );
        let summary = summary(&[metric], &["go".into(), "wren".into()]);
        assert_eq!(
            summary,
            "x [ms, 2 trials]\n    go 10.0   wren 5.00 (0.50×)\n"
        );
    }

    #[test]
    fn errors_show_in_their_cell() {
        let mut metric = Metric::new("x", "x", "ms", Better::Lower);
        metric.shims.push(ShimSeries {
            shim: "go".into(),
            series: Series::from_result(Err(anyhow::anyhow!("boom|x"))),
        });
        let table = markdown(&[metric], &["go".into()]);
        assert!(table.contains("error: boom/x"), "{table}");
        let mut metric = Metric::new("x", "x", "ms", Better::Lower);
        let long = anyhow::anyhow!("Output {{ status: 1, stderr: [{}] }}", "1, ".repeat(200))
            .context("ctr run failed");
        metric.shims.push(ShimSeries {
            shim: "go".into(),
            series: Series::from_result(Err(long)),
        });
        let table = markdown(&[metric], &["go".into()]);
        assert!(table.contains("| error: ctr run failed |"), "{table}");
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.1234), "0.123");
    }
}
