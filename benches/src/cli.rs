//! Command line: which shims to compare, how hard, and where results go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The Go shim every other shim is compared with (ratios use it as the denominator).
pub const REFERENCE: &str = "go";

const USAGE: &str =
    "usage: wren-bench [--quick] [--only GROUP,...] [--shim NAME=PATH ...] [--no-default-shims] [--out DIR]

  --quick             small sizes for routine runs (minutes, not tens of minutes)
  --only GROUP,...    run only these groups: start, idle (memory, threads, wake-ups, exec and
                      stats latency), direct (exec and stats over ttrpc to the shim alone, no
                      containerd), lifecycle (cold path and exit → event, shim alone), cold
                      (also exit → event through containerd), wrenctl (`wrenctl run --rm`),
                      stdout (through ctr, and read from the shim's FIFO alone), density
  --shim NAME=PATH    add a shim binary (repeatable; replaces a default of the same NAME;
                      a missing PATH is an error, a missing default is skipped)
  --no-default-shims  drop the defaults: go=/usr/bin/containerd-shim-runc-v2 and
                      wren=<target dir>/containerd-shim-wren-v2
  --out DIR           where results.md, results.json and results.svg go (default: <target>/bench)";

/// One shim binary under test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shim {
    /// Short name used in tables (`go`, `wren`).
    pub name: String,
    /// The binary.
    pub binary: PathBuf,
}

/// How many trials and containers each measurement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Sleeping containers per shim for memory, threads, wake-ups, exec and stats.
    pub idle: usize,
    /// Interleaved trials per latency measurement.
    pub trials: usize,
    /// Bytes written to stdout per throughput trial.
    pub stream_bytes: u64,
    /// Interleaved throughput trials.
    pub stream_trials: usize,
    /// Detached containers per shim for the density measurement.
    pub density: usize,
    /// How long idle wake-ups are counted.
    pub wake_window: Duration,
}

impl Sizes {
    const FULL: Self = Self {
        idle: 20,
        trials: 30,
        stream_bytes: 1 << 30,
        stream_trials: 5,
        density: 100,
        wake_window: Duration::from_secs(5),
    };
    const QUICK: Self = Self {
        idle: 5,
        trials: 8,
        stream_bytes: 128 << 20,
        stream_trials: 3,
        density: 20,
        wake_window: Duration::from_secs(3),
    };
}

/// The measurement groups `--only` selects from, in the order they run.
pub const GROUPS: [&str; 8] = [
    "start",
    "idle",
    "direct",
    "lifecycle",
    "cold",
    "wrenctl",
    "stdout",
    "density",
];

/// Whether this is a routine run or the full one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Full sizes.
    Full,
    /// `--quick`.
    Quick,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct Config {
    /// Full or quick.
    pub mode: Mode,
    /// Sizes for `mode`.
    pub sizes: Sizes,
    /// Shims whose binary exists, in table order.
    pub shims: Vec<Shim>,
    /// Default shims whose binary is missing (a requested one is an error).
    pub missing: Vec<Shim>,
    /// Output directory.
    pub out: PathBuf,
    /// The groups to run (all of [`GROUPS`] unless `--only` narrowed them).
    pub groups: Vec<String>,
}

