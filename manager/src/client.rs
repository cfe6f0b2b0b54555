//! A typed client for a shim's task service (`containerd.task.v2.Task` or `v3`).
//!
//! Requests are sent by hand rather than through the generated `TaskClient` so that the
//! service name follows what the shim announced at `start` (v2 or v3); the messages are
//! the same for both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use protobuf::{Message, MessageField};
use wren_shim_protocol::any::{self, AnyError};
use wren_shim_protocol::timestamp::from_timestamp;
use wren_shim_protocol::{cgroups_v1, cgroups_v2, runc, task, types};

use crate::address::{ShimAddress, TaskApi};
use crate::bundle::MountSpec;

/// ttrpc metadata key carrying the containerd namespace.
const NAMESPACE_KEY: &str = "containerd-namespace-ttrpc";
/// containerd's budget for `Shutdown` (`io.containerd.timeout.shim.shutdown`).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors from task RPCs.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Connecting to the shim's socket failed.
    #[error("failed to connect to shim socket {path}")]
    Dial {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ttrpc::Error,
    },
    /// The shim answered with an error status.
    #[error("{method}: {code:?}: {message}")]
    Rpc {
        /// The RPC.
        method: &'static str,
        /// The ttrpc status code.
        code: ttrpc::Code,
        /// The shim's message.
        message: String,
    },
    /// The request never got an answer: the connection broke or timed out.
    #[error("{method}: no answer from shim")]
    Transport {
        /// The RPC.
        method: &'static str,
        /// The cause.
        #[source]
        source: ttrpc::Error,
    },
    /// Encoding the request or decoding the response failed.
    #[error("{method}: malformed message")]
    Codec {
        /// The RPC.
        method: &'static str,
        /// The cause.
        #[source]
        source: protobuf::Error,
    },
    /// Packing or unpacking an `Any` failed.
    #[error("{method}: bad Any payload")]
    Any {
        /// The RPC.
        method: &'static str,
        /// The cause.
        #[source]
        source: AnyError,
    },
    /// A JSON payload (process spec, resources) could not be encoded.
    #[error("{method}: failed to encode JSON payload")]
    Json {
        /// The RPC.
        method: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `Stats` returned a type the manager cannot decode.
    #[error("stats: unknown metrics type {type_url:?}")]
    StatsType {
        /// The Any type URL.
        type_url: String,
    },
}

impl TaskError {
    /// The ttrpc status code, for errors the shim returned.
    pub fn code(&self) -> Option<ttrpc::Code> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the shim said the object does not exist (or the process already finished).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ttrpc::Code::NOT_FOUND)
    }

    /// Whether the connection to the shim is gone (a dead or exiting shim).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Transport { .. } | Self::Dial { .. })
    }
}

/// Everything `Create` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateTask {
    /// Container id.
    pub id: String,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Mounts the shim performs on `<bundle>/rootfs`.
    pub rootfs: Vec<MountSpec>,
    /// Whether the init process gets a pty.
    pub terminal: bool,
    /// stdin FIFO path ("" for none).
    pub stdin: String,
    /// stdout FIFO path or URI ("" for none).
    pub stdout: String,
    /// stderr FIFO path or URI ("" for none).
    pub stderr: String,
    /// runc runtime options, sent as `Any(containerd.runc.v1.Options)`.
    pub options: Option<runc::Options>,
    /// A checkpoint image directory to restore from ("" to create afresh); the shim
    /// restores it when the init is started.
    pub checkpoint: String,
}

/// Everything `Exec` needs.
#[derive(Debug, Clone, Default)]
pub struct ExecProcess {
    /// Container id.
    pub id: String,
    /// Exec id, unique within the container.
    pub exec_id: String,
    /// Whether the process gets a pty.
    pub terminal: bool,
    /// stdin FIFO path ("" for none).
    pub stdin: String,
    /// stdout FIFO path ("" for none).
    pub stdout: String,
    /// stderr FIFO path ("" for none).
    pub stderr: String,
    /// The OCI `process` object (JSON), sent as an `Any`.
    pub spec: serde_json::Value,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// The pid it had (0 where the RPC does not report one).
    pub pid: u32,
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When it exited, if reported.
    pub at: Option<SystemTime>,
}

/// Whether `Kill` signals one process or every process of the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillScope {
    /// Only the addressed process.
    Process,
    /// All processes in the container (`runc kill --all`).
    All,
}

/// One entry of `Pids`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Host pid.
    pub pid: u32,
    /// The exec id, when the shim attached `ProcessDetails`.
    pub exec_id: Option<String>,
}

/// Decoded `Stats`.
#[derive(Debug, Clone)]
pub enum Metrics {
    /// `io.containerd.cgroups.v1.Metrics`.
    V1(Box<cgroups_v1::Metrics>),
    /// `io.containerd.cgroups.v2.Metrics`.
    V2(Box<cgroups_v2::Metrics>),
}

