//! `ctr events`, recorded to a file for the test to poll.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Containerd, Runtime, STATE_DEADLINE};
use crate::version::ConfigFormat;

/// How long to wait for an event the reference shim may never deliver.
const LOSSY_WAIT: Duration = Duration::from_secs(5);

/// A running `ctr events` subscription; killed and reaped on drop.
#[derive(Debug)]
pub struct EventLog {
    child: Child,
    path: PathBuf,
}

/// One line of `ctr events`: `<date> <time> +0000 UTC <namespace> <topic> <json>`.
#[derive(Debug, Clone)]
pub struct Event {
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// The event body as JSON.
    pub body: serde_json::Value,
}

impl Containerd {
    /// Subscribes to events and returns once the subscription is known to be live.
    pub fn events(&self) -> EventLog {
        let path = self.scratch("events").join(crate::unique_id("events"));
        let file = File::create(&path).expect("create events file");
        let child = self
            .ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ctr events");
        let log = EventLog { child, path };
        self.sync_events(&log);
        log
    }

    /// `ctr events` gives no sign of having subscribed, so publish namespace updates (a
    /// label change) until one shows up in the log: every later event will be seen too.
    fn sync_events(&self, log: &EventLog) {
        let deadline = Instant::now() + STATE_DEADLINE;
        for attempt in 0.. {
            let label = format!("wren-events-sync={attempt}");
            self.ctr_ok(&["namespaces", "label", self.namespace(), &label]);
            if log.events().iter().any(|e| e.topic == "/namespaces/update") {
                return;
            }
            assert!(Instant::now() < deadline, "ctr events never subscribed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl EventLog {
    /// Every event recorded so far.
    pub fn events(&self) -> Vec<Event> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        text.lines().filter_map(parse_event).collect()
    }

    /// Topics of the `/tasks/*` events about container `id`, in order.
    pub fn task_topics(&self, id: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.topic.starts_with("/tasks/") && e.body["container_id"] == id)
            .map(|e| e.topic)
            .collect()
    }

    /// Waits (bounded) for the first event with `topic` whose body matches `pred`.
    pub fn wait_for(&self, topic: &str, pred: impl Fn(&serde_json::Value) -> bool) -> Event {
        self.wait_within(topic, pred, STATE_DEADLINE)
            .unwrap_or_else(|| panic!("no {topic} event; saw:\n{}", self.raw()))
    }

    fn wait_within(
        &self,
        topic: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
        within: Duration,
    ) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self
                .events()
                .into_iter()
                .find(|e| e.topic == topic && pred(&e.body))
            {
                return Some(event);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After `ctr run --rm` of container `id`: waits for its `/containers/delete`, then as
    /// [`EventLog::wait_for_task_delete`] (from 2.x on `/tasks/delete` may come second).
    pub fn wait_for_deletes(&self, cd: &Containerd, id: &str) -> bool {
        self.wait_for("/containers/delete", |body| body["id"] == id);
        self.wait_for_task_delete(cd, id)
    }

    /// Waits for container `id`'s `/tasks/delete` and returns whether it came. The 2.1 Go
    /// shim, the reference, sometimes exits after its last delete before that event reaches
    /// containerd, so on 2.x a Go shim's missing one is noted, not a failure; wren's must
    /// always arrive.
    pub fn wait_for_task_delete(&self, cd: &Containerd, id: &str) -> bool {
        let lossy = cd.runtime() == Runtime::Go && cd.version().config_format() == ConfigFormat::V3;
        if !lossy {
            self.wait_for("/tasks/delete", |body| body["container_id"] == id);
            return true;
        }
        let came = self
            .wait_within(
                "/tasks/delete",
                |body| body["container_id"] == id,
                LOSSY_WAIT,
            )
            .is_some();
        if !came {
            eprintln!("note: the Go shim's /tasks/delete for {id} never reached containerd");
        }
        came
    }

    /// The exit status in the init process's `/tasks/exit` event for container `id`.
    pub fn wait_exit_status(&self, id: &str) -> i64 {
        let exit = self.wait_for("/tasks/exit", |b| b["container_id"] == id && b["id"] == id);
        // A zero exit status is omitted from the JSON (proto3 default).
        exit.body["exit_status"].as_i64().unwrap_or(0)
    }

    /// The recorded text, for assertion messages.
    pub fn raw(&self) -> String {
        fs::read_to_string(&self.path).unwrap_or_default()
    }
}

fn parse_event(line: &str) -> Option<Event> {
    // Date, time, offset, zone and namespace come before the topic.
    let mut fields = line.splitn(7, ' ');
    let topic = fields.nth(5)?.to_owned();
    let body = serde_json::from_str(fields.next().unwrap_or("{}")).unwrap_or_default();
    Some(Event { topic, body })
}

impl Drop for EventLog {
    fn drop(&mut self) {
        // The child is ours and unreaped; kill errors mean it already exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
