//! Packing messages into `google.protobuf.Any` the way containerd's `typeurl` does.
//!
//! containerd names a protobuf payload by its bare full name (`containerd.events.TaskExit`,
//! `containerd.runc.v1.Options`), without the `type.googleapis.com/` prefix that protobuf's own
//! `Any::pack` adds. When reading, containerd resolves a URL by the part after its last `/`,
//! so [`unpack`] accepts both spellings.
//!
//! The full name of a message is looked up in a fixed table ([`full_name`]) rather than taken
//! from `MessageFull::descriptor()`: the first call of `descriptor()` builds the reflection
//! tables of the message's whole `.proto` file and its imports, and keeps them for the life
//! of the process (some 60 KiB of heap for `task_events.proto`, more for the cgroup metrics).
//! That was a fifth of an idle shim's private memory, spent to learn a constant string.

use std::any::TypeId;
use std::borrow::Cow;

use protobuf::well_known_types::any::Any;
use protobuf::MessageFull;

use crate::{cgroups_v1, cgroups_v2, events, runc, runtimeoptions};

/// Type URL of a JSON-encoded OCI runtime-spec `Process` (`ExecProcessRequest.spec`).
pub const RUNTIME_SPEC_PROCESS_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// Type URL of a JSON-encoded OCI runtime-spec `LinuxResources` (`UpdateTaskRequest.resources`).
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Why a message could not be packed into or unpacked from an `Any`.
#[derive(Debug, thiserror::Error)]
pub enum AnyError {
    /// Serialising the message failed.
    #[error("failed to encode {type_name}")]
    Encode {
        /// Full name of the message being packed.
        type_name: String,
        /// The protobuf error.
        #[source]
        source: protobuf::Error,
    },
    /// The `Any` holds a different message type than the one asked for.
    #[error("any holds {type_url:?}, expected {expected}")]
    TypeMismatch {
        /// The full name asked for.
        expected: String,
        /// The URL found in the `Any`.
        type_url: String,
    },
    /// The payload is not a valid encoding of the expected message.
    #[error("failed to decode {type_name}")]
    Decode {
        /// Full name of the message being unpacked.
        type_name: String,
        /// The protobuf error.
        #[source]
        source: protobuf::Error,
    },
}

/// Packs `message` into an `Any` whose type URL is the message's full proto name.
///
/// # Errors
/// [`AnyError::Encode`] if serialisation fails (e.g. the message exceeds 2 GiB).
pub fn pack<M: MessageFull>(message: &M) -> Result<Any, AnyError> {
    let type_name = full_name::<M>().into_owned();
    let value = message
        .write_to_bytes()
        .map_err(|source| AnyError::Encode {
            type_name: type_name.clone(),
            source,
        })?;
    let mut any = Any::new();
    any.type_url = type_name;
    any.value = value;
    Ok(any)
}

/// Whether `any` holds a message of type `M` (by the name after the URL's last `/`).
pub fn is<M: MessageFull>(any: &Any) -> bool {
    type_name_of_url(&any.type_url) == full_name::<M>()
}

/// Unpacks an `M` from `any`, checking the type URL first.
///
/// # Errors
/// [`AnyError::TypeMismatch`] if `any` names another type, [`AnyError::Decode`] if the payload
/// does not decode.
pub fn unpack<M: MessageFull>(any: &Any) -> Result<M, AnyError> {
    let expected = full_name::<M>();
    if type_name_of_url(&any.type_url) != expected {
        return Err(AnyError::TypeMismatch {
            expected: expected.into_owned(),
            type_url: any.type_url.clone(),
        });
    }
    M::parse_from_bytes(&any.value).map_err(|source| AnyError::Decode {
        type_name: expected.into_owned(),
        source,
    })
}

/// The full proto name of `M` (`containerd.events.TaskExit`).
///
/// Answered from a fixed table for every message shims pack or unpack, so that no
/// reflection tables are built (see the module docs); any other message falls back to
/// `M::descriptor()`.
pub fn full_name<M: MessageFull>() -> Cow<'static, str> {
    let id = TypeId::of::<M>();
    match KNOWN_NAMES.iter().find(|(type_id, _)| type_id() == id) {
        Some((_, name)) => Cow::Borrowed(name),
        None => Cow::Owned(M::descriptor().full_name().to_owned()),
    }
}

