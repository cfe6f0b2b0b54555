//! The task RPCs.

use std::path::PathBuf;
use std::sync::Arc;

use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;
use wren_shim::rootfs::{self, RootfsMount};
use wren_shim::{RequestContext, ShutdownReason, TaskService};
use wren_shim_protocol::events::{TaskCreate, TaskDelete, TaskExecAdded};
use wren_shim_protocol::task::{
    CloseIORequest, CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse,
    ExecProcessRequest, KillRequest, PidsRequest, PidsResponse, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, WaitRequest, WaitResponse,
};
use wren_shim_protocol::timestamp::to_timestamp;
use wren_shim_protocol::types::{ProcessInfo, Status};
use wren_shim_protocol::vm_agent::{AddExecRequest, ContainerRef, CreateContainerRequest};

use super::{find, process_ref, wrong_state, Container, Process, State, WrenVm};
use crate::error::VmShimError;
use crate::vm::Vm;
use crate::{spec, stdio};

impl WrenVm {
    fn create_task(&self, request: &CreateTaskRequest) -> Result<(), VmShimError> {
        let id = request.id.as_str();
        wren_shim::identifier::validate("container id", id)?;
        if request.terminal {
            return Err(VmShimError::Unsupported("a terminal"));
        }
        if self.containers().contains_key(id) {
            return Err(VmShimError::AlreadyExists {
                what: "task",
                id: id.into(),
            });
        }
        let bundle = PathBuf::from(&request.bundle);
        let container = spec::container(&bundle, !request.stdin.is_empty())?;
        let mounted_rootfs = !request.rootfs.is_empty();
        if mounted_rootfs {
            rootfs::mount_all(
                &RootfsMount::from_request(&request.rootfs),
                &bundle.join("rootfs"),
            )
            .map_err(VmShimError::Mount)?;
        }
        let result = self.create_in_guest(id, &bundle, &container);
        if let Err(error) = result {
            if mounted_rootfs {
                crate::unmount_rootfs(&bundle);
            }
            return Err(error);
        }
        let mut processes = std::collections::HashMap::new();
        processes.insert(
            String::new(),
            Process {
                stdin: request.stdin.clone(),
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                state: State::Created,
            },
        );
        self.containers().insert(
            id.into(),
            Container {
                bundle,
                mounted_rootfs,
                processes,
            },
        );
        let mut event = TaskCreate::new();
        event.container_id = id.into();
        event.bundle.clone_from(&request.bundle);
        event.rootfs.clone_from(&request.rootfs);
        self.publish(&event);
        Ok(())
    }

    /// Boots the VM if needed, shares the rootfs and has the agent prepare the container.
    fn create_in_guest(
        &self,
        id: &str,
        bundle: &std::path::Path,
        container: &spec::Container,
    ) -> Result<(), VmShimError> {
        let vm = self.vm()?;
        vm.share_rootfs(id, &container.rootfs)?;
        // For the `delete` action, should this daemon die with the VM still up.
        let _ = std::fs::write(
            bundle.join(crate::VM_DIR_FILE),
            vm.dir().as_os_str().as_encoded_bytes(),
        );
        let mut request = CreateContainerRequest::new();
        request.container_id = id.into();
        request.hostname.clone_from(&container.hostname);
        request.process = MessageField::some(container.process.clone());
        if let Err(error) = vm
            .agent()
            .create_container(ttrpc::context::Context::default(), &request)
        {
            vm.unshare_rootfs(id);
            if self.containers().is_empty() {
                self.stop_vm();
            }
            return Err(VmShimError::agent("CreateContainer")(error));
        }
        Ok(())
    }

    fn delete_process(&self, id: &str, exec_id: &str) -> Result<DeleteResponse, VmShimError> {
        let mut containers = self.containers();
        let process = find(&mut containers, id, exec_id)?;
        let (pid, status, at) = match process.state {
            State::Stopped { pid, status, at } => (pid, status, at),
            State::Created => (0, 0, std::time::SystemTime::now()),
            state => return Err(wrong_state(id, exec_id, state)),
        };
        stdio::unblock_stdin(&process.stdin);
        let removed = if exec_id.is_empty() {
            containers.remove(id)
        } else {
            if let Some(container) = containers.get_mut(id) {
                container.processes.remove(exec_id);
            }
            None
        };
        let last = containers.is_empty();
        drop(containers);
        if let Some(vm) = self.running_vm() {
            let _ = vm.agent().remove_process(
                ttrpc::context::Context::default(),
                &process_ref(id, exec_id),
            );
            if exec_id.is_empty() {
                vm.unshare_rootfs(id);
            }
        }
        if let Some(container) = removed {
            for process in container.processes.values() {
                stdio::unblock_stdin(&process.stdin);
            }
            if container.mounted_rootfs {
                crate::unmount_rootfs(&container.bundle);
            }
            // The task is cleanly gone: the `delete` action containerd runs after every
            // disconnect must find nothing to do (the VM may still serve the pod).
            let _ = std::fs::remove_file(container.bundle.join(crate::VM_DIR_FILE));
            let mut event = TaskDelete::new();
            event.container_id = id.into();
            event.pid = pid;
            event.exit_status = status;
            event.exited_at = MessageField::some(to_timestamp(at));
            self.publish(&event);
        }
        // The pod's last task is gone: so is its VM.
        if last {
            self.stop_vm();
        }
        let mut response = DeleteResponse::new();
        response.pid = pid;
        response.exit_status = status;
        response.exited_at = MessageField::some(to_timestamp(at));
        Ok(response)
    }

