//! The commands that drive an existing container: ps, kill, pause, resume, stats,
//! events, delete, list.

use std::os::unix::net::UnixStream;
use std::time::SystemTime;

use anyhow::{Context, Result};
use wren_manager::client::{KillScope, Metrics};
use wren_manager::events::{Event, EventPayload, EventSink};
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
            if force && shim.client().kill(id, "", 9, KillScope::All).is_ok() {
                shim.client().wait(id, "")?;
            }
            shim.teardown().map_err(|e| {
                anyhow::Error::new(e).context(format!("{id} may still be running: stop it with `wrenctl kill {id}` or use `delete -f`"))
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

/// Serves the events socket of each named (default: every recorded) container and
/// prints events until interrupted.
pub fn events(ctl: &Ctl, ids: &[String]) -> Result<()> {
    let records = if ids.is_empty() {
        ctl.state.list(&ctl.namespace)?
    } else {
        ids.iter()
            .map(|id| ctl.state.load(&ctl.namespace, id))
            .collect::<Result<_, _>>()?
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut sinks = Vec::new();
    for record in &records {
        if UnixStream::connect(&record.events_address).is_ok() {
            eprintln!("{}: events already received by another wrenctl", record.id);
            continue;
        }
        sinks.push(EventSink::bind(&record.events_address, tx.clone())?);
    }
    drop(tx);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = stop_tx.send(());
        }
    });
    loop {
        crossbeam_channel::select! {
            recv(rx) -> event => match event {
                Ok(event) => print_event(&event),
                Err(_) => break,
            },
            recv(stop_rx) -> _ => break,
        }
    }
    drop(sinks);
    Ok(())
}

fn print_event(event: &Event) {
    let at = event
        .timestamp
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or_else(String::new, |d| {
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
        });
    let detail = match &event.payload {
        EventPayload::Create(e) => format!("pid={}", e.pid),
        EventPayload::Start(e) => format!("pid={}", e.pid),
        EventPayload::ExecAdded(e) => format!("exec_id={}", e.exec_id),
        EventPayload::ExecStarted(e) => format!("exec_id={} pid={}", e.exec_id, e.pid),
        EventPayload::Exit(e) => format!("id={} pid={} exit_status={}", e.id, e.pid, e.exit_status),
        EventPayload::Delete(e) => format!("pid={} exit_status={}", e.pid, e.exit_status),
        EventPayload::Unknown(any) => format!("type={}", any.type_url),
        _ => String::new(),
    };
    println!(
        "{at} {} {} {} {detail}",
        event.namespace,
        event.topic,
        event.payload.container_id()
    );
}
