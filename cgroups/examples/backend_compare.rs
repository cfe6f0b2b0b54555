//! Our readers and cgroups-rs side by side on one process's cgroup: where each looks, how long
//! a lookup and a full stats read take (interleaved rounds), and every field on which the two
//! disagree. Needs the `cgroups-rs-backend` feature:
//! `cargo run --release -p wren-cgroups --features cgroups-rs-backend --example backend_compare -- [PID] [ROUNDS]`

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Debug;
use std::hint::black_box;
use std::time::{Duration, Instant};

use wren_cgroups::rs_backend::RsCgroup;
use wren_cgroups::Cgroup;

type Outcome = Result<(), Box<dyn Error>>;

fn main() -> Outcome {
    let mut args = std::env::args().skip(1);
    let pid = match args.next() {
        Some(arg) => arg.parse()?,
        None => std::process::id(),
    };
    let rounds: usize = match args.next() {
        Some(arg) => arg.parse()?,
        None => 2000,
    };
    let ours = Cgroup::for_pid(pid)?;
    let theirs = RsCgroup::for_pid(pid)?;
    compare_lookups(&ours, &theirs);

    let locate = interleaved(
        rounds / 4,
        || {
            black_box(Cgroup::for_pid(pid)?);
            Ok(())
        },
        || {
            black_box(RsCgroup::for_pid(pid)?);
            Ok(())
        },
    )?;
    report("locate", &locate);
    let stats = interleaved(
        rounds,
        || {
            black_box(ours.stats()?);
            Ok(())
        },
        || {
            black_box(theirs.stats());
            Ok(())
        },
    )?;
    report("stats", &stats);
    compare_stats(&ours, &theirs)
}

/// Where each one looks. Huge page sizes and `/proc/partitions` are not directories, so they
/// are printed apart.
fn compare_lookups(ours: &Cgroup, theirs: &RsCgroup) {
    let (mut ours, mut theirs) = (ours.clone(), theirs.located());
    let sizes = (take_sizes(&mut ours), take_sizes(&mut theirs));
    let (ours, theirs) = (fields(&ours), fields(&theirs));
    println!(
        "lookup: {}",
        if ours == theirs {
            "same directories"
        } else {
            "DIFFERENT"
        }
    );
    for (key, value) in &ours {
        println!(
            "  {key}: ours {value}, cgroups-rs {}",
            show(theirs.get(key))
        );
    }
    println!(
        "  huge page sizes: ours {:?}, cgroups-rs {:?}",
        sizes.0, sizes.1
    );
}

fn take_sizes(cgroup: &mut Cgroup) -> Vec<String> {
    match cgroup {
        Cgroup::V1(v1) => {
            v1.partitions = None;
            std::mem::take(&mut v1.hugepage_sizes)
        }
        Cgroup::V2(v2) => std::mem::take(&mut v2.hugepage_sizes),
    }
}

/// Times `a` and `b` in turn, `a` first on even rounds and `b` first on odd ones, so that a
/// noisy machine and warm caches weigh on both alike. Returns both sample sets, sorted.
fn interleaved(
    rounds: usize,
    mut a: impl FnMut() -> Outcome,
    mut b: impl FnMut() -> Outcome,
) -> Result<[Vec<Duration>; 2], Box<dyn Error>> {
    let mut samples = [Vec::with_capacity(rounds), Vec::with_capacity(rounds)];
    let mut time = |f: &mut dyn FnMut() -> Outcome, slot: usize| -> Outcome {
        let start = Instant::now();
        f()?;
        samples[slot].push(start.elapsed());
        Ok(())
    };
    for round in 0..rounds {
        if round % 2 == 0 {
            time(&mut a, 0)?;
            time(&mut b, 1)?;
        } else {
            time(&mut b, 1)?;
            time(&mut a, 0)?;
        }
    }
    samples.iter_mut().for_each(|set| set.sort_unstable());
    Ok(samples)
}

fn percentile(samples: &[Duration], percent: usize) -> Duration {
    let index = samples.len().saturating_sub(1) * percent / 100;
    samples.get(index).copied().unwrap_or_default()
}

