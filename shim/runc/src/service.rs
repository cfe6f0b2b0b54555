//! The task RPCs: each handler looks up its container, calls [`container`] or [`ops`], and
//! builds the response. Errors leave through `From<Error> for ttrpc::Error` only.

use std::path::PathBuf;
use std::sync::Arc;

use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;
use wren_shim::identifier;
use wren_shim::rootfs::RootfsMount;
use wren_shim::{Reply, RequestContext};
use wren_shim::{ShutdownReason, TaskService};
use wren_shim_protocol::task::{
    CheckpointTaskRequest, CloseIORequest, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ResumeRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::types::Status;

use crate::container::{self, Container, CreateRequest};
use crate::error::Error;
use crate::process::{ProcState, Snapshot, StdioPaths};
use crate::runtime::{RuncRuntime, Slot};
use crate::state::{InitState, Op};
use crate::{metrics, ops};

impl RuncRuntime {
    fn container(&self, id: &str) -> Result<Arc<Container>, Error> {
        self.shared.container(id)
    }
}

fn empty(result: Result<(), Error>) -> ttrpc::Result<Empty> {
    result.map(|()| Empty::new()).map_err(Into::into)
}

impl TaskService for RuncRuntime {
    fn task_pid(&self, id: &str) -> Option<u32> {
        self.container(id)
            .ok()
            .map(|container| container.init.pid())
    }

    fn is_empty(&self) -> bool {
        self.shared.registry().is_empty()
    }

    fn on_shutdown(&self, reason: ShutdownReason) {
        let left: Vec<String> = self
            .shared
            .registry()
            .iter()
            .filter(|(_, slot)| matches!(slot, Slot::Ready(_)))
            .map(|(id, _)| id.clone())
            .collect();
        if !left.is_empty() {
            log::warn!("shutting down ({reason:?}) with containers left: {left:?}");
        }
    }

    fn create(
        &self,
        _ctx: &RequestContext,
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        // The id names runc's state directory and travels into runc's argv.
        identifier::validate("container id", &request.id).map_err(Error::from)?;
        let create = CreateRequest {
            mounts: RootfsMount::from_request(&request.rootfs),
            stdio: StdioPaths {
                stdin: request.stdin,
                stdout: request.stdout,
                stderr: request.stderr,
                terminal: request.terminal,
            },
            id: request.id,
            bundle: PathBuf::from(request.bundle),
            checkpoint: request.checkpoint,
            parent_checkpoint: request.parent_checkpoint,
            options: request.options.into_option(),
        };
        let container = container::create(&self.shared, &create)?;
        let mut response = CreateTaskResponse::new();
        response.pid = container.init.pid();
        Ok(response)
    }

    fn start(&self, _ctx: &RequestContext, request: StartRequest) -> ttrpc::Result<StartResponse> {
        let container = self.container(&request.id)?;
        let pid = if request.exec_id.is_empty() {
            ops::start_init(&self.shared, &container)?
        } else {
            let exec = container.exec(&request.exec_id)?;
            ops::start_exec(&self.shared, &container, &exec)?
        };
        let mut response = StartResponse::new();
        response.pid = pid;
        Ok(response)
    }

    fn delete(
        &self,
        _ctx: &RequestContext,
        request: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        let container = self.container(&request.id)?;
        let snapshot = if request.exec_id.is_empty() {
            container::delete(&self.shared, &container)?
        } else {
            let exec = container.exec(&request.exec_id)?;
            ops::delete_exec(&container, &exec)?
        };
        Ok(delete_response(snapshot))
    }

    fn pids(&self, _ctx: &RequestContext, request: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let container = self.container(&request.id)?;
        let mut response = PidsResponse::new();
        response.processes = ops::pids(&container)?;
        Ok(response)
    }

    fn pause(&self, _ctx: &RequestContext, request: PauseRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        empty(ops::pause(&self.shared, &container))
    }

    fn resume(&self, _ctx: &RequestContext, request: ResumeRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        empty(ops::resume(&self.shared, &container))
    }

    fn checkpoint(
        &self,
        _ctx: &RequestContext,
        request: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        empty(ops::checkpoint(
            &container,
            &request.path,
            request.options.as_ref(),
        ))
    }

    fn kill(&self, _ctx: &RequestContext, request: KillRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        let process = container.process(&request.exec_id)?;
        empty(ops::kill_process(
            &container,
            &process,
            request.signal,
            request.all,
        ))
    }

    fn exec(&self, _ctx: &RequestContext, request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        let stdio = StdioPaths {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            terminal: request.terminal,
        };
        empty(ops::add_exec(
            &self.shared,
            &container,
            &request.exec_id,
            stdio,
            request.spec.as_ref(),
        ))
    }

    fn resize_pty(&self, _ctx: &RequestContext, request: ResizePtyRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        let process = container.process(&request.exec_id)?;
        process
            .check(Op::ResizePty)
            .map_err(|source| Error::Transition {
                id: process.id.clone(),
                source,
            })?;
        let resized = process.with_io(|io| io.resize(request.width, request.height));
        match resized {
            // No console (no terminal, or already closed): nothing to resize.
            None | Some(Ok(()) | Err(wren_io::IoError::NoConsole)) => Ok(Empty::new()),
            Some(Err(source)) => Err(Error::Io {
                id: process.id.clone(),
                source,
            }
            .into()),
        }
    }

    fn close_io(&self, _ctx: &RequestContext, request: CloseIORequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        let process = container.process(&request.exec_id)?;
        process.close_stdin();
        Ok(Empty::new())
    }

    fn update(&self, _ctx: &RequestContext, request: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let container = self.container(&request.id)?;
        empty(ops::update(&container, request.resources.as_ref()))
    }

    /// Answers when the process exits, holding no thread meanwhile.
    fn wait_deferred(
        &self,
        _ctx: &RequestContext,
        request: WaitRequest,
        reply: Reply<WaitResponse>,
    ) {
        let process = match self
            .container(&request.id)
            .and_then(|container| container.process(&request.exec_id))
        {
            Ok(process) => process,
            Err(error) => return reply.send(Err(error.into())),
        };
        let id = process.id.clone();
        let abandoned = reply.abandonment();
        let answer = move |exit: Option<crate::process::ExitRecord>| {
            reply.send(match exit {
                Some(exit) => {
                    let mut response = WaitResponse::new();
                    response.exit_status = exit.status;
                    response.exited_at = MessageField::some(to_timestamp(exit.at));
                    Ok(response)
                }
                None => Err(Error::DeletedBeforeExit { id }.into()),
            });
        };
        ops::wait_then(&process, answer, abandoned);
    }

    fn stats(&self, _ctx: &RequestContext, request: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let container = self.container(&request.id)?;
        let stats = ops::stats(&container)?;
        let any = metrics::to_any(&stats).map_err(|source| Error::Pack {
            what: "metrics",
            source,
        })?;
        let mut response = StatsResponse::new();
        response.stats = MessageField::some(any);
        Ok(response)
    }

    fn state(&self, _ctx: &RequestContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        let container = self.container(&request.id)?;
        let process = container.process(&request.exec_id)?;
        let snapshot = process.snapshot();
        let mut status = snapshot.state.status();
        // An exec of a frozen container is frozen too.
        if status == Status::RUNNING {
            match container.init.state() {
                ProcState::Init(InitState::Paused) => status = Status::PAUSED,
                ProcState::Init(InitState::Pausing) => status = Status::PAUSING,
                _ => {}
            }
        }
        let mut response = StateResponse::new();
        response.id.clone_from(&process.id);
        response.bundle = container.bundle.to_string_lossy().into_owned();
        response.pid = snapshot.pid;
        response.status = status.into();
        response.stdin.clone_from(&process.stdio.stdin);
        response.stdout.clone_from(&process.stdio.stdout);
        response.stderr.clone_from(&process.stdio.stderr);
        response.terminal = process.stdio.terminal;
        if let Some(exit) = snapshot.exit {
            response.exit_status = exit.status;
            response.exited_at = MessageField::some(to_timestamp(exit.at));
        }
        Ok(response)
    }
}

fn delete_response(snapshot: Snapshot) -> DeleteResponse {
    let mut response = DeleteResponse::new();
    response.pid = snapshot.pid;
    if let Some(exit) = snapshot.exit {
        response.exit_status = exit.status;
        response.exited_at = MessageField::some(to_timestamp(exit.at));
    }
    response
}
