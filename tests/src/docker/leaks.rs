//! What a private dockerd leaves behind besides its containerd's leftovers: containers it
//! still lists, runc state in its runtimes' roots, mounts under its dirs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{DockerRuntime, Dockerd};
use crate::containerd::{mounts_under, unmount};
use crate::leaks::assert_none_left;

impl Dockerd {
    /// The runc root wren's options file names.
    pub(super) fn wren_runc_root(&self) -> PathBuf {
        self.run_dir().join("runtime-wren")
    }

    /// Where runc keeps the state of container `id` (Docker's full id) run on `rt`.
    pub fn runc_state(&self, rt: DockerRuntime, id: &str) -> PathBuf {
        let root = match rt {
            DockerRuntime::Runc => self.exec_root().join("runtime-runc"),
            DockerRuntime::Wren => self.wren_runc_root(),
        };
        root.join(self.containerd.namespace()).join(id)
    }

    /// The runc roots of both runtimes: Docker gives runc `<exec-root>/runtime-runc`;
    /// runc keeps each container under `<root>/<containerd namespace>/<id>`.
    fn runc_roots(&self) -> Vec<PathBuf> {
        let namespace = self.containerd.namespace();
        [self.exec_root().join("runtime-runc"), self.wren_runc_root()]
            .into_iter()
            .map(|root| root.join(namespace))
            .collect()
    }

    /// Polls (bounded) until neither dockerd nor its containerd has anything left; panics
    /// with the list otherwise.
    pub fn assert_no_leaks(&self) {
        assert_none_left("dockerd", || self.leaks(), || self.log_tail());
        self.containerd.assert_no_leaks();
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks = Vec::new();
        if self.is_running() {
            let listed = self.docker_ok(&["ps", "--all", "--quiet"]);
            if !listed.trim().is_empty() {
                leaks.push(format!("containers: {}", listed.split_whitespace().count()));
            }
        }
        for root in self.runc_roots() {
            for id in entries(&root) {
                leaks.push(format!("runc state {}", id.display()));
            }
        }
        // dockerd bind-mounts its data root onto itself, and keeps that mount.
        let data_root = self.data_root().display().to_string();
        for mount in self.mounts() {
            if mount != data_root {
                leaks.push(format!("mount {mount}"));
            }
        }
        leaks.extend(self.containerd.leaks());
        leaks
    }

    fn mounts(&self) -> Vec<String> {
        let mut mounts = mounts_under(self.dir.path());
        mounts.extend(mounts_under(self.run_dir()));
        mounts
    }

    /// `docker rm --force` for every container this daemon still lists, best effort.
    pub(super) fn remove_containers(&self) {
        if !self.is_running() {
            return;
        }
        let listed = self.docker(&["ps", "--all", "--quiet"]);
        let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "--force", id]);
        }
    }

    /// After dockerd has stopped: runc state, mounts and the run dir, best effort. The
    /// containerd instance cleans up shims, cgroups and its own dirs when it drops.
    pub(super) fn remove_leftovers(&self) {
        for root in self.runc_roots() {
            for state in entries(&root) {
                let Some(id) = state.file_name() else {
                    continue;
                };
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&root)
                    .arg("delete")
                    .arg("--force")
                    .arg(id)
                    .output();
            }
        }
        for mount in self.mounts().iter().rev() {
            unmount(mount);
        }
        let _ = fs::remove_dir_all(self.run_dir());
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| entries.filter_map(|e| Some(e.ok()?.path())).collect(),
    )
}