/// A connection to one shim's task service. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct TaskClient {
    client: ttrpc::Client,
    api: TaskApi,
    namespace: String,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient")
            .field("api", &self.api)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl TaskClient {
    /// Dials the shim at `address` and speaks the service it announced, in `namespace`.
    pub fn connect(address: &ShimAddress, namespace: &str) -> Result<Self, TaskError> {
        let client =
            ttrpc::Client::connect(&address.ttrpc_uri()).map_err(|source| TaskError::Dial {
                path: address.socket.clone(),
                source,
            })?;
        Ok(Self {
            client,
            api: address.api,
            namespace: namespace.to_owned(),
        })
    }

    /// The task service version in use.
    pub fn api(&self) -> TaskApi {
        self.api
    }

    fn call<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, TaskError> {
        let payload = req
            .write_to_bytes()
            .map_err(|source| TaskError::Codec { method, source })?;
        let metadata = HashMap::from([(NAMESPACE_KEY.to_owned(), vec![self.namespace.clone()])]);
        let mut request = ttrpc::Request::new();
        request.set_service(self.api.service().to_owned());
        request.set_method(method.to_owned());
        request.set_metadata(ttrpc::context::to_pb(metadata));
        let nanos = timeout.map_or(0, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        request.set_timeout_nano(nanos);
        request.payload = payload;
        let response = self
            .client
            .request(request)
            .map_err(|source| match source {
                ttrpc::Error::RpcStatus(status) => TaskError::Rpc {
                    method,
                    code: status.code(),
                    message: status.message,
                },
                source => TaskError::Transport { method, source },
            })?;
        Resp::parse_from_bytes(&response.payload)
            .map_err(|source| TaskError::Codec { method, source })
    }

    /// `Create`: creates the container's init process (not yet started); returns its pid.
    pub fn create(&self, req: &CreateTask) -> Result<u32, TaskError> {
        let mut wire = task::CreateTaskRequest::new();
        wire.id.clone_from(&req.id);
        wire.bundle = req.bundle.display().to_string();
        wire.rootfs = req.rootfs.iter().map(to_wire_mount).collect();
        wire.terminal = req.terminal;
        wire.stdin.clone_from(&req.stdin);
        wire.stdout.clone_from(&req.stdout);
        wire.stderr.clone_from(&req.stderr);
        wire.checkpoint.clone_from(&req.checkpoint);
        if let Some(options) = &req.options {
            let packed = any::pack(options).map_err(|source| TaskError::Any {
                method: "Create",
                source,
            })?;
            wire.options = MessageField::some(packed);
        }
        let resp: task::CreateTaskResponse = self.call("Create", &wire, None)?;
        Ok(resp.pid)
    }

    /// `Start`: starts the init (`exec_id` empty) or an exec; returns its pid.
    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let req = task::StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp: task::StartResponse = self.call("Start", &req, None)?;
        Ok(resp.pid)
    }

    /// `Exec`: registers an additional process; [`TaskClient::start`] runs it.
    pub fn exec(&self, req: &ExecProcess) -> Result<(), TaskError> {
        let spec = json_any(any::RUNTIME_SPEC_PROCESS_TYPE_URL, &req.spec, "Exec")?;
        let wire = task::ExecProcessRequest {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            terminal: req.terminal,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            spec: MessageField::some(spec),
            ..Default::default()
        };
        self.call::<_, Empty>("Exec", &wire, None).map(drop)
    }

    /// `Kill`: sends `signal` to the process (or all of the container's processes).
    pub fn kill(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        scope: KillScope,
    ) -> Result<(), TaskError> {
        let req = task::KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            all: scope == KillScope::All,
            ..Default::default()
        };
        self.call::<_, Empty>("Kill", &req, None).map(drop)
    }

    /// `Wait`: blocks until the process has exited and its exit was published.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo, TaskError> {
        let req = task::WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp: task::WaitResponse = self.call("Wait", &req, None)?;
        Ok(ExitInfo {
            pid: 0,
            status: resp.exit_status,
            at: resp.exited_at.as_ref().and_then(time),
        })
    }

    /// `Delete`: removes a stopped process (the container itself for the init).
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<ExitInfo, TaskError> {
        let req = task::DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let resp: task::DeleteResponse = self.call("Delete", &req, None)?;
        Ok(exit_of(&resp))
    }

    /// `State` of the init or an exec.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<task::StateResponse, TaskError> {
        let req = task::StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("State", &req, None)
    }

    /// `Pids`: the container's processes, execs labelled with their id.
    pub fn pids(&self, id: &str) -> Result<Vec<ProcessEntry>, TaskError> {
        let req = task::PidsRequest {
            id: id.into(),
            ..Default::default()
        };
        let resp: task::PidsResponse = self.call("Pids", &req, None)?;
        resp.processes.iter().map(process_entry).collect()
    }

    /// `Stats`: the container's cgroup metrics, decoded by type URL.
    pub fn stats(&self, id: &str) -> Result<Metrics, TaskError> {
        let req = task::StatsRequest {
            id: id.into(),
            ..Default::default()
        };
        let resp: task::StatsResponse = self.call("Stats", &req, None)?;
        let stats = resp.stats.into_option().unwrap_or_default();
        let unpack_err = |source| TaskError::Any {
            method: "Stats",
            source,
        };
        if any::is::<cgroups_v1::Metrics>(&stats) {
            Ok(Metrics::V1(Box::new(
                any::unpack(&stats).map_err(unpack_err)?,
            )))
        } else if any::is::<cgroups_v2::Metrics>(&stats) {
            Ok(Metrics::V2(Box::new(
                any::unpack(&stats).map_err(unpack_err)?,
            )))
        } else {
            Err(TaskError::StatsType {
                type_url: stats.type_url,
            })
        }
    }

    /// `Pause`: freezes the container.
    pub fn pause(&self, id: &str) -> Result<(), TaskError> {
        let req = task::PauseRequest {
            id: id.into(),
            ..Default::default()
        };
        self.call::<_, Empty>("Pause", &req, None).map(drop)
    }

    /// `Resume`: thaws the container.
    pub fn resume(&self, id: &str) -> Result<(), TaskError> {
        let req = task::ResumeRequest {
            id: id.into(),
            ..Default::default()
        };
        self.call::<_, Empty>("Resume", &req, None).map(drop)
    }

    /// `Update`: applies OCI `LinuxResources` (JSON) to the container.
    pub fn update(&self, id: &str, resources: &serde_json::Value) -> Result<(), TaskError> {
        let resources = json_any(any::LINUX_RESOURCES_TYPE_URL, resources, "Update")?;
        let req = task::UpdateTaskRequest {
            id: id.into(),
            resources: MessageField::some(resources),
            ..Default::default()
        };
        self.call::<_, Empty>("Update", &req, None).map(drop)
    }

    /// `CloseIO`: closes the shim's stdin writer so the process sees end of file.
    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<(), TaskError> {
        let req = task::CloseIORequest {
            id: id.into(),
            exec_id: exec_id.into(),
            stdin: true,
            ..Default::default()
        };
        self.call::<_, Empty>("CloseIO", &req, None).map(drop)
    }

    /// `ResizePty`: sets the process's terminal size.
    pub fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let req = task::ResizePtyRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            width,
            height,
            ..Default::default()
        };
        self.call::<_, Empty>("ResizePty", &req, None).map(drop)
    }

    /// `Checkpoint`: dumps the container to `path` with CRIU.
    pub fn checkpoint(
        &self,
        id: &str,
        path: &str,
        options: Option<&runc::CheckpointOptions>,
    ) -> Result<(), TaskError> {
        let mut req = task::CheckpointTaskRequest {
            id: id.into(),
            path: path.into(),
            ..Default::default()
        };
        if let Some(options) = options {
            let packed = any::pack(options).map_err(|source| TaskError::Any {
                method: "Checkpoint",
                source,
            })?;
            req.options = MessageField::some(packed);
        }
        self.call::<_, Empty>("Checkpoint", &req, None).map(drop)
    }

    /// `Connect`: the liveness probe; returns the shim's and the task's pids.
    pub fn connect_task(&self, id: &str) -> Result<task::ConnectResponse, TaskError> {
        let req = task::ConnectRequest {
            id: id.into(),
            ..Default::default()
        };
        self.call("Connect", &req, None)
    }

    /// `Shutdown`: asks the shim to exit once it holds no container. A shim that exits
    /// before answering is a success, as it is for containerd.
    pub fn shutdown(&self, id: &str) -> Result<(), TaskError> {
        let req = task::ShutdownRequest {
            id: id.into(),
            ..Default::default()
        };
        match self.call::<_, Empty>("Shutdown", &req, Some(SHUTDOWN_TIMEOUT)) {
            Err(e) if e.is_connection_lost() => Ok(()),
            other => other.map(drop),
        }
    }
}

