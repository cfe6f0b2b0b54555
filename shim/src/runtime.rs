//! The two traits a runtime implements, and the contexts the framework hands it.
//!
//! - [`TaskService`]: the task RPCs. Every method defaults to `Unimplemented` (code 12), which
//!   is what containerd expects for an unsupported call. `Connect` and `Shutdown` are answered
//!   by the framework from [`TaskService::task_pid`] and [`TaskService::is_empty`]; `Wait`
//!   goes through [`TaskService::wait_deferred`].
//! - [`Runtime`]: construction inside the daemon, plus the hooks the short-lived invocations
//!   need (`delete`, `-info`, `start`'s grouping and shim cgroup).

use std::path::PathBuf;
use std::sync::Arc;

use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use protobuf::Message;
use protobuf::MessageField;
use ttrpc::proto::Code;
use wren_shim_protocol::task::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use wren_shim_protocol::types::{RuntimeInfo, RuntimeVersion};

use crate::logger::Verbosity;
use crate::loop_sources::MainLoopSources;
use crate::publisher::Publisher;
use crate::server::{Dispatch, RawReply, Reply, RequestContext};
use crate::shutdown::{ShutdownReason, ShutdownTrigger};
use crate::start_input::Annotations;
use crate::status::unimplemented;
use wren_process::Monitor;

/// Everything a runtime needs to serve one daemon's tasks.
#[derive(Debug, Clone)]
pub struct ShimContext {
    /// The containerd namespace (`-namespace`).
    pub namespace: String,
    /// The id the daemon was started for (`-id`); with grouping, more tasks may follow.
    pub id: String,
    /// The bundle of that first task; the daemon's working directory.
    pub bundle: PathBuf,
    /// containerd's gRPC address (`-address`).
    pub address: String,
    /// containerd's ttrpc address, where events go.
    pub ttrpc_address: String,
    /// The log level containerd asked for.
    pub verbosity: Verbosity,
    /// The runtime options `start` received on stdin, if any (Create carries them too).
    pub runtime_options: Option<Any>,
    /// The ordered event queue to containerd.
    pub publisher: Publisher,
    /// Spawn children and receive exits through this; never call `Child::wait`.
    pub monitor: Arc<Monitor>,
    /// Ends the daemon (the framework also does so on Shutdown and SIGTERM).
    pub shutdown: ShutdownTrigger,
    /// Fds the main loop polls for the runtime, so that it needs no thread to wait on them;
    /// add them in [`Runtime::new`].
    pub main_loop: MainLoopSources,
}

/// What the `delete` hook needs: the dead shim's identity, and a monitor for its children.
#[derive(Debug, Clone)]
pub struct CleanupContext {
    /// The containerd namespace.
    pub namespace: String,
    /// The task id to clean up.
    pub id: String,
    /// The task's bundle (`-bundle`, else the working directory).
    pub bundle: PathBuf,
    /// containerd's gRPC address.
    pub address: String,
    /// A running reaper's monitor: spawn `runc delete` through it.
    pub monitor: Arc<Monitor>,
}

/// A runtime: a [`TaskService`] plus its construction and launch-time hooks.
pub trait Runtime: TaskService + Sized {
    /// The runtime's error type, reported on stderr by the short-lived invocations.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The runtime type, e.g. `io.containerd.wren.v2`; reported by `-info` and `-v`.
    const NAME: &'static str;
    /// The version reported by `-info` and `-v`.
    const VERSION: &'static str;

    /// Builds the service in the daemon, before the server accepts connections.
    ///
    /// # Errors
    /// Any error ends the daemon before it serves.
    fn new(context: ShimContext) -> Result<Self, Self::Error>;

    /// The `delete` action: clean up after a shim that is gone (`runc delete --force`,
    /// unmount the rootfs...) and return the init pid the task had, 0 if unknown.
    ///
    /// It must be idempotent: containerd runs it after every shim disconnect, including a
    /// clean one, and the bundle or the container may already be gone.
    ///
    /// # Errors
    /// An error makes `delete` exit non-zero; containerd then publishes exit status 255.
    fn cleanup(context: &CleanupContext) -> Result<u32, Self::Error>;

    /// The `-info` answer. The default reports [`Runtime::NAME`] and [`Runtime::VERSION`].
    ///
    /// # Errors
    /// containerd only logs a failure.
    fn info(options: Option<&Any>) -> Result<RuntimeInfo, Self::Error> {
        let mut info = RuntimeInfo::new();
        info.name = Self::NAME.to_owned();
        let mut version = RuntimeVersion::new();
        version.version = Self::VERSION.to_owned();
        info.version = MessageField::some(version);
        info.options = MessageField::from_option(options.cloned());
        Ok(info)
    }

    /// The cgroup `start` moves the daemon into. The default reads `shim_cgroup` from
    /// `containerd.runc.v1.Options`, and ignores options of any other type.
    fn shim_cgroup(options: &Any) -> Option<String> {
        wren_shim_protocol::any::unpack::<wren_shim_protocol::runc::Options>(options)
            .ok()
            .map(|options| options.shim_cgroup)
            .filter(|cgroup| !cgroup.is_empty())
    }

    /// The id that names the socket, from the bundle spec's annotations: tasks with the
    /// same one share a daemon. The default reads the `io.containerd.runc.v2.group` then
    /// `io.kubernetes.cri.sandbox-id` annotations.
    fn grouping_id(annotations: &Annotations, id: &str) -> String {
        crate::start_input::grouping_id(annotations, id)
    }
}