impl Config {
    /// Whether `group` (one of [`GROUPS`]) runs.
    pub fn runs(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Parses `args` (without `argv[0]`); `Ok(None)` for `--help`.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Config>> {
    let target = target_dir();
    let mut mode = Mode::Full;
    let mut defaults = true;
    let mut extra = Vec::new();
    let mut out = target.as_ref().map(|t| t.join("bench"));
    let mut groups: Vec<String> = GROUPS.iter().map(|g| (*g).to_owned()).collect();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => mode = Mode::Quick,
            "--no-default-shims" => defaults = false,
            "--shim" => extra.push(parse_shim(&args.next().context("--shim needs NAME=PATH")?)?),
            "--out" => out = Some(PathBuf::from(args.next().context("--out needs DIR")?)),
            "--only" => groups = parse_groups(&args.next().context("--only needs GROUP,...")?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let mut wanted = if defaults {
        default_shims(target.as_deref())
    } else {
        Vec::new()
    };
    for shim in extra {
        // A default may be absent (no Go shim installed); a shim asked for by name may not.
        if !shim.binary.is_file() {
            bail!(
                "--shim {}={}: no such file",
                shim.name,
                shim.binary.display()
            );
        }
        wanted.retain(|s| s.name != shim.name);
        wanted.push(shim);
    }
    let (shims, missing) = wanted.into_iter().partition(|s| s.binary.is_file());
    let sizes = match mode {
        Mode::Full => Sizes::FULL,
        Mode::Quick => Sizes::QUICK,
    };
    let out = out.context("cannot locate the target dir; pass --out DIR")?;
    Ok(Some(Config {
        mode,
        sizes,
        shims,
        missing,
        out,
        groups,
    }))
}

fn parse_groups(list: &str) -> Result<Vec<String>> {
    let groups: Vec<String> = list.split(',').map(str::to_owned).collect();
    if let Some(unknown) = groups.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        bail!(
            "--only: unknown group {unknown:?}; the groups are {}",
            GROUPS.join(", ")
        );
    }
    Ok(groups)
}

fn parse_shim(spec: &str) -> Result<Shim> {
    let (name, path) = spec
        .split_once('=')
        .with_context(|| format!("--shim {spec:?}: want NAME=PATH"))?;
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid {
        bail!("--shim {spec:?}: NAME must be lowercase letters and digits");
    }
    let binary = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    Ok(Shim {
        name: name.to_owned(),
        binary,
    })
}

fn default_shims(target: Option<&Path>) -> Vec<Shim> {
    let mut shims = vec![Shim {
        name: REFERENCE.into(),
        binary: "/usr/bin/containerd-shim-runc-v2".into(),
    }];
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    let candidates = [
        profile_dir,
        target.map(|t| t.join("release")),
        target.map(|t| t.join("debug")),
    ];
    let wren = candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join("containerd-shim-wren-v2"))
        .find(|path| path.is_file());
    let fallback = target.map_or_else(
        || "containerd-shim-wren-v2".into(),
        |t| t.join("release/containerd-shim-wren-v2"),
    );
    shims.push(Shim {
        name: "wren".into(),
        binary: wren.unwrap_or(fallback),
    });
    shims
}

/// `target/`: the parent of the profile dir this binary runs from.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn quick_selects_small_sizes() {
        let config = parse(args(&["--quick", "--out", "/tmp/x"]))
            .unwrap()
            .unwrap();
        assert_eq!(config.mode, Mode::Quick);
        assert_eq!(config.sizes, Sizes::QUICK);
        assert_eq!(config.out, PathBuf::from("/tmp/x"));
        assert!(GROUPS.iter().all(|g| config.runs(g)));
    }

    #[test]
    fn only_narrows_the_groups() {
        let config = parse(args(&["--only", "start,cold", "--out", "/tmp/x"]))
            .unwrap()
            .unwrap();
        assert!(config.runs("start") && config.runs("cold"));
        assert!(!config.runs("idle") && !config.runs("direct") && !config.runs("density"));
        assert!(parse(args(&["--only", "start,bogus", "--out", "/tmp/x"])).is_err());
        let direct = parse(args(&["--only", "direct", "--out", "/tmp/x"]))
            .unwrap()
            .unwrap();
        assert_eq!(direct.groups, ["direct"]);
    }

    #[test]
    fn shim_flag_replaces_default_of_same_name_and_a_missing_one_is_an_error() {
        let config = parse(args(&["--shim", "go=/bin/true", "--out", "/tmp"]))
            .unwrap()
            .unwrap();
        let go: Vec<_> = config.shims.iter().filter(|s| s.name == "go").collect();
        assert_eq!(go.len(), 1);
        assert!(go[0].binary.ends_with("true"));
        let missing = parse(args(&["--shim", "other=/nope", "--out", "/tmp"])).unwrap_err();
        assert!(missing.to_string().contains("other=/nope"), "{missing}");
    }

    #[test]
    fn bad_arguments_are_rejected() {
        assert!(parse(args(&["--shim", "noequals"])).is_err());
        assert!(parse(args(&["--shim", "Bad=/bin/true"])).is_err());
        assert!(parse(args(&["--frobnicate"])).is_err());
    }
}