fn to_wire_mount(mount: &MountSpec) -> types::Mount {
    types::Mount {
        type_: mount.kind.clone(),
        source: mount.source.clone(),
        options: mount.options.clone(),
        ..Default::default()
    }
}

fn json_any(
    type_url: &str,
    value: &serde_json::Value,
    method: &'static str,
) -> Result<Any, TaskError> {
    let mut packed = Any::new();
    packed.type_url = type_url.to_owned();
    packed.value =
        serde_json::to_vec(value).map_err(|source| TaskError::Json { method, source })?;
    Ok(packed)
}

fn time(ts: &protobuf::well_known_types::timestamp::Timestamp) -> Option<SystemTime> {
    from_timestamp(ts).ok()
}

/// The exit a `DeleteResponse` reports (from the RPC or from the `delete` action).
pub(crate) fn exit_of(resp: &task::DeleteResponse) -> ExitInfo {
    ExitInfo {
        pid: resp.pid,
        status: resp.exit_status,
        at: resp.exited_at.as_ref().and_then(time),
    }
}

fn process_entry(info: &types::ProcessInfo) -> Result<ProcessEntry, TaskError> {
    let exec_id = match info.info.as_ref() {
        Some(details) if any::is::<runc::ProcessDetails>(details) => {
            let details: runc::ProcessDetails =
                any::unpack(details).map_err(|source| TaskError::Any {
                    method: "Pids",
                    source,
                })?;
            Some(details.exec_id)
        }
        _ => None,
    };
    Ok(ProcessEntry {
        pid: info.pid,
        exec_id,
    })
}
