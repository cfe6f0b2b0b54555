//! Pressure stall information (`cpu.pressure`, `memory.pressure`, `io.pressure`).

use std::path::Path;

use crate::read::{parse_v2, Content, FileReader, StatsError};

/// The `some` and `full` lines of a pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiStats {
    /// Share of time at least one task stalled.
    pub some: Option<PsiData>,
    /// Share of time all non-idle tasks stalled (absent for cpu on older kernels).
    pub full: Option<PsiData>,
}

/// One pressure line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PsiData {
    /// Percentage over the last 10 seconds.
    pub avg10: f64,
    /// Percentage over the last 60 seconds.
    pub avg60: f64,
    /// Percentage over the last 300 seconds.
    pub avg300: f64,
    /// Total stall time, microseconds.
    pub total: u64,
}

/// Reads `dir/name`; `None` when absent or when PSI is disabled (the read fails `EOPNOTSUPP`).
pub(crate) fn read(
    reader: &mut FileReader,
    dir: &Path,
    name: &str,
) -> Result<Option<PsiStats>, StatsError> {
    reader.read(dir, name)?.map(parse).transpose()
}

fn parse(content: Content<'_>) -> Result<PsiStats, StatsError> {
    let mut stats = PsiStats::default();
    for (number, line) in content.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut stats.some,
            Some("full") => &mut stats.full,
            _ => return Err(content.malformed(number, line)),
        };
        let mut data = PsiData::default();
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(content.malformed(number, line));
            };
            let average = match key {
                "avg10" => &mut data.avg10,
                "avg60" => &mut data.avg60,
                "avg300" => &mut data.avg300,
                "total" => {
                    data.total = content.parse(value, parse_v2)?;
                    continue;
                }
                _ => continue,
            };
            *average = value.parse().map_err(|source| StatsError::Decimal {
                path: content.path.to_path_buf(),
                value: value.to_owned(),
                source,
            })?;
        }
        *slot = Some(data);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full() {
        let content = Content {
            path: Path::new("cpu.pressure"),
            text: "some avg10=2.74 avg60=1.77 avg300=1.02 total=9782693\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        };
        let stats = parse(content).unwrap();
        let some = stats.some.unwrap();
        assert_eq!(
            (some.avg10, some.avg60, some.avg300, some.total),
            (2.74, 1.77, 1.02, 9_782_693)
        );
        assert_eq!(stats.full.unwrap().total, 0);
    }

    #[test]
    fn bad_decimal_is_typed() {
        let content = Content {
            path: Path::new("io.pressure"),
            text: "some avg10=x avg60=0 avg300=0 total=0\n",
        };
        assert!(matches!(parse(content), Err(StatsError::Decimal { value, .. }) if value == "x"));
        let content = Content {
            path: Path::new("io.pressure"),
            text: "sometimes avg10=1\n",
        };
        assert!(matches!(
            parse(content),
            Err(StatsError::Malformed { line: 1, .. })
        ));
    }
}
