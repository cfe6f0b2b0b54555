//! One running shim: launched (or found again), connected, and torn down like containerd
//! tears one down (docs/protocol.md §1.11).

use std::os::fd::OwnedFd;
use std::time::Duration;

use wren_shim_protocol::runc;

use crate::address::ShimAddress;
use crate::client::{ExitInfo, TaskClient, TaskError};
use crate::launch::{LaunchError, ShimConfig};
use crate::shim_log::{LogDrain, ShimLog, ShimLogError};
use crate::sys;

/// How long teardown waits for the shim process to exit after `Shutdown`.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Errors from launching, attaching to or tearing down a shim.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// Setting up the log FIFO failed.
    #[error("failed to set up the shim log")]
    Log(#[source] ShimLogError),
    /// `start` or `delete` failed.
    #[error("shim action failed")]
    Launch(#[source] LaunchError),
    /// Connecting to the printed address, or the first RPC, failed.
    #[error("failed to connect to shim for {id}")]
    Connect {
        /// Container id.
        id: String,
        /// The cause.
        #[source]
        source: TaskError,
    },
    /// The `Delete` RPC failed with something other than NotFound or a lost connection.
    #[error("failed to delete task {id}")]
    Delete {
        /// Container id.
        id: String,
        /// The cause.
        #[source]
        source: TaskError,
    },
    /// `Shutdown` failed.
    #[error("failed to shut down shim of {id}")]
    Shutdown {
        /// Container id.
        id: String,
        /// The cause.
        #[source]
        source: TaskError,
    },
}

/// Whether the shim answered during teardown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimLiveness {
    /// It answered `Delete`/`Shutdown`.
    Alive,
    /// The connection was gone: only the `delete` action cleaned up.
    Dead,
}

/// What teardown found.
#[derive(Debug, Clone)]
pub struct Teardown {
    /// The init's exit from the `Delete` RPC (none if already deleted or the shim was dead).
    pub deleted: Option<ExitInfo>,
    /// What the `delete` action reported, if it ran (the shim did not exit cleanly) and
    /// succeeded.
    pub cleanup: Option<ExitInfo>,
    /// Why the `delete` action failed, if it did (a warning: the shim may have cleaned up already).
    pub cleanup_error: Option<String>,
    /// Whether the shim was still answering.
    pub liveness: ShimLiveness,
}

/// A shim the manager talks to.
#[derive(Debug)]
pub struct Shim {
    config: ShimConfig,
    address: ShimAddress,
    client: TaskClient,
    shim_pid: u32,
    // Bound to the shim process itself, immune to pid reuse; readable once it exits.
    pidfd: Option<OwnedFd>,
    log: Option<LogDrain>,
}

impl Shim {
    /// Creates the log FIFO, runs `start`, and connects to the printed address.
    pub fn launch(
        config: ShimConfig,
        options: Option<&runc::Options>,
        log: &ShimLog,
    ) -> Result<Self, ShimError> {
        let drain = LogDrain::start(&config.bundle, log).map_err(ShimError::Log)?;
        let address = config.start(options).map_err(ShimError::Launch)?;
        let mut shim = Self::attach(config, address)?;
        shim.log = Some(drain);
        Ok(shim)
    }

    /// Connects to an already running shim (e.g. one a previous `wrenctl run -d` started).
    pub fn attach(config: ShimConfig, address: ShimAddress) -> Result<Self, ShimError> {
        let connect_err = |source| ShimError::Connect {
            id: config.id.clone(),
            source,
        };
        let client = TaskClient::connect(&address, &config.namespace).map_err(connect_err)?;
        let info = client.connect_task(&config.id).map_err(connect_err)?;
        let pidfd = sys::pidfd_open(info.shim_pid).ok();
        Ok(Self {
            config,
            address,
            client,
            shim_pid: info.shim_pid,
            pidfd,
            log: None,
        })
    }

    /// The task client.
    pub fn client(&self) -> &TaskClient {
        &self.client
    }

    /// Where the shim listens.
    pub fn address(&self) -> &ShimAddress {
        &self.address
    }

    /// The shim daemon's pid, as `Connect` reported it.
    pub fn pid(&self) -> u32 {
        self.shim_pid
    }

    /// The launch configuration.
    pub fn config(&self) -> &ShimConfig {
        &self.config
    }

    /// `Delete` (NotFound tolerated), `Shutdown`, close, wait for the shim to exit; the
    /// `delete` action only if it did not; finally the log FIFO and a leftover socket file
    /// are removed.
    pub fn teardown(self) -> Result<Teardown, ShimError> {
        let id = self.config.id.clone();
        let (deleted, liveness) = match self.client.delete(&id, "") {
            Ok(exit) => (Some(exit), ShimLiveness::Alive),
            Err(e) if e.is_not_found() => (None, ShimLiveness::Alive),
            Err(e) if e.is_connection_lost() => (None, ShimLiveness::Dead),
            Err(source) => return Err(ShimError::Delete { id, source }),
        };
        if liveness == ShimLiveness::Alive {
            self.client
                .shutdown(&id)
                .map_err(|source| ShimError::Shutdown {
                    id: id.clone(),
                    source,
                })?;
        }
        Ok(self.finish(deleted, liveness))
    }

    /// The cleanup for a shim that is gone (killed, crashed): no RPCs, only the
    /// `delete` action and local cleanup, as containerd does on a closed connection.
    pub fn cleanup_dead(self) -> Teardown {
        self.finish(None, ShimLiveness::Dead)
    }

    fn finish(self, deleted: Option<ExitInfo>, liveness: ShimLiveness) -> Teardown {
        let Self {
            config,
            address,
            client,
            pidfd,
            log,
            ..
        } = self;
        drop(client);
        let exited = pidfd
            .as_ref()
            .is_some_and(|fd| sys::wait_exit(fd, EXIT_GRACE).unwrap_or(false));
        // A shim that answered Delete and exited on Shutdown left nothing for the delete
        // action, an exec of the shim and of runc, to clean (containerd does not run it
        // then either). One that died, or ignored Shutdown, gets it.
        let (cleanup, cleanup_error) = if liveness == ShimLiveness::Alive && exited {
            (None, None)
        } else {
            match config.delete_action() {
                Ok(exit) => (Some(exit), None),
                Err(e) => (None, Some(crate::error_chain(&e))),
            }
        };
        if let Some(log) = log {
            log.finish();
        }
        let shim_gone = pidfd
            .as_ref()
            .is_none_or(|fd| sys::wait_exit(fd, Duration::ZERO).unwrap_or(false));
        if shim_gone {
            // A SIGKILLed shim leaves its socket behind (docs/protocol.md §1.5).
            let _ = std::fs::remove_file(&address.socket);
        }
        Teardown {
            deleted,
            cleanup,
            cleanup_error,
            liveness,
        }
    }
}
