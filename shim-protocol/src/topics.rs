//! Event topics and the envelope a shim forwards to containerd.
//!
//! containerd routes an event by its topic, and its `publish` path derives nothing from the
//! payload, so the topic and the payload type must agree. [`TaskEvent`] ties each event message to
//! its topic at compile time; [`topic_for`] answers the same question from a full name.

use std::time::SystemTime;

use protobuf::MessageFull;

use crate::any::{full_name, pack, AnyError};
use crate::events::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM,
    TaskPaused, TaskResumed, TaskStart,
};
use crate::timestamp::to_timestamp;
use crate::types::Envelope;

/// Topic of [`TaskCreate`].
pub const TASK_CREATE: &str = "/tasks/create";
/// Topic of [`TaskStart`].
pub const TASK_START: &str = "/tasks/start";
/// Topic of [`TaskDelete`].
pub const TASK_DELETE: &str = "/tasks/delete";
/// Topic of [`TaskExit`].
pub const TASK_EXIT: &str = "/tasks/exit";
/// Topic of [`TaskOOM`].
pub const TASK_OOM: &str = "/tasks/oom";
/// Topic of [`TaskExecAdded`].
pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
/// Topic of [`TaskExecStarted`].
pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
/// Topic of [`TaskPaused`].
pub const TASK_PAUSED: &str = "/tasks/paused";
/// Topic of [`TaskResumed`].
pub const TASK_RESUMED: &str = "/tasks/resumed";
/// Topic of [`TaskCheckpointed`].
pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";

/// A task event message together with the topic containerd expects it under.
pub trait TaskEvent: MessageFull {
    /// The topic, e.g. `/tasks/exit`.
    const TOPIC: &'static str;
}

/// Implements [`TaskEvent`] and fills the name-to-topic table from one list.
macro_rules! task_events {
    ($($event:ident => $topic:ident),* $(,)?) => {
        $(impl TaskEvent for $event {
            const TOPIC: &'static str = $topic;
        })*

        /// The topic of a task event given its full proto name
        /// (`containerd.events.TaskExit` → `/tasks/exit`); `None` for anything else.
        pub fn topic_for(event_full_name: &str) -> Option<&'static str> {
            $(if event_full_name == full_name::<$event>() {
                return Some($topic);
            })*
            None
        }
    };
}

task_events! {
    TaskCreate => TASK_CREATE,
    TaskStart => TASK_START,
    TaskDelete => TASK_DELETE,
    TaskExit => TASK_EXIT,
    TaskOOM => TASK_OOM,
    TaskExecAdded => TASK_EXEC_ADDED,
    TaskExecStarted => TASK_EXEC_STARTED,
    TaskPaused => TASK_PAUSED,
    TaskResumed => TASK_RESUMED,
    TaskCheckpointed => TASK_CHECKPOINTED,
}

/// Wraps `event` in the envelope `Forward` carries: stamped `at`, in `namespace`, under its topic.
///
/// # Errors
/// [`AnyError::Encode`] if the event cannot be serialised.
pub fn envelope<E: TaskEvent>(
    namespace: &str,
    event: &E,
    at: SystemTime,
) -> Result<Envelope, AnyError> {
    let mut envelope = Envelope::new();
    envelope.timestamp = protobuf::MessageField::some(to_timestamp(at));
    envelope.namespace = namespace.to_owned();
    envelope.topic = E::TOPIC.to_owned();
    envelope.event = protobuf::MessageField::some(pack(event)?);
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::any::unpack;

    #[test]
    fn topic_for_maps_every_task_event() {
        let expected = [
            ("containerd.events.TaskCreate", "/tasks/create"),
            ("containerd.events.TaskStart", "/tasks/start"),
            ("containerd.events.TaskDelete", "/tasks/delete"),
            ("containerd.events.TaskExit", "/tasks/exit"),
            ("containerd.events.TaskOOM", "/tasks/oom"),
            ("containerd.events.TaskExecAdded", "/tasks/exec-added"),
            ("containerd.events.TaskExecStarted", "/tasks/exec-started"),
            ("containerd.events.TaskPaused", "/tasks/paused"),
            ("containerd.events.TaskResumed", "/tasks/resumed"),
            ("containerd.events.TaskCheckpointed", "/tasks/checkpointed"),
        ];
        for (name, topic) in expected {
            assert_eq!(topic_for(name), Some(topic), "{name}");
        }
        assert_eq!(topic_for("containerd.events.TaskIO"), None);
        assert_eq!(topic_for("containerd.runc.v1.Options"), None);
    }

    #[test]
    fn envelope_carries_topic_namespace_time_and_payload() {
        let mut start = TaskStart::new();
        start.container_id = "c1".into();
        start.pid = 7;
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 5);
        let env = envelope("ns1", &start, at).unwrap();
        assert_eq!(env.topic, "/tasks/start");
        assert_eq!(env.namespace, "ns1");
        assert_eq!(env.timestamp.seconds, 1_700_000_000);
        assert_eq!(env.timestamp.nanos, 5);
        assert_eq!(env.event.type_url, "containerd.events.TaskStart");
        assert_eq!(unpack::<TaskStart>(&env.event).unwrap(), start);
    }
}
