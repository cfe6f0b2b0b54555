//! The commands that drive an existing container: ps, kill, stop, pause, resume, stats,
//! delete, list.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::{Context, Result};
use wren_manager::client::{KillScope, Metrics};
use wren_manager::events::EventSink;
use wren_manager::shim::Shim;
use wren_manager::state::{BundleOwner, ContainerRecord};

use super::args::parse_signal;
use super::Ctl;

fn connect(ctl: &Ctl, id: &str) -> Result<(ContainerRecord, Shim)> {
    let record = ctl.state.load(&ctl.namespace, id)?;
    let shim = Shim::attach(ctl.shim_config(&record), record.address()).with_context(|| {
        format!("the shim of {id} does not answer (delete it with `wrenctl delete {id}`)")
    })?;
    Ok((record, shim))
}

pub fn ps(ctl: &Ctl, id: &str) -> Result<()> {
    let (_, shim) = connect(ctl, id)?;
    println!("{:<10} EXEC", "PID");
    for process in shim.client().pids(id)? {
        println!(
            "{:<10} {}",
            process.pid,
            process.exec_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

pub fn kill(ctl: &Ctl, id: &str, signal: &str, all: bool) -> Result<()> {
    let signal = parse_signal(signal)?;
    let (_, shim) = connect(ctl, id)?;
    let scope = if all {
        KillScope::All
    } else {
        KillScope::Process
    };
    shim.client().kill(id, "", signal, scope)?;
    Ok(())
}

/// `docker stop`: TERM to the init, up to `grace` for it to exit, then KILL to every
/// process. The container stays (stopped) for `delete`.
pub fn stop(ctl: &Ctl, id: &str, grace: Duration) -> Result<()> {
    let (_, shim) = connect(ctl, id)?;
    let client = shim.client().clone();
    match client.kill(id, "", TERM, KillScope::Process) {
        // Not found: the init already exited; Wait below returns at once.
        Err(err) if !err.is_not_found() => return Err(err.into()),
        _ => {}
    }
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let (waiter, wait_id) = (client.clone(), id.to_owned());
    // Wait blocks until the exit; a thread lets the grace period run beside it.
    std::thread::spawn(move || {
        let _ = done_tx.send(waiter.wait(&wait_id, ""));
    });
    let waited = match done_rx.recv_timeout(grace) {
        Ok(waited) => waited,
        Err(_) => {
            client.kill(id, "", KILL, KillScope::All)?;
            done_rx.recv().context("the wait for the exit was lost")?
        }
    };
    waited.with_context(|| format!("waiting for {id} to exit"))?;
    Ok(())
}

const TERM: u32 = 15;
const KILL: u32 = 9;

pub fn pause(ctl: &Ctl, id: &str) -> Result<()> {
    Ok(connect(ctl, id)?.1.client().pause(id)?)
}

pub fn resume(ctl: &Ctl, id: &str) -> Result<()> {
    Ok(connect(ctl, id)?.1.client().resume(id)?)
}

pub fn stats(ctl: &Ctl, id: &str) -> Result<()> {
    let (_, shim) = connect(ctl, id)?;
    match shim.client().stats(id)? {
        Metrics::V1(m) => {
            println!("cgroup          v1");
            let cpu = m.cpu.usage.as_ref().map(|u| u.total).unwrap_or_default();
            println!("cpu usage       {} ns", cpu);
            if let Some(mem) = m.memory.usage.as_ref() {
                println!(
                    "memory usage    {} bytes (limit {}, max {})",
                    mem.usage, mem.limit, mem.max
                );
            }
            println!("memory rss      {} bytes", m.memory.rss);
            println!("memory cache    {} bytes", m.memory.cache);
            println!(
                "pids            {} (limit {})",
                m.pids.current, m.pids.limit
            );
        }
        Metrics::V2(m) => {
            println!("cgroup          v2");
            println!("cpu usage       {} us", m.cpu.usage_usec);
            println!(
                "memory usage    {} bytes (limit {})",
                m.memory.usage, m.memory.usage_limit
            );
            println!(
                "pids            {} (limit {})",
                m.pids.current, m.pids.limit
            );
        }
    }
    Ok(())
}

pub fn list(ctl: &Ctl) -> Result<()> {
    println!("{:<24} {:<10} {:<8} SHIM", "ID", "STATUS", "PID");
    for record in ctl.state.list(&ctl.namespace)? {
        let (status, pid) = match Shim::attach(ctl.shim_config(&record), record.address()) {
            Ok(shim) => match shim.client().state(&record.id, "") {
                Ok(state) => (
                    format!("{:?}", state.status.enum_value_or_default()).to_lowercase(),
                    state.pid,
                ),
                Err(_) => ("unknown".to_owned(), 0),
            },
            Err(_) => ("shim-dead".to_owned(), 0),
        };
        println!(
            "{:<24} {:<10} {:<8} {}",
            record.id,
            status,
            pid,
            record.shim.display()
        );
    }
    Ok(())
}

pub fn delete(ctl: &Ctl, id: &str, force: bool) -> Result<()> {
    let record = ctl.state.load(&ctl.namespace, id)?;
    // A shim flushes its last events before exiting and waits out its retries when
    // nobody listens, so listen (unless `wrenctl events` already does).
    let _sink = if UnixStream::connect(&record.events_address).is_err() {
        EventSink::bind(&record.events_address, crossbeam_channel::unbounded().0).ok()
    } else {
        None
    };
    match Shim::attach(ctl.shim_config(&record), record.address()) {
        Ok(shim) => {
            if force && shim.client().kill(id, "", KILL, KillScope::All).is_ok() {
                shim.client().wait(id, "")?;
            }
            shim.teardown().map_err(|e| {
                anyhow::Error::new(e).context(format!(
                    "{id} may still be running: stop it with `wrenctl stop {id}`, \
                     or kill and delete it at once with `wrenctl delete -f {id}`"
                ))
            })?;
        }
        Err(_) => {
            // The shim is gone: only its delete action can clean up after it.
            ctl.shim_config(&record)
                .delete_action()
                .context("cleaning up after a dead shim")?;
            let _ = std::fs::remove_file(&record.socket);
        }
    }
    if record.bundle_owner == BundleOwner::User {
        let _ = std::fs::remove_file(record.bundle.join("log"));
    }
    ctl.state.remove(&ctl.namespace, id)?;
    Ok(())
}
