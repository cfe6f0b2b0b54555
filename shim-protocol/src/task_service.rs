//! Serving and calling the task service under both of its names.
//!
//! containerd 1.6 to 2.2 call `containerd.task.v2.Task`; 2.x calls `containerd.task.v3.Task` when
//! a shim announces protocol version 3. The messages are byte-identical, so one generated service
//! serves both: [`create_task_v2_and_v3`] registers it twice, and [`NamedTaskClient`] calls either.

use std::collections::HashMap;
use std::sync::Arc;

use protobuf::{Message, MessageFull};

use crate::task::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use crate::task_ttrpc::{create_task, Task};
use protobuf::well_known_types::empty::Empty;

/// ttrpc's table of method handlers, keyed by `/<service>/<method>`.
pub type MethodTable = HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>>;

/// A version of the task API, i.e. a service name it is reachable under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskApi {
    /// `containerd.task.v2.Task`: containerd 1.6 and later, plain-address shims.
    V2,
    /// `containerd.task.v3.Task`: containerd 2.x with shims announcing version 3.
    V3,
}

impl TaskApi {
    /// Both versions, oldest first.
    pub const ALL: [TaskApi; 2] = [TaskApi::V2, TaskApi::V3];

    /// The fully qualified ttrpc service name.
    pub const fn service_name(self) -> &'static str {
        match self {
            TaskApi::V2 => "containerd.task.v2.Task",
            TaskApi::V3 => "containerd.task.v3.Task",
        }
    }
}

/// The service names a wren shim answers to: `containerd.task.v2.Task`, `containerd.task.v3.Task`.
pub fn task_service_names() -> [&'static str; 2] {
    TaskApi::ALL.map(TaskApi::service_name)
}

/// Method handlers serving `service` under both task service names; pass the result to
/// `ttrpc::Server::register_service`.
pub fn create_task_v2_and_v3(service: Arc<dyn Task + Send + Sync>) -> MethodTable {
    // Handlers are not Clone, so generate the table twice and rename the second copy.
    let mut methods = create_task(Arc::clone(&service));
    let v2_prefix = format!("/{}/", TaskApi::V2.service_name());
    let v3_prefix = format!("/{}/", TaskApi::V3.service_name());
    for (path, handler) in create_task(service) {
        let method = path.strip_prefix(&v2_prefix).unwrap_or(&path);
        methods.insert(format!("{v3_prefix}{method}"), handler);
    }
    methods
}

/// A task request message, with the method it is sent to and what that method answers.
pub trait TaskRequest: MessageFull {
    /// The RPC name, e.g. `Create`.
    const METHOD: &'static str;
    /// The response message type.
    type Response: MessageFull;
}

/// Implements [`TaskRequest`] for each request type of the `Task` service.
macro_rules! task_requests {
    ($($request:ident => $method:literal, $response:ident;)*) => {
        $(impl TaskRequest for $request {
            const METHOD: &'static str = $method;
            type Response = $response;
        })*
    };
}

task_requests! {
    StateRequest => "State", StateResponse;
    CreateTaskRequest => "Create", CreateTaskResponse;
    StartRequest => "Start", StartResponse;
    DeleteRequest => "Delete", DeleteResponse;
    PidsRequest => "Pids", PidsResponse;
    PauseRequest => "Pause", Empty;
    ResumeRequest => "Resume", Empty;
    CheckpointTaskRequest => "Checkpoint", Empty;
    KillRequest => "Kill", Empty;
    ExecProcessRequest => "Exec", Empty;
    ResizePtyRequest => "ResizePty", Empty;
    CloseIORequest => "CloseIO", Empty;
    UpdateTaskRequest => "Update", Empty;
    WaitRequest => "Wait", WaitResponse;
    StatsRequest => "Stats", StatsResponse;
    ConnectRequest => "Connect", ConnectResponse;
    ShutdownRequest => "Shutdown", Empty;
}

/// A task client that addresses a chosen service name (the generated `TaskClient` only knows v2).
#[derive(Clone)]
pub struct NamedTaskClient {
    client: ttrpc::Client,
    api: TaskApi,
}

impl std::fmt::Debug for NamedTaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedTaskClient")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl NamedTaskClient {
    /// Calls the task service as `api` over `client`.
    pub fn new(client: ttrpc::Client, api: TaskApi) -> Self {
        Self { client, api }
    }

    /// The API version this client calls.
    pub fn api(&self) -> TaskApi {
        self.api
    }

    /// Sends `request` to its method and decodes the answer.
    ///
    /// # Errors
    /// The ttrpc error: transport failure, timeout, a non-OK status from the server
    /// (`ttrpc::Error::RpcStatus`), or a response that does not decode.
    pub fn call<R: TaskRequest>(
        &self,
        ctx: ttrpc::context::Context,
        request: &R,
    ) -> ttrpc::Result<R::Response> {
        let payload = request
            .write_to_bytes()
            .map_err(|e| ttrpc::Error::Others(format!("encode {}: {e}", R::METHOD)))?;
        let mut wire = ttrpc::Request::new();
        wire.service = self.api.service_name().to_owned();
        wire.method = R::METHOD.to_owned();
        wire.timeout_nano = ctx.timeout_nano;
        wire.metadata = ttrpc::context::to_pb(ctx.metadata);
        wire.payload = payload;
        let response = self.client.request(wire)?;
        R::Response::parse_from_bytes(&response.payload)
            .map_err(|e| ttrpc::Error::Others(format!("decode {} response: {e}", R::METHOD)))
    }
}
