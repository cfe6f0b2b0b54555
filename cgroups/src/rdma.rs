//! `rdma.current` / `rdma.max`, the same format on v1 and v2.

use std::path::Path;

use crate::read::{Content, FileReader, StatsError};
use crate::v1::{RdmaEntry, RdmaStat};

/// Reads `rdma.current` and `rdma.max`; `None` without the rdma controller.
pub(crate) fn read(reader: &mut FileReader, dir: &Path) -> Result<Option<RdmaStat>, StatsError> {
    let Some(current) = reader.read(dir, "rdma.current")?.map(parse).transpose()? else {
        return Ok(None);
    };
    let limit = reader.read(dir, "rdma.max")?.map(parse).transpose()?;
    Ok(Some(RdmaStat {
        current,
        limit: limit.unwrap_or_default(),
    }))
}

/// Parses lines `mlx4_0 hca_handle=2 hca_object=2000`; `max` reads as `u32::MAX`.
pub(crate) fn parse(content: Content<'_>) -> Result<Vec<RdmaEntry>, StatsError> {
    let mut entries = Vec::new();
    for (number, line) in content.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(device) = fields.next() else {
            continue;
        };
        let mut entry = RdmaEntry {
            device: device.to_owned(),
            ..RdmaEntry::default()
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                return Err(content.malformed(number, line));
            };
            let value = match value {
                "max" => u32::MAX,
                _ => value
                    .parse()
                    .map_err(|source| content.integer(value, source))?,
            };
            match key {
                "hca_handle" => entry.hca_handles = value,
                "hca_object" => entry.hca_objects = value,
                _ => {}
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_max() {
        let content = Content {
            path: Path::new("rdma.max"),
            text: "mlx4_0 hca_handle=2 hca_object=max\nocrdma1 hca_handle=3 hca_object=2000\n",
        };
        let entries = parse(content).unwrap();
        assert_eq!(
            entries[0],
            RdmaEntry {
                device: "mlx4_0".into(),
                hca_handles: 2,
                hca_objects: u32::MAX
            }
        );
        assert_eq!(entries[1].hca_objects, 2000);
        let bad = Content {
            path: Path::new("rdma.max"),
            text: "mlx4_0 hca_handle\n",
        };
        assert!(matches!(
            parse(bad),
            Err(StatsError::Malformed { line: 1, .. })
        ));
    }
}