fn report(what: &str, [ours, theirs]: &[Vec<Duration>; 2]) {
    let (median_ours, median_theirs) = (percentile(ours, 50), percentile(theirs, 50));
    println!(
        "{what}: {} rounds; ours median {median_ours:?} p90 {:?}; cgroups-rs median \
         {median_theirs:?} p90 {:?}; cgroups-rs / ours = {:.2}",
        ours.len(),
        percentile(ours, 90),
        percentile(theirs, 90),
        median_theirs.as_secs_f64() / median_ours.as_secs_f64().max(f64::MIN_POSITIVE),
    );
}

/// Reads ours, cgroups-rs's, then ours again: a field that moved between our two reads is
/// live (the workload ran) and is counted apart rather than called a difference.
fn compare_stats(ours: &Cgroup, theirs: &RsCgroup) -> Outcome {
    let before = fields(&ours.stats()?);
    let rs = fields(&theirs.stats());
    let after = fields(&ours.stats()?);
    let keys: BTreeSet<&String> = before.keys().chain(rs.keys()).chain(after.keys()).collect();
    // Per group: equal, different, live.
    let mut groups: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for key in keys {
        let (own, rs_value, again) = (before.get(key), rs.get(key), after.get(key));
        let counts = groups.entry(group(key)).or_default();
        if own != again {
            counts[2] += 1;
            println!(
                "live  {key}: ours {} then {}, cgroups-rs {}",
                show(own),
                show(again),
                show(rs_value)
            );
        } else if own == rs_value {
            counts[0] += 1;
        } else {
            counts[1] += 1;
            println!(
                "DIFF  {key}: ours {}, cgroups-rs {}",
                show(own),
                show(rs_value)
            );
        }
    }
    println!("fields per group (equal / different / live):");
    for (group, [equal, different, live]) in groups {
        println!("  {group}: {equal} / {different} / {live}");
    }
    Ok(())
}

fn show(value: Option<&String>) -> &str {
    value.map_or("(absent)", String::as_str)
}

/// `memory.swap.limit` belongs to `memory.swap`, `memory.cache` to `memory`.
fn group(key: &str) -> String {
    let segments: Vec<&str> = key.split('.').collect();
    match segments.as_slice() {
        [first, second, _, ..] => format!("{first}.{second}"),
        [first, ..] => (*first).to_owned(),
        [] => String::new(),
    }
}

/// `{:#?}` text as `path -> value`, so two values compare field by field even where a list is
/// longer on one side. Wrappers (`Some(`, `V1(`, struct names) add no path segment; list
/// elements are numbered.
fn fields(value: &impl Debug) -> BTreeMap<String, String> {
    struct Frame {
        name: String,
        list: bool,
        items: usize,
    }
    let mut out = BTreeMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for line in format!("{value:#?}").lines() {
        // Pretty Debug indents by four spaces and opens each level on its own line, so the
        // indentation is the depth of the enclosing frames.
        let depth = (line.len() - line.trim_start().len()) / 4;
        let text = line.trim().trim_end_matches(',');
        stack.truncate(depth);
        if matches!(text, "}" | ")" | "]") {
            continue;
        }
        let (name, rest) = match text.split_once(": ") {
            Some((name, rest)) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                (name.to_owned(), rest)
            }
            _ => match stack.last_mut() {
                Some(parent) if parent.list => {
                    parent.items += 1;
                    (format!("[{}]", parent.items - 1), text)
                }
                _ => (String::new(), text),
            },
        };
        if rest.ends_with(['{', '(', '[']) {
            let list = rest.ends_with('[');
            stack.push(Frame {
                name,
                list,
                items: 0,
            });
            continue;
        }
        let path: Vec<&str> = stack
            .iter()
            .map(|frame| frame.name.as_str())
            .chain([name.as_str()])
            .filter(|segment| !segment.is_empty())
            .collect();
        out.insert(path.join("."), rest.to_owned());
    }
    out
}