/// Builds [`KNOWN_NAMES`] from `(type, package)` pairs; the name is the package and the type's
/// own name, as in the `.proto` files (checked against the descriptors by a test).
macro_rules! known_names {
    ($($module:ident :: $message:ident in $package:literal),* $(,)?) => {
        /// The messages [`full_name`] knows without reflection, by type.
        const KNOWN_NAMES: &[(fn() -> TypeId, &str)] = &[
            $((TypeId::of::<$module::$message>, concat!($package, ".", stringify!($message))),)*
        ];
    };
}

known_names! {
    events::TaskCreate in "containerd.events",
    events::TaskStart in "containerd.events",
    events::TaskDelete in "containerd.events",
    events::TaskIO in "containerd.events",
    events::TaskExit in "containerd.events",
    events::TaskOOM in "containerd.events",
    events::TaskExecAdded in "containerd.events",
    events::TaskExecStarted in "containerd.events",
    events::TaskPaused in "containerd.events",
    events::TaskResumed in "containerd.events",
    events::TaskCheckpointed in "containerd.events",
    runc::Options in "containerd.runc.v1",
    runc::CheckpointOptions in "containerd.runc.v1",
    runc::ProcessDetails in "containerd.runc.v1",
    runtimeoptions::Options in "runtimeoptions.v1",
    cgroups_v1::Metrics in "io.containerd.cgroups.v1",
    cgroups_v2::Metrics in "io.containerd.cgroups.v2",
}

/// The message name a type URL designates: everything after its last `/`.
fn type_name_of_url(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::TaskExit;
    use crate::runc::Options;

    #[test]
    fn pack_uses_bare_full_name_and_round_trips() {
        let mut exit = TaskExit::new();
        exit.container_id = "c1".into();
        exit.pid = 42;
        exit.exit_status = 137;
        let any = pack(&exit).unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert!(is::<TaskExit>(&any));
        assert_eq!(unpack::<TaskExit>(&any).unwrap(), exit);
    }

    #[test]
    fn unpack_accepts_prefixed_url() {
        let mut options = Options::new();
        options.root = "/run/x".into();
        let mut any = pack(&options).unwrap();
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert_eq!(unpack::<Options>(&any).unwrap().root, "/run/x");
    }

    #[test]
    fn unpack_rejects_other_type() {
        let any = pack(&Options::new()).unwrap();
        let err = unpack::<TaskExit>(&any).unwrap_err();
        assert!(matches!(
            &err,
            AnyError::TypeMismatch { expected, type_url }
                if expected == "containerd.events.TaskExit" && type_url == "containerd.runc.v1.Options"
        ));
    }

    #[test]
    fn known_names_match_the_descriptors() {
        fn check<M: MessageFull>() {
            assert_eq!(full_name::<M>(), M::descriptor().full_name());
            assert!(matches!(full_name::<M>(), Cow::Borrowed(_)));
        }
        check::<events::TaskCreate>();
        check::<events::TaskStart>();
        check::<events::TaskDelete>();
        check::<events::TaskIO>();
        check::<events::TaskExit>();
        check::<events::TaskOOM>();
        check::<events::TaskExecAdded>();
        check::<events::TaskExecStarted>();
        check::<events::TaskPaused>();
        check::<events::TaskResumed>();
        check::<events::TaskCheckpointed>();
        check::<runc::Options>();
        check::<runc::CheckpointOptions>();
        check::<runc::ProcessDetails>();
        check::<runtimeoptions::Options>();
        check::<cgroups_v1::Metrics>();
        check::<cgroups_v2::Metrics>();
        assert_eq!(KNOWN_NAMES.len(), 17, "every listed type is checked above");
    }

    #[test]
    fn unknown_types_fall_back_to_reflection() {
        let name = full_name::<crate::types::Envelope>();
        assert_eq!(name, "containerd.types.Envelope");
        assert!(matches!(name, Cow::Owned(_)));
    }

    #[test]
    fn unpack_reports_corrupt_payload() {
        let mut any = pack(&TaskExit::new()).unwrap();
        // Field 1, wire type 2 (length-delimited), claims 5 bytes but carries 1.
        any.value = vec![0x0a, 0x05, b'x'];
        assert!(matches!(
            unpack::<TaskExit>(&any),
            Err(AnyError::Decode { .. })
        ));
    }
}
