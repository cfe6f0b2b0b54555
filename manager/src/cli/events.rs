//! `wrenctl events`: serves the events sockets of detached containers and prints what
//! their shims publish, until interrupted, like `ctr events`.

use std::collections::HashSet;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use anyhow::Result;
use crossbeam_channel::Sender;
use wren_manager::events::{Event, EventPayload, EventSink};
use wren_manager::state::ContainerRecord;
use wren_shim_protocol::timestamp::rfc3339;

use super::Ctl;

/// How often the state directory is looked at again for containers started since.
const RESCAN: Duration = Duration::from_secs(1);

/// Prints the events of the named containers, or of every container, including those
/// started later, until SIGINT or SIGTERM.
pub fn events(ctl: &Ctl, ids: &[String]) -> Result<()> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut listening = Listening::default();
    if ids.is_empty() {
        listening.add(&ctl.state.list(&ctl.namespace)?, &tx, Report::Busy);
    } else {
        let records = ids
            .iter()
            .map(|id| ctl.state.load(&ctl.namespace, id))
            .collect::<Result<Vec<_>, _>>()?;
        listening.add(&records, &tx, Report::Busy);
    }
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
    // Only "every container" follows new ones; named ones are all there from the start.
    let rescan = if ids.is_empty() {
        crossbeam_channel::tick(RESCAN)
    } else {
        crossbeam_channel::never()
    };
    loop {
        crossbeam_channel::select! {
            recv(rx) -> event => match event {
                Ok(event) => print_event(&event),
                Err(_) => break,
            },
            recv(rescan) -> _ => {
                if let Ok(records) = ctl.state.list(&ctl.namespace) {
                    listening.add(&records, &tx, Report::Quiet);
                }
            }
            recv(stop_rx) -> _ => break,
        }
    }
    Ok(())
}

/// Whether a socket someone else already serves is worth a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Busy,
    Quiet,
}

/// The sinks this wrenctl serves, by container id.
#[derive(Default)]
struct Listening {
    ids: HashSet<String>,
    sinks: Vec<EventSink>,
}

impl Listening {
    fn add(&mut self, records: &[ContainerRecord], tx: &Sender<Event>, report: Report) {
        for record in records {
            if self.ids.contains(&record.id) {
                continue;
            }
            // An attached `wrenctl run` (or another `wrenctl events`) serves it already.
            if UnixStream::connect(&record.events_address).is_ok() {
                if report == Report::Busy {
                    eprintln!("{}: events already received by another wrenctl", record.id);
                }
                continue;
            }
            match EventSink::bind(&record.events_address, tx.clone()) {
                Ok(sink) => {
                    self.sinks.push(sink);
                    self.ids.insert(record.id.clone());
                }
                Err(err) if report == Report::Busy => eprintln!("{}: {err}", record.id),
                Err(_) => {}
            }
        }
    }
}

fn print_event(event: &Event) {
    let at = event.timestamp.map_or_else(String::new, rfc3339);
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
