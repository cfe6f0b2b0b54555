//! `wren-bench`: wren against containerd's Go shim (and any other shim binary), side by side,
//! with `runc` alone as the floor. See `--help` and README.md "Benchmarks".
//!
//! One private containerd serves every shim; trials are interleaved across subjects;
//! results are printed as a markdown table and written as JSON. Timing never decides a test.

mod chart;
mod cli;
mod containerd;
mod floor;
mod measure;
mod proc;
mod procfs;
mod report;
mod stats;
mod sys;

use std::fs;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use cli::Config;
use containerd::Containerd;
use floor::Floor;
use measure::fleet::Fleets;
use measure::{direct, events, latency, lifecycle, memory, start, throughput, wrenctl, Bench};
use proc::Interrupt;
use report::Metric;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wren-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let Some(config) = cli::parse(std::env::args().skip(1))? else {
        return Ok(());
    };
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (containerd, runc, cgroups)");
    }
    for shim in &config.missing {
        println!(
            "NOTE: skipping shim {}: {} does not exist",
            shim.name,
            shim.binary.display()
        );
    }
    for shim in config
        .shims
        .iter()
        .filter(|s| s.binary.components().any(|c| c.as_os_str() == "debug"))
    {
        println!(
            "NOTE: shim {} is a debug build ({}); build it with --release for fair numbers",
            shim.name,
            shim.binary.display()
        );
    }
    if config.shims.is_empty() {
        bail!("no shim binary to measure");
    }
    let interrupt = Interrupt::register()?;
    let containerd = Containerd::start(&config.shims)?;
    let floor_dir = containerd.scratch("floor")?;
    let floor = Floor::new(&floor_dir, containerd.rootfs(), containerd.namespace())?;
    let bench = Bench {
        containerd: &containerd,
        floor: &floor,
        shims: &config.shims,
        sizes: config.sizes,
        interrupt: &interrupt,
    };
    let metrics = measure_all(&bench, &config)
        .inspect_err(|_| eprintln!("--- containerd log ---\n{}", containerd.log_tail()))?;
    drop(floor);
    drop(containerd);
    let names: Vec<String> = config.shims.iter().map(|s| s.name.clone()).collect();
    for (metric, shim, err) in errors(&metrics) {
        eprintln!("{metric}, {shim}: {err}");
    }
    println!("\n{}", report::summary(&metrics, &names));
    write_results(&config, &metrics, &names)
}

/// Every failed cell with its whole cause chain, which the table shortens to one line.
fn errors(metrics: &[Metric]) -> impl Iterator<Item = (&str, &str, &str)> {
    metrics.iter().flat_map(|metric| {
        metric.shims.iter().filter_map(|shim| {
            let err = shim.series.error.as_deref()?;
            Some((metric.title.as_str(), shim.shim.as_str(), err))
        })
    })
}

/// The measurements `config` selects, in an order that keeps at most one set of containers
/// alive at a time.
fn measure_all(bench: &Bench<'_>, config: &Config) -> Result<Vec<Metric>> {
    let mut metrics = Vec::new();
    let step = |what: &str| eprintln!("== {what}");
    if config.runs("start") {
        step("shim start");
        metrics.extend(start::shim_start(bench)?);
    }
    if config.runs("idle") {
        step(&format!(
            "idle fleets: {} sleeping containers per shim",
            bench.sizes.idle
        ));
        let fleets = Fleets::start(bench, bench.sizes.idle, "idle")?;
        metrics.extend(memory::idle(bench, &fleets)?);
        step("exec latency");
        metrics.extend(latency::exec(bench, &fleets)?);
        step("stats latency");
        metrics.extend(latency::stats(bench, &fleets)?);
    }
    if config.runs("direct") {
        step("exec and stats latency through the shim alone (ttrpc, no containerd)");
        metrics.extend(direct::exec_and_stats(bench)?);
    }
    if config.runs("lifecycle") {
        step("cold path and exit → event through the shim alone (ttrpc, no containerd)");
        metrics.extend(lifecycle::cold_path_and_exit(bench)?);
    }
    if config.runs("cold") {
        step("cold run latency");
        metrics.extend(latency::cold_run(bench)?);
        step("exit → event through containerd (`ctr events`)");
        metrics.extend(events::exit_through_containerd(bench)?);
    }
    if config.runs("wrenctl") {
        step("wrenctl run --rm");
        metrics.extend(wrenctl::run_rm(bench)?);
    }
    if config.runs("stdout") {
        step("stdout throughput");
        metrics.extend(throughput::stdout(bench)?);
        metrics.extend(throughput::stdout_shim_alone(bench)?);
    }
    if config.runs("density") {
        step(&format!(
            "density: {} containers per shim",
            bench.sizes.density
        ));
        metrics.extend(memory::density(bench)?);
    }
    Ok(metrics)
}

fn write_results(config: &Config, metrics: &[Metric], names: &[String]) -> Result<()> {
    fs::create_dir_all(&config.out).with_context(|| format!("create {}", config.out.display()))?;
    let host = host_info();
    let json = json!({
        "mode": format!("{:?}", config.mode).to_lowercase(),
        "host": host,
        "shims": config.shims.iter().map(|s| json!({"name": s.name, "binary": s.binary})).collect::<Vec<_>>(),
        "skipped_shims": config.missing.iter().map(|s| json!({"name": s.name, "binary": s.binary})).collect::<Vec<_>>(),
        "metrics": metrics,
    });
    let json_path = config.out.join("results.json");
    fs::write(&json_path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    let md_path = config.out.join("results.md");
    let text = format!(
        "{}\n\n{}",
        host_line(&host),
        report::markdown(metrics, names)
    );
    fs::write(&md_path, text).with_context(|| format!("write {}", md_path.display()))?;
    let svg_path = config.out.join("results.svg");
    let charted = chart::write(&svg_path, metrics, names)?;
    println!("results: {} and {}", json_path.display(), md_path.display());
    if charted {
        println!("chart: {}", svg_path.display());
    }
    Ok(())
}

/// `results.md`'s first line: when and where.
fn host_line(host: &serde_json::Value) -> String {
    let text = |key: &str| host[key].as_str().unwrap_or("?").to_owned();
    format!(
        "{} on {} ({} CPUs, kernel {}; {}; {})",
        text("date"),
        text("hostname"),
        host["cpus"],
        text("kernel"),
        text("containerd"),
        text("runc"),
    )
}

/// Kernel, CPUs and tool versions, so results can be compared across machines.
fn host_info() -> serde_json::Value {
    let version = |program: &str, arg: &str| {
        proc::output(Command::new(program).arg(arg), Duration::from_secs(10))
            .map(|text| text.lines().next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    json!({
        "kernel": fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "runc": version("runc", "--version"),
        "containerd": version("containerd", "--version"),
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "date": version("date", "-uIseconds"),
        "hostname": fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
    })
}
