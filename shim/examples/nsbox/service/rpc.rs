//! The task RPCs nsbox supports; the framework answers Unimplemented for the others.

use std::path::PathBuf;
use std::time::SystemTime;

use nix::sys::signal::Signal;
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;

use super::*;

impl TaskService for NsBox {
    fn task_pid(&self, id: &str) -> Option<u32> {
        match self.lock().get(id)?.state {
            State::Created => Some(0),
            State::Running { pid } | State::Stopped { pid, .. } => Some(pid),
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The daemon is exiting with tasks left (SIGTERM): take them down with it.
    fn on_shutdown(&self, _reason: ShutdownReason) {
        for task in self.lock().values() {
            if let State::Running { pid } = task.state {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            unblock_stdin(&task.request.stdin);
            if task.mounted_rootfs {
                crate::unmount_rootfs(&task.bundle);
            }
        }
    }

    fn create(
        &self,
        _ctx: &RequestContext,
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        if request.terminal {
            return Err(NsboxError::Unsupported { what: "a terminal" }.into());
        }
        if !request.checkpoint.is_empty() {
            return Err(NsboxError::Unsupported { what: "restore" }.into());
        }
        let bundle = PathBuf::from(&request.bundle);
        let plan = spec::load(&bundle).map_err(|source| NsboxError::Spec {
            id: request.id.clone(),
            source,
        })?;
        let mut tasks = self.lock();
        if tasks.contains_key(&request.id) {
            return Err(NsboxError::AlreadyExists { id: request.id }.into());
        }
        rootfs::mount_all(
            &RootfsMount::from_request(&request.rootfs),
            &bundle.join("rootfs"),
        )
        .map_err(NsboxError::from)?;
        let mut event = TaskCreate::new();
        event.container_id.clone_from(&request.id);
        event.bundle.clone_from(&request.bundle);
        event.rootfs.clone_from(&request.rootfs);
        let task = Task {
            bundle,
            mounted_rootfs: !request.rootfs.is_empty(),
            clone_flags: plan.namespaces.clone_flags,
            state: State::Created,
            request,
        };
        tasks.insert(event.container_id.clone(), task);
        self.publish(&event);
        Ok(CreateTaskResponse::new())
    }

    fn start(&self, _ctx: &RequestContext, request: StartRequest) -> ttrpc::Result<StartResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let mut response = StartResponse::new();
        response.pid = self.start_task(&request.id)?;
        Ok(response)
    }

    fn kill(&self, _ctx: &RequestContext, request: KillRequest) -> ttrpc::Result<Empty> {
        no_exec(&request.id, &request.exec_id)?;
        let signal = i32::try_from(request.signal)
            .ok()
            .and_then(|signal| Signal::try_from(signal).ok())
            .ok_or(NsboxError::Signal {
                signal: request.signal,
            })?;
        let mut tasks = self.lock();
        let task = find(&mut tasks, &request.id)?;
        match task.state {
            // The supervisor forwards it to the payload; SIGKILL takes both down.
            State::Running { pid } => {
                let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                match kill(pid, signal) {
                    Ok(()) => {}
                    Err(Errno::ESRCH) => return Err(NsboxError::AlreadyFinished.into()),
                    Err(source) => {
                        return Err(NsboxError::Kill {
                            id: request.id,
                            source,
                        }
                        .into())
                    }
                }
            }
            State::Created => self.stop_created(task, &request.id, signal),
            State::Stopped { .. } => return Err(NsboxError::AlreadyFinished.into()),
        }
        Ok(Empty::new())
    }

    fn wait(&self, _ctx: &RequestContext, request: WaitRequest) -> ttrpc::Result<WaitResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let mut tasks = self.lock();
        loop {
            let task = find(&mut tasks, &request.id)?;
            if let State::Stopped { status, at, .. } = task.state {
                let mut response = WaitResponse::new();
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                return Ok(response);
            }
            // Condvar::wait releases the lock while blocked: other RPCs go on meanwhile.
            tasks = self
                .tasks
                .exited
                .wait(tasks)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn delete(
        &self,
        _ctx: &RequestContext,
        request: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let mut tasks = self.lock();
        let task = find(&mut tasks, &request.id)?;
        let (pid, status, at) = match task.state {
            State::Running { .. } => return Err(wrong_state(&request.id, task.state).into()),
            State::Created => (0, 0, SystemTime::now()),
            State::Stopped { pid, status, at } => (pid, status, at),
        };
        if task.mounted_rootfs {
            crate::unmount_rootfs(&task.bundle);
        }
        unblock_stdin(&task.request.stdin);
        let _ = std::fs::remove_file(task.bundle.join(INIT_PID_FILE));
        tasks.remove(&request.id);
        let mut event = TaskDelete::new();
        event.container_id = request.id;
        event.pid = pid;
        event.exit_status = status;
        event.exited_at = MessageField::some(to_timestamp(at));
        self.publish(&event);
        let mut response = DeleteResponse::new();
        response.pid = pid;
        response.exit_status = status;
        response.exited_at = MessageField::some(to_timestamp(at));
        Ok(response)
    }

    fn pids(&self, _ctx: &RequestContext, request: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let mut tasks = self.lock();
        let task = find(&mut tasks, &request.id)?;
        let mut response = PidsResponse::new();
        if let State::Running { pid } = task.state {
            let mut info = ProcessInfo::new();
            info.pid = pid;
            response.processes.push(info);
        }
        Ok(response)
    }

    fn state(&self, _ctx: &RequestContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        no_exec(&request.id, &request.exec_id)?;
        let mut tasks = self.lock();
        let task = find(&mut tasks, &request.id)?;
        let mut response = StateResponse::new();
        response.id = request.id;
        response.bundle.clone_from(&task.request.bundle);
        response.stdin.clone_from(&task.request.stdin);
        response.stdout.clone_from(&task.request.stdout);
        response.stderr.clone_from(&task.request.stderr);
        let status = match task.state {
            State::Created => Status::CREATED,
            State::Running { pid } => {
                response.pid = pid;
                Status::RUNNING
            }
            State::Stopped { pid, status, at } => {
                response.pid = pid;
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                Status::STOPPED
            }
        };
        response.status = status.into();
        Ok(response)
    }
}