macro_rules! task_methods {
    ($($(#[$doc:meta])* $method:ident($request:ty) -> $response:ty = $name:literal;)*) => {
        /// The task RPCs (`containerd.task.v2.Task`, also served as `v3`).
        ///
        /// Handlers run on worker threads, concurrently: never hold a service-wide lock
        /// across a runc call or a wait. Each method not overridden answers `Unimplemented`.
        pub trait TaskService: Send + Sync + 'static {
            /// The init pid of task `id`, or `None` if this daemon does not hold it
            /// (Connect then answers 0, containerd's liveness probe).
            fn task_pid(&self, id: &str) -> Option<u32>;

            /// Whether no task is left; Shutdown is a no-op until this is true.
            fn is_empty(&self) -> bool;

            /// Called once when the daemon is about to exit (after the publisher flush).
            fn on_shutdown(&self, _reason: ShutdownReason) {}

            /// Answers Wait through `reply`, at any later time, from any thread.
            ///
            /// The default blocks in [`TaskService::wait`] on the worker thread that runs the
            /// request; a runtime that can learn of exits by callback should override this, so
            /// that the Wait containerd keeps open per process costs no thread.
            fn wait_deferred(&self, ctx: &RequestContext, request: WaitRequest, reply: Reply<WaitResponse>) {
                reply.send(self.wait(ctx, request));
            }

            /// Block until a task or exec exits (called by [`TaskService::wait_deferred`]'s
            /// default).
            fn wait(&self, _ctx: &RequestContext, _request: WaitRequest) -> ttrpc::Result<WaitResponse> {
                Err(unimplemented("Wait"))
            }

            $($(#[$doc])*
            fn $method(&self, _ctx: &RequestContext, _request: $request) -> ttrpc::Result<$response> {
                Err(unimplemented($name))
            })*
        }

        impl<S: TaskService> Dispatch for TaskAdapter<S> {
            fn dispatch(&self, ctx: RequestContext, method: &str, payload: &[u8], reply: RawReply) {
                match method {
                    $($name => {
                        if let Some((request, reply)) = decode::<$request, $response>(payload, reply) {
                            reply.send(self.service.$method(&ctx, request));
                        }
                    })*
                    "Wait" => {
                        if let Some((request, reply)) = decode::<WaitRequest, WaitResponse>(payload, reply) {
                            self.service.wait_deferred(&ctx, request, reply);
                        }
                    }
                    "Connect" => {
                        if let Some((request, reply)) = decode::<ConnectRequest, ConnectResponse>(payload, reply) {
                            reply.send(Ok(self.connect(&request)));
                        }
                    }
                    "Shutdown" => {
                        if let Some((_, reply)) = decode::<ShutdownRequest, Empty>(payload, reply) {
                            // Answer first: once triggered, the daemon may exit at any moment.
                            // The answer is then queued or sent, and the main loop sends
                            // what is queued before it exits.
                            reply.send(Ok(Empty::new()));
                            self.shutdown();
                        }
                    }
                    other => reply.send_status(Code::UNIMPLEMENTED, format!("method {other}")),
                }
            }
        }
    };
}

task_methods! {
    /// Create a task (runc create).
    create(CreateTaskRequest) -> CreateTaskResponse = "Create";
    /// Start a created task or exec.
    start(StartRequest) -> StartResponse = "Start";
    /// Delete a stopped task or exec.
    delete(DeleteRequest) -> DeleteResponse = "Delete";
    /// The pids in a task.
    pids(PidsRequest) -> PidsResponse = "Pids";
    /// Freeze a task.
    pause(PauseRequest) -> Empty = "Pause";
    /// Thaw a task.
    resume(ResumeRequest) -> Empty = "Resume";
    /// Checkpoint a task.
    checkpoint(CheckpointTaskRequest) -> Empty = "Checkpoint";
    /// Signal a task or exec.
    kill(KillRequest) -> Empty = "Kill";
    /// Add an exec process (not started).
    exec(ExecProcessRequest) -> Empty = "Exec";
    /// Resize a terminal.
    resize_pty(ResizePtyRequest) -> Empty = "ResizePty";
    /// Close a process's stdin.
    close_io(CloseIORequest) -> Empty = "CloseIO";
    /// Update a task's resources.
    update(UpdateTaskRequest) -> Empty = "Update";
    /// A task's cgroup metrics.
    stats(StatsRequest) -> StatsResponse = "Stats";
    /// A task or exec's state.
    state(StateRequest) -> StateResponse = "State";
}

/// Routes decoded requests to a [`TaskService`], answering Connect and Shutdown itself.
#[derive(Debug)]
pub(crate) struct TaskAdapter<S> {
    service: Arc<S>,
    shutdown: ShutdownTrigger,
}

impl<S: TaskService> TaskAdapter<S> {
    /// Serves `service`; the Shutdown RPC fires `shutdown` once the service is empty.
    pub(crate) fn new(service: Arc<S>, shutdown: ShutdownTrigger) -> Self {
        Self { service, shutdown }
    }

    fn connect(&self, request: &ConnectRequest) -> ConnectResponse {
        let mut response = ConnectResponse::new();
        response.shim_pid = std::process::id();
        response.task_pid = self.service.task_pid(&request.id).unwrap_or(0);
        response
    }

    fn shutdown(&self) {
        if self.service.is_empty() {
            self.shutdown.trigger(ShutdownReason::ShutdownRpc);
        } else {
            log::debug!("shutdown requested while tasks remain: ignored");
        }
    }
}

/// Decodes a request, or answers `InvalidArgument` and returns `None`.
fn decode<Q: Message, A: Message>(payload: &[u8], reply: RawReply) -> Option<(Q, Reply<A>)> {
    match Q::parse_from_bytes(payload) {
        Ok(request) => Some((request, Reply::new(reply))),
        Err(error) => {
            let message = format!("undecodable {}: {error}", Q::NAME);
            reply.send_status(Code::INVALID_ARGUMENT, message);
            None
        }
    }
}