    fn kill_process(&self, request: &KillRequest) -> Result<(), VmShimError> {
        let (id, exec_id) = (request.id.as_str(), request.exec_id.as_str());
        let mut containers = self.containers();
        let process = find(&mut containers, id, exec_id)?;
        match process.state {
            State::Created => {
                self.stop_created(process, id, exec_id, request.signal);
                return Ok(());
            }
            State::Stopped { .. } if !request.all => return Err(VmShimError::AlreadyFinished),
            _ => {}
        }
        drop(containers);
        let vm = self.running_vm().ok_or(VmShimError::AlreadyFinished)?;
        let mut signal = wren_shim_protocol::vm_agent::SignalProcessRequest::new();
        signal.container_id = id.into();
        signal.exec_id = exec_id.into();
        signal.signal = request.signal;
        signal.all = request.all;
        vm.agent()
            .signal_process(ttrpc::context::Context::default(), &signal)
            .map_err(VmShimError::agent("SignalProcess"))?;
        Ok(())
    }

    fn add_exec(&self, request: &ExecProcessRequest) -> Result<(), VmShimError> {
        let (id, exec_id) = (request.id.as_str(), request.exec_id.as_str());
        wren_shim::identifier::validate("exec id", exec_id)?;
        if request.terminal {
            return Err(VmShimError::Unsupported("a terminal"));
        }
        let spec_json = request
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .unwrap_or_default();
        let process_spec = spec::exec_process(&spec_json, !request.stdin.is_empty())?;
        {
            let mut containers = self.containers();
            let container = containers
                .get_mut(id)
                .ok_or_else(|| VmShimError::task_not_found(id))?;
            if container.processes.contains_key(exec_id) {
                return Err(VmShimError::AlreadyExists {
                    what: "exec",
                    id: exec_id.into(),
                });
            }
        }
        let vm = self.running_vm().ok_or(VmShimError::AlreadyFinished)?;
        let mut add = AddExecRequest::new();
        add.container_id = id.into();
        add.exec_id = exec_id.into();
        add.process = MessageField::some(process_spec);
        vm.agent()
            .add_exec(ttrpc::context::Context::default(), &add)
            .map_err(VmShimError::agent("AddExec"))?;
        let mut containers = self.containers();
        let container = containers
            .get_mut(id)
            .ok_or_else(|| VmShimError::task_not_found(id))?;
        container.processes.insert(
            exec_id.into(),
            Process {
                stdin: request.stdin.clone(),
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                state: State::Created,
            },
        );
        let mut event = TaskExecAdded::new();
        event.container_id = id.into();
        event.exec_id = exec_id.into();
        self.publish(&event);
        Ok(())
    }

    fn container_ref(&self, id: &str) -> Result<ContainerRef, VmShimError> {
        if !self.containers().contains_key(id) {
            return Err(VmShimError::task_not_found(id));
        }
        let mut container = ContainerRef::new();
        container.container_id = id.into();
        Ok(container)
    }

    /// Task `id` as the agent names it, and the VM it runs in.
    fn in_guest(&self, id: &str) -> Result<(ContainerRef, Arc<Vm>), VmShimError> {
        let container = self.container_ref(id)?;
        let vm = self.running_vm().ok_or(VmShimError::AlreadyFinished)?;
        Ok((container, vm))
    }

    fn pids_of(&self, id: &str) -> Result<PidsResponse, VmShimError> {
        let (container, vm) = self.in_guest(id)?;
        let pids = vm
            .agent()
            .list_pids(ttrpc::context::Context::default(), &container)
            .map_err(VmShimError::agent("ListPids"))?;
        let mut response = PidsResponse::new();
        response.processes = pids
            .pids
            .into_iter()
            .map(|pid| {
                let mut info = ProcessInfo::new();
                info.pid = pid;
                info
            })
            .collect();
        Ok(response)
    }

