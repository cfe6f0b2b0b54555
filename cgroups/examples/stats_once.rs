//! Locates a process's cgroup (default: this one), reads its stats once and prints this
//! process's resident memory. Built with and without the `cgroups-rs-backend` feature it gives
//! the binary size and memory cost of each backend (docs/architecture.md, "cgroups-rs,
//! measured"): `cargo build --release -p wren-cgroups --example stats_once [--features cgroups-rs-backend]`.

use std::hint::black_box;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pid = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => std::process::id(),
    };
    #[cfg(not(feature = "cgroups-rs-backend"))]
    let (backend, stats) = ("ours", wren_cgroups::Cgroup::for_pid(pid)?.stats()?);
    #[cfg(feature = "cgroups-rs-backend")]
    let (backend, stats) = (
        "cgroups-rs",
        wren_cgroups::rs_backend::RsCgroup::for_pid(pid)?.stats(),
    );
    black_box(&stats);
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map_or("?", |rest| rest.trim().trim_end_matches(" kB"))
            .to_owned()
    };
    println!(
        "{backend}: VmRSS {} KiB, VmHWM {} KiB",
        kib("VmRSS:"),
        kib("VmHWM:")
    );
    Ok(())
}
