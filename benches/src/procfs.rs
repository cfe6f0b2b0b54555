//! What `/proc` says about a process: memory, threads, context switches, lineage.

use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size: shared pages divided among their sharers.
    pub pss_kib: u64,
}

/// RSS and PSS from `/proc/<pid>/smaps_rollup`.
pub fn memory(pid: i32) -> Result<Memory> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    Ok(Memory {
        rss_kib: field(&text, "Rss:").with_context(|| format!("Rss in {path}"))?,
        pss_kib: field(&text, "Pss:").with_context(|| format!("Pss in {path}"))?,
    })
}

/// The `Threads:` count of `/proc/<pid>/status`.
pub fn threads(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    field(&text, "Threads:").with_context(|| format!("Threads in {path}"))
}

/// The parent PID (`PPid:`) of `pid`.
pub fn ppid(pid: i32) -> Result<i32> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let value = field(&text, "PPid:").with_context(|| format!("PPid in {path}"))?;
    i32::try_from(value).context("ppid out of range")
}

/// Voluntary plus involuntary context switches summed over every thread of `pid`.
///
/// Threads that exit between listing and reading are skipped: they no longer wake anyone.
pub fn context_switches(pid: i32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("read {dir}"))? {
        let status = entry
            .with_context(|| format!("list {dir}"))?
            .path()
            .join("status");
        let Ok(text) = fs::read_to_string(&status) else {
            continue;
        };
        total += field(&text, "voluntary_ctxt_switches:").unwrap_or(0);
        total += field(&text, "nonvoluntary_ctxt_switches:").unwrap_or(0);
    }
    Ok(total)
}

/// The executable `pid` runs (resolved through `/proc/<pid>/exe`).
pub fn exe(pid: i32) -> Result<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).with_context(|| format!("readlink /proc/{pid}/exe"))
}

/// Whether `pid` is alive and not a zombie (a zombie has exited; only its parent can reap it).
pub fn is_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself hold spaces.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}

/// Live processes whose argv holds `flag` immediately followed by `value`.
pub fn pids_with_args(flag: &str, value: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            argv.windows(2)
                .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
        })
        .filter(|pid| is_alive(*pid))
        .collect()
}

/// The first number after `key` on the line that starts with it (`Pss:   1234 kB`).
fn field(text: &str, key: &str) -> Result<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or_else(|| anyhow!("no {key} line"))?;
    let value = line[key.len()..]
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("empty {key}"))?;
    value
        .parse()
        .with_context(|| format!("parse {key} {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_readable() {
        let me = i32::try_from(std::process::id()).unwrap();
        let mem = memory(me).unwrap();
        assert!(mem.rss_kib > 0 && mem.pss_kib > 0);
        assert!(threads(me).unwrap() >= 1);
        assert!(context_switches(me).unwrap() > 0);
        assert!(is_alive(me));
    }

    #[test]
    fn field_parses_first_number() {
        let text = "Rss:                1024 kB\nPss:                 512 kB\n";
        assert_eq!(field(text, "Pss:").unwrap(), 512);
        assert!(field(text, "Swap:").is_err());
    }
}