    fn stats_of(&self, id: &str) -> Result<StatsResponse, VmShimError> {
        let (container, vm) = self.in_guest(id)?;
        let metrics = vm
            .agent()
            .stats(ttrpc::context::Context::default(), &container)
            .map_err(VmShimError::agent("Stats"))?;
        let mut response = StatsResponse::new();
        response.stats = MessageField::some(
            wren_shim_protocol::any::pack(&metrics).map_err(VmShimError::Encode)?,
        );
        Ok(response)
    }

    fn state_of(&self, id: &str, exec_id: &str) -> Result<StateResponse, VmShimError> {
        let mut containers = self.containers();
        let bundle = containers
            .get(id)
            .map(|container| container.bundle.display().to_string())
            .unwrap_or_default();
        let process = find(&mut containers, id, exec_id)?;
        let mut response = StateResponse::new();
        response.id = if exec_id.is_empty() { id } else { exec_id }.into();
        response.exec_id = exec_id.into();
        response.bundle = bundle;
        response.stdin.clone_from(&process.stdin);
        response.stdout.clone_from(&process.stdout);
        response.stderr.clone_from(&process.stderr);
        let (status, pid) = match process.state {
            State::Created | State::Starting => (Status::CREATED, 0),
            State::Running { pid } => (Status::RUNNING, pid),
            State::Stopped { pid, status, at } => {
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                (Status::STOPPED, pid)
            }
        };
        response.status = status.into();
        response.pid = pid;
        Ok(response)
    }

    fn wait_for(&self, id: &str, exec_id: &str) -> Result<WaitResponse, VmShimError> {
        let mut containers = self.containers();
        loop {
            if let State::Stopped { status, at, .. } = find(&mut containers, id, exec_id)?.state {
                let mut response = WaitResponse::new();
                response.exit_status = status;
                response.exited_at = MessageField::some(to_timestamp(at));
                return Ok(response);
            }
            // The condvar releases the table while waiting.
            containers = self
                .table
                .exited
                .wait(containers)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl TaskService for WrenVm {
    /// The guest pid of the task's process: a pid in the VM, not on the host.
    fn task_pid(&self, id: &str) -> Option<u32> {
        let mut containers = self.containers();
        let process = find(&mut containers, id, "").ok()?;
        Some(match process.state {
            State::Running { pid } | State::Stopped { pid, .. } => pid,
            State::Created | State::Starting => 0,
        })
    }

    fn is_empty(&self) -> bool {
        self.containers().is_empty()
    }

    /// SIGTERM or Shutdown: the VM must not outlive the daemon.
    fn on_shutdown(&self, _reason: ShutdownReason) {
        self.stop_vm();
    }

    fn create(
        &self,
        _ctx: &RequestContext,
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.create_task(&request)?;
        // No process runs before Start: there is no pid yet.
        Ok(CreateTaskResponse::new())
    }

    fn start(&self, _ctx: &RequestContext, request: StartRequest) -> ttrpc::Result<StartResponse> {
        let mut response = StartResponse::new();
        response.pid = self.start_process(&request.id, &request.exec_id)?;
        Ok(response)
    }

    fn wait(&self, _ctx: &RequestContext, request: WaitRequest) -> ttrpc::Result<WaitResponse> {
        Ok(self.wait_for(&request.id, &request.exec_id)?)
    }

    fn state(&self, _ctx: &RequestContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(self.state_of(&request.id, &request.exec_id)?)
    }

    fn kill(&self, _ctx: &RequestContext, request: KillRequest) -> ttrpc::Result<Empty> {
        self.kill_process(&request)?;
        Ok(Empty::new())
    }

    fn delete(
        &self,
        _ctx: &RequestContext,
        request: DeleteRequest,
    ) -> ttrpc::Result<DeleteResponse> {
        Ok(self.delete_process(&request.id, &request.exec_id)?)
    }

    fn exec(&self, _ctx: &RequestContext, request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.add_exec(&request)?;
        Ok(Empty::new())
    }

    fn pids(&self, _ctx: &RequestContext, request: PidsRequest) -> ttrpc::Result<PidsResponse> {
        Ok(self.pids_of(&request.id)?)
    }

    fn stats(&self, _ctx: &RequestContext, request: StatsRequest) -> ttrpc::Result<StatsResponse> {
        Ok(self.stats_of(&request.id)?)
    }

    fn close_io(&self, _ctx: &RequestContext, request: CloseIORequest) -> ttrpc::Result<Empty> {
        let mut containers = self.containers();
        let process = find(&mut containers, &request.id, &request.exec_id)?;
        // The copy thread sends CloseStdin when the FIFO reaches end of file.
        stdio::unblock_stdin(&process.stdin);
        Ok(Empty::new())
    }
}
