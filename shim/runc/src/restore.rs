//! Restoring a container from a checkpoint image, the way containerd's runc shim does it.
//!
//! Create checks the image and registers a created init without a process (pid 0, no IO);
//! the Start of that init runs `runc restore --detach` with the image, the stdio and the
//! console socket, and from then on the init is an ordinary running one: its exit, Wait,
//! Kill and Delete go through the usual paths. Restoring at Start (not at Create) means the
//! restored process's output and exit can only follow TaskStart.
//!
//! Like containerd's shim, the restore honours the image (`checkpoint`), the parent image
//! (`parent_checkpoint`), the CRIU work path of the runtime options (else `<bundle>/work`),
//! `NoPivotRoot` and the terminal. CRIU switches such as `--tcp-established` have no field
//! in a Create request, so neither shim can pass them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wren_runc_driver::{CriuOptions, RestoreOptions, Stdio as RuncStdio};
use wren_shim_protocol::events::TaskStart;

use crate::container::{
    self, publish, runc_for, task_create, Container, CreateRequest, Rootfs, CONSOLE_TIMEOUT,
};
use crate::error::Error;
use crate::exits::ProcRef;
use crate::options::RuntimeOptions;
use crate::process::Process;
use crate::Shared;

/// The Create of a checkpointed container: no runc call yet, a created init with pid 0.
pub fn create(
    shared: &Shared,
    request: &CreateRequest,
    options: RuntimeOptions,
    rootfs: Rootfs,
) -> Result<Arc<Container>, Error> {
    let criu = criu_options(request, &options)?;
    let runc = runc_for(
        &shared.spawner,
        &shared.namespace,
        &request.bundle,
        &options,
    );
    let init = Arc::new(Process::init(&request.id, request.stdio.clone(), 0, None));
    let container = Container::assemble(request, runc, options, rootfs, init);
    container.set_pending_restore(Some(criu));
    let container = Arc::new(container);
    shared.publish_ready(&container);
    publish(shared, &task_create(request, 0));
    Ok(container)
}

/// What `runc restore` gets from the request: the image (which must be a directory now,
/// so a wrong path fails Create with a clear message rather than Start with CRIU's), the
/// parent image and the work path.
fn criu_options(request: &CreateRequest, options: &RuntimeOptions) -> Result<CriuOptions, Error> {
    let image = PathBuf::from(&request.checkpoint);
    let metadata = std::fs::metadata(&image).map_err(|source| Error::CheckpointImage {
        id: request.id.clone(),
        path: image.clone(),
        source,
    })?;
    if !metadata.is_dir() {
        return Err(Error::CheckpointNotDirectory {
            id: request.id.clone(),
            path: image,
        });
    }
    let work = non_empty(&options.criu_work_path).unwrap_or_else(|| request.bundle.join("work"));
    Ok(CriuOptions {
        image_path: image,
        work_path: Some(work),
        parent_path: non_empty(&request.parent_checkpoint),
        ..CriuOptions::default()
    })
}

fn non_empty(path: &str) -> Option<PathBuf> {
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The Start of a checkpointed init: `runc restore`, then the IO, the cgroup and TaskStart,
/// queued before any exit of the restored process. The caller holds the init's ops lock
/// and has checked that Start is allowed. A failed restore leaves the init waiting for its
/// restore, so Start may be tried again.
pub fn start(shared: &Shared, container: &Arc<Container>, criu: CriuOptions) -> Result<u32, Error> {
    let id = &container.id;
    let init = &container.init;
    if let Some(work) = &criu.work_path {
        // runc creates only the last component; containerd's bundles already have it.
        std::fs::create_dir_all(work).map_err(|source| Error::RestoreWorkDir {
            id: id.clone(),
            path: work.clone(),
            source,
        })?;
    }
    let engine = shared.engine()?;
    let mut io = container::prepare_io(shared, id, &init.stdio, &container.options)?;
    let runc_io = io.take_runc_io();
    let options = RestoreOptions {
        criu,
        bundle: container.bundle.clone(),
        pid_file: container.bundle.join("init.pid"),
        console_socket: io.console_socket().map(Path::to_path_buf),
        no_pivot: container.options.no_pivot_root,
        stdio: RuncStdio {
            stdin: runc_io.stdin,
            stdout: runc_io.stdout,
            stderr: runc_io.stderr,
        },
    };
    let guard = shared.lifecycle.pre_start(None);
    let pid = container
        .runc
        .restore(id, options)
        .map_err(|source| Error::Runc {
            verb: "restore",
            source,
        })?;
    container.set_pending_restore(None);
    container.locate_cgroup(shared, pid);
    let proc_ref = ProcRef {
        container: Arc::clone(container),
        process: Arc::clone(init),
    };
    match io.start(&engine, CONSOLE_TIMEOUT) {
        Ok(io) => init.started(pid, Some(io)),
        Err(source) => {
            // The process runs without its stdio: stop it; its exit is tracked as usual.
            init.started(pid, None);
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(-1)),
                Signal::SIGKILL,
            );
            guard.started(proc_ref);
            return Err(Error::Io {
                id: id.clone(),
                source,
            });
        }
    }
    let mut event = TaskStart::new();
    event.container_id.clone_from(id);
    event.pid = pid;
    publish(shared, &event);
    guard.started(proc_ref);
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::StdioPaths;

    fn request(bundle: &Path, checkpoint: &Path) -> CreateRequest {
        CreateRequest {
            id: "c1".into(),
            bundle: bundle.to_owned(),
            mounts: Vec::new(),
            stdio: StdioPaths::default(),
            checkpoint: checkpoint.display().to_string(),
            parent_checkpoint: String::new(),
            options: None,
        }
    }

    #[test]
    fn restore_reads_the_image_and_works_in_the_bundle_as_go_does() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image");
        std::fs::create_dir(&image).unwrap();
        let mut create = request(dir.path(), &image);
        create.parent_checkpoint = "../parent".into();
        let criu = criu_options(&create, &RuntimeOptions::default()).unwrap();
        assert_eq!(criu.image_path, image);
        assert_eq!(criu.work_path, Some(dir.path().join("work")));
        assert_eq!(criu.parent_path, Some(PathBuf::from("../parent")));
        assert!(!criu.open_tcp && !criu.terminal && criu.empty_namespaces.is_empty());

        let options = RuntimeOptions {
            criu_work_path: "/var/criu".into(),
            ..RuntimeOptions::default()
        };
        let criu = criu_options(&create, &options).unwrap();
        assert_eq!(criu.work_path, Some(PathBuf::from("/var/criu")));
    }

    #[test]
    fn a_missing_or_plain_file_image_is_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let missing = criu_options(
            &request(dir.path(), &dir.path().join("nope")),
            &RuntimeOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(missing, Error::CheckpointImage { .. }),
            "{missing}"
        );
        assert_eq!(missing.code(), wren_shim::status::Code::InvalidArgument);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let plain =
            criu_options(&request(dir.path(), &file), &RuntimeOptions::default()).unwrap_err();
        assert!(
            matches!(plain, Error::CheckpointNotDirectory { .. }),
            "{plain}"
        );
        assert_eq!(plain.code(), wren_shim::status::Code::InvalidArgument);
    }
}
