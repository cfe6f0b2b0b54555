//! The runc runtime: the state every handler shares, and the framework's [`Runtime`] hooks.
//! Locks: the registry and each process's state are locked only to read or assign; a runc
//! call holds at most the one process's `ops` lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use protobuf::well_known_types::any::Any;
use wren_cgroups::OomWatcher;
use wren_shim::{CleanupContext, Monitor, Publisher, Runtime, ShimContext};
use wren_shim_protocol::types::RuntimeInfo;

use crate::cleanup::{self, CleanupError};
use crate::container::Container;
use crate::error::Error;
use crate::exits::{self, Lifecycle};
use crate::options;

/// What the registry holds under an id.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Create is running for this id: taken, but not visible yet.
    Creating,
    Ready(Arc<Container>),
}

/// State shared by every handler thread.
#[derive(Debug)]
pub struct Shared {
    pub namespace: String,
    pub publisher: Publisher,
    /// Every child (runc, logging binaries) is spawned through the daemon's one monitor,
    /// so its exit is registered before the fork and reaped only by the main loop.
    pub spawner: Arc<Monitor>,
    /// Started by the first process that has stdio to copy, not with the daemon: a shim's
    /// first request (Connect) needs none. Kept alive from then on: dropping it stops
    /// the copy thread.
    pub engine: OnceLock<wren_io::Engine>,
    /// Held while the engine starts, so that two Creates start one.
    pub engine_start: Mutex<()>,
    pub oom: Arc<OomWatcher>,
    pub lifecycle: Arc<Lifecycle>,
    pub containers: Mutex<HashMap<String, Slot>>,
}

impl Shared {
    /// The stdio copy engine, started on first use.
    pub fn engine(&self) -> Result<wren_io::EngineHandle, Error> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine.handle());
        }
        let _starting = self
            .engine_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(engine) = self.engine.get() {
            return Ok(engine.handle());
        }
        let engine = wren_io::Engine::start().map_err(Error::Engine)?;
        let handle = engine.handle();
        // Cannot be set already: only this lock's holder sets it.
        let _ = self.engine.set(engine);
        Ok(handle)
    }

    pub fn registry(&self) -> MutexGuard<'_, HashMap<String, Slot>> {
        // Only inserts and removals happen under this lock.
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The container `id`, if created.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, Error> {
        match self.registry().get(id) {
            Some(Slot::Ready(container)) => Ok(Arc::clone(container)),
            Some(Slot::Creating) | None => Err(Error::ContainerNotFound { id: id.to_owned() }),
        }
    }

    /// Takes `id` for a Create in progress.
    pub fn reserve(&self, id: &str) -> Result<(), Error> {
        let mut registry = self.registry();
        if registry.contains_key(id) {
            return Err(Error::ContainerExists { id: id.to_owned() });
        }
        registry.insert(id.to_owned(), Slot::Creating);
        Ok(())
    }

    pub fn publish_ready(&self, container: &Arc<Container>) {
        self.registry()
            .insert(container.id.clone(), Slot::Ready(Arc::clone(container)));
    }

    pub fn release(&self, id: &str) {
        self.registry().remove(id);
    }
}

/// The runc runtime (`io.containerd.wren.v2`).
#[derive(Debug)]
pub struct RuncRuntime {
    pub shared: Arc<Shared>,
}

impl Runtime for RuncRuntime {
    type Error = RuntimeError;

    const NAME: &'static str = "io.containerd.wren.v2";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn new(context: ShimContext) -> Result<Self, RuntimeError> {
        let spawner = Arc::clone(&context.monitor);
        let (lifecycle, oom) = exits::start(
            &context.monitor,
            context.publisher.clone(),
            &context.main_loop,
        )?;
        let shared = Shared {
            namespace: context.namespace,
            publisher: context.publisher,
            spawner,
            engine: OnceLock::new(),
            engine_start: Mutex::default(),
            oom,
            lifecycle,
            containers: Mutex::default(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    fn cleanup(context: &CleanupContext) -> Result<u32, RuntimeError> {
        Ok(cleanup::delete_action(context)?)
    }

    fn info(options: Option<&Any>) -> Result<RuntimeInfo, RuntimeError> {
        Ok(cleanup::info(Self::NAME, Self::VERSION, options)?)
    }

    /// Reads `ShimCgroup` from either options form, so CRI handlers can set it too.
    fn shim_cgroup(options: &Any) -> Option<String> {
        options::RuntimeOptions::from_any(Some(options))
            .ok()
            .map(|options| options.shim_cgroup)
            .filter(|cgroup| !cgroup.is_empty())
    }
}

/// Why the runtime could not start, or a launch-time hook failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to start the runc service")]
    Start(#[from] Error),
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
}
