//! cgroup v1 `blkio` lists, read the way containerd's `cgroup1/blkio.go` reads them.

use std::path::Path;

use crate::read::{parse_v1, Content, FileReader, StatsError};
use crate::v1::{BlkioEntry, BlkioStat};

/// Reads the CFQ `*_recursive` lists; when the kernel has none (or they are all empty, as for
/// devices on other schedulers), falls back to the throttle counters, which every kernel keeps.
pub(crate) fn read(
    reader: &mut FileReader,
    dir: &Path,
    partitions: Option<&Path>,
) -> Result<BlkioStat, StatsError> {
    let mut stat = BlkioStat::default();
    let cfq = [
        ("blkio.sectors_recursive", &mut stat.sectors_recursive),
        (
            "blkio.io_service_bytes_recursive",
            &mut stat.io_service_bytes_recursive,
        ),
        (
            "blkio.io_serviced_recursive",
            &mut stat.io_serviced_recursive,
        ),
        ("blkio.io_queued_recursive", &mut stat.io_queued_recursive),
        (
            "blkio.io_service_time_recursive",
            &mut stat.io_service_time_recursive,
        ),
        (
            "blkio.io_wait_time_recursive",
            &mut stat.io_wait_time_recursive,
        ),
        ("blkio.io_merged_recursive", &mut stat.io_merged_recursive),
        ("blkio.time_recursive", &mut stat.io_time_recursive),
    ];
    let mut found = 0;
    for (name, list) in cfq {
        if let Some(content) = reader.read(dir, name)? {
            parse_list(content, list)?;
            found += list.len();
        }
    }
    if found == 0 {
        let throttle = [
            (
                "blkio.throttle.io_serviced",
                &mut stat.io_serviced_recursive,
            ),
            (
                "blkio.throttle.io_service_bytes",
                &mut stat.io_service_bytes_recursive,
            ),
        ];
        for (name, list) in throttle {
            if let Some(content) = reader.read(dir, name)? {
                parse_list(content, list)?;
            }
        }
    }
    if let Some(partitions) = partitions {
        name_devices(reader, partitions, &mut stat)?;
    }
    Ok(stat)
}

/// Lines are `major:minor op value`, `major:minor value`, or a closing `Total value`.
fn parse_list(content: Content<'_>, list: &mut Vec<BlkioEntry>) -> Result<(), StatsError> {
    for (number, line) in content.lines() {
        let fields: Vec<&str> = line
            .split(|c: char| c.is_ascii_whitespace() || c == ':')
            .filter(|f| !f.is_empty())
            .collect();
        let (major, minor, op, value) = match fields.as_slice() {
            ["Total", _] => continue,
            [major, minor, value] => (major, minor, "", value),
            [major, minor, op, value] => (major, minor, *op, value),
            _ => return Err(content.malformed(number, line)),
        };
        list.push(BlkioEntry {
            op: op.to_owned(),
            device: String::new(),
            major: content.parse(major, parse_v1)?,
            minor: content.parse(minor, parse_v1)?,
            value: content.parse(value, parse_v1)?,
        });
    }
    Ok(())
}

/// Fills `device` with `/dev/<name>` from `/proc/partitions`; read only when some list has
/// entries, since most containers never touch a block device of their own.
fn name_devices(
    reader: &mut FileReader,
    partitions: &Path,
    stat: &mut BlkioStat,
) -> Result<(), StatsError> {
    let mut lists = [
        &mut stat.io_service_bytes_recursive,
        &mut stat.io_serviced_recursive,
        &mut stat.io_queued_recursive,
        &mut stat.io_service_time_recursive,
        &mut stat.io_wait_time_recursive,
        &mut stat.io_merged_recursive,
        &mut stat.io_time_recursive,
        &mut stat.sectors_recursive,
    ];
    if lists.iter().all(|list| list.is_empty()) {
        return Ok(());
    }
    let (Some(dir), Some(name)) = (
        partitions.parent(),
        partitions.file_name().and_then(|n| n.to_str()),
    ) else {
        return Ok(());
    };
    let Some(content) = reader.read(dir, name)? else {
        return Ok(());
    };
    let mut devices = Vec::new();
    // The first line is the header, the second is blank.
    for (number, line) in content.lines().filter(|(number, _)| *number > 2) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let [major, minor, _blocks, name] = fields.as_slice() else {
            return Err(content.malformed(number, line));
        };
        let key = (
            content.parse(major, parse_v1)?,
            content.parse(minor, parse_v1)?,
        );
        devices.push((key, format!("/dev/{name}")));
    }
    for entry in lists.iter_mut().flat_map(|list| list.iter_mut()) {
        if let Some((_, name)) = devices
            .iter()
            .find(|(key, _)| *key == (entry.major, entry.minor))
        {
            entry.device.clone_from(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTITIONS: &str = "major minor  #blocks  name\n\n 254        0   10485760 vda\n 254        1   10484719 vda1\n";

    #[test]
    fn cfq_lists_with_device_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("blkio.io_service_bytes_recursive"), "254:0 Read 4096\n254:0 Write 8192\n254:0 Sync 0\n254:0 Async 12288\n254:0 Discard 0\n254:0 Total 12288\nTotal 12288\n").unwrap();
        std::fs::write(d.join("blkio.sectors_recursive"), "254:1 24\n").unwrap();
        std::fs::write(d.join("partitions"), PARTITIONS).unwrap();
        let stat = read(&mut FileReader::new(), d, Some(&d.join("partitions"))).unwrap();
        assert_eq!(stat.io_service_bytes_recursive.len(), 6);
        assert_eq!(
            stat.io_service_bytes_recursive[1],
            BlkioEntry {
                op: "Write".into(),
                device: "/dev/vda".into(),
                major: 254,
                minor: 0,
                value: 8192
            }
        );
        assert_eq!(stat.sectors_recursive[0].device, "/dev/vda1");
        assert_eq!(stat.sectors_recursive[0].op, "");
        assert!(stat.io_serviced_recursive.is_empty());
    }

    #[test]
    fn throttle_fallback_without_cfq() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("blkio.throttle.io_serviced"),
            "8:0 Read 3\n8:0 Write 5\nTotal 8\n",
        )
        .unwrap();
        std::fs::write(d.join("blkio.throttle.io_service_bytes"), "Total 0\n").unwrap();
        let stat = read(&mut FileReader::new(), d, None).unwrap();
        assert_eq!(stat.io_serviced_recursive.len(), 2);
        assert_eq!(stat.io_serviced_recursive[1].value, 5);
        assert_eq!(stat.io_serviced_recursive[1].device, "");
        assert!(stat.io_service_bytes_recursive.is_empty());
    }

    #[test]
    fn malformed_blkio_line_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blkio.throttle.io_serviced");
        std::fs::write(&file, "8:0 Read 1\n8:0 Read 1 2\n").unwrap();
        let err = read(&mut FileReader::new(), dir.path(), None).unwrap_err();
        assert!(matches!(&err, StatsError::Malformed { path, line: 2, .. } if *path == file));
        std::fs::write(&file, "8:0 Read\n").unwrap();
        let err = read(&mut FileReader::new(), dir.path(), None).unwrap_err();
        assert!(matches!(&err, StatsError::Integer { path, value, .. }
            if *path == file && value == "Read"));
    }
}
