//! `wrenctl run` and `wrenctl exec`: the attached paths, with FIFO stdio and terminals.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use wren_manager::bundle::{self, RootfsMount};
use wren_manager::client::{CreateTask, ExecProcess, ExitInfo, KillScope, TaskClient};
use wren_manager::events::EventSink;
use wren_manager::launch::resolve_binary;
use wren_manager::protocol::identifier;
use wren_manager::shim::Shim;
use wren_manager::shim_log::ShimLog;
use wren_manager::signals::SignalForwarder;
use wren_manager::state::{BundleOwner, ContainerRecord};
use wren_manager::stdio::{FifoSet, Input, OpenFifos, Output, StdinMode, Terminal};
use wren_manager::terminal::{RawMode, ResizeForwarder};

use super::args::{ExecArgs, RunArgs};
use super::{options, Ctl};

const DEFAULT_SHIM: &str = "containerd-shim-wren-v2";

/// Runs a container; returns the exit code wrenctl should exit with.
pub fn run(ctl: &Ctl, args: &RunArgs) -> Result<i32> {
    let shim_binary = find_shim(args.shim.as_deref())?;
    let options = args
        .runtime_options
        .as_deref()
        .map(options::parse)
        .transpose()?;
    let id = args.id.clone().unwrap_or_else(generated_id);
    let dir = new_container_dir(ctl, &id)?;
    let result = run_in(ctl, args, &id, &dir, shim_binary, options);
    if result.is_err() && ctl.state.load(&ctl.namespace, &id).is_err() {
        // Nothing started: no record to find the leftovers by, so drop them now.
        let _ = ctl.state.remove(&ctl.namespace, &id);
    }
    result
}

/// The id rule and the socket length first, so that a bad name is refused by name and not
/// by a file system error halfway through.
fn new_container_dir(ctl: &Ctl, id: &str) -> Result<PathBuf> {
    identifier::validate("namespace", &ctl.namespace)?;
    identifier::validate("container name", id)?;
    let dir = ctl.state.container_dir(&ctl.namespace, id);
    let socket = dir.join(EVENTS_SOCKET);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "name {id:?} is too long for {}: its events socket {} would pass the {MAX_SOCKET_PATH} \
             bytes a unix socket path may have; use a shorter --name (or --state)",
            ctl.state.root().display(),
            socket.display()
        );
    }
    if dir.exists() {
        bail!(
            "container {id} already exists: remove it with `wrenctl delete {id}` \
             (`wrenctl stop {id}` first if it runs), or pick another --name"
        );
    }
    Ok(ctl.state.create_container_dir(&ctl.namespace, id)?)
}

/// `sun_path` is 108 bytes, NUL included.
const MAX_SOCKET_PATH: usize = 107;
const EVENTS_SOCKET: &str = "events.sock";

fn run_in(
    ctl: &Ctl,
    args: &RunArgs,
    id: &str,
    dir: &Path,
    shim_binary: PathBuf,
    options: Option<wren_manager::protocol::runc::Options>,
) -> Result<i32> {
    let terminal = if args.tty {
        Terminal::On
    } else {
        Terminal::Off
    };
    let (bundle, bundle_owner, rootfs) = match (&args.bundle, &args.rootfs) {
        (Some(bundle), _) => {
            let bundle = bundle
                .canonicalize()
                .with_context(|| format!("bundle {}", bundle.display()))?;
            (bundle, BundleOwner::User, Vec::new())
        }
        (None, Some(rootfs)) => {
            let rootfs = rootfs
                .canonicalize()
                .with_context(|| format!("rootfs {}", rootfs.display()))?;
            let mount = rootfs_mount(args.rootfs_mount.as_deref())?;
            let mounts = bundle::write_default(dir, &rootfs, &args.args, terminal, &mount)?;
            (dir.to_path_buf(), BundleOwner::Wrenctl, mounts)
        }
        (None, None) => bail!("run needs --bundle or --rootfs"),
    };
    let record = ContainerRecord {
        id: id.to_owned(),
        namespace: ctl.namespace.clone(),
        shim: shim_binary,
        bundle,
        bundle_owner,
        socket: PathBuf::new(),
        api: wren_manager::address::TaskApi::V2,
        events_address: dir.join(EVENTS_SOCKET),
        output_log: args.detach.then(|| dir.join("output.log")),
    };
    // Attached runs receive their own events; nobody reads them, so the channel is closed.
    let sink = EventSink::bind(&record.events_address, crossbeam_channel::unbounded().0)?;
    let log = match (&args.shim_log, ctl.debug) {
        (Some(path), _) => ShimLog::File(path.clone()),
        (None, true) => ShimLog::Inherit,
        (None, false) => ShimLog::File(dir.join("shim.log")),
    };
    let shim = Shim::launch(ctl.shim_config(&record), options.as_ref(), &log)?;
    let record = ContainerRecord {
        socket: shim.address().socket.clone(),
        api: shim.address().api,
        ..record
    };
    ctl.state.save(&record)?;
    let create = CreateTask {
        id: id.to_owned(),
        bundle: record.bundle.clone(),
        rootfs,
        terminal: terminal.enabled(),
        options,
        checkpoint: checkpoint_dir(args.checkpoint.as_deref())?,
        ..Default::default()
    };
    let outcome = match &record.output_log {
        Some(log) => detached(shim.client(), create, log).map(|()| None),
        None => attached(shim.client(), &create, dir, terminal).map(Some),
    };
    let exit = match outcome {
        Ok(Some(exit)) => exit,
        Ok(None) => {
            println!("{id}");
            return Ok(0);
        }
        Err(err) => {
            // As containerd does after a failed Create: Delete, Shutdown and the shim's delete
            // action; then nothing refers to the container any more, so its record goes too.
            let _ = shim.teardown();
            let _ = ctl.state.remove(&ctl.namespace, id);
            return Err(err);
        }
    };
    if !args.remove && args.id.is_none() {
        // Nobody could name it otherwise: `list` would show it, but only if one looked.
        eprintln!("wrenctl: container {id} is kept; remove it with `wrenctl delete {id}`");
    }
    if args.remove {
        // The sink stays up through teardown: a shim flushes its last events (TaskDelete)
        // before it exits and would wait out its publish retries on a missing sink.
        shim.teardown()?;
        ctl.state.remove(&ctl.namespace, id)?;
    }
    drop(sink);
    Ok(exit_code(exit))
}

/// The absolute image directory of `--checkpoint` (the shim's cwd is not ours), or "".
fn checkpoint_dir(dir: Option<&Path>) -> Result<String> {
    dir.map_or(Ok(String::new()), |dir| {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("checkpoint {}", dir.display()))?;
        Ok(dir.display().to_string())
    })
}

/// Create + start with stdout and stderr appended to `log`, for a detached run.
fn detached(client: &TaskClient, create: CreateTask, log: &Path) -> Result<()> {
    let uri = format!("file://{}", log.display());
    let create = CreateTask {
        stdout: uri.clone(),
        stderr: uri,
        ..create
    };
    client.create(&create)?;
    client.start(&create.id, "")?;
    Ok(())
}

/// Create + start with FIFOs wired to this process's stdio; returns the exit.
fn attached(
    client: &TaskClient,
    create: &CreateTask,
    dir: &Path,
    terminal: Terminal,
) -> Result<ExitInfo> {
    let fifos = FifoSet::create(&dir.join("fifo"), &create.id, StdinMode::Piped, terminal)?;
    let open = fifos.open()?;
    let create = CreateTask {
        stdin: path_text(fifos.stdin.as_deref()),
        stdout: path_text(Some(&fifos.stdout)),
        stderr: path_text(fifos.stderr.as_deref()),
        ..create.clone()
    };
    client.create(&create)?;
    let session = Session::begin(client, &create.id, "", terminal, open)?;
    client.start(&create.id, "")?;
    session.finish(client, &create.id, "")
}

/// The local side of an attached process: pumps, raw mode, resize and signal forwarding.
struct Session {
    pump: wren_manager::stdio::Pump,
    _signals: SignalForwarder,
    _resize: Option<ResizeForwarder>,
    _raw: Option<RawMode>,
}

impl Session {
    fn begin(
        client: &TaskClient,
        id: &str,
        exec_id: &str,
        terminal: Terminal,
        open: OpenFifos,
    ) -> Result<Self> {
        let (raw, resize) = if terminal.enabled() {
            let raw = RawMode::enable().context("-t needs a terminal on stdin")?;
            let (c, i, e) = (client.clone(), id.to_owned(), exec_id.to_owned());
            let resize = ResizeForwarder::start(move |size| {
                let _ = c.resize_pty(&i, &e, u32::from(size.width), u32::from(size.height));
            })?;
            (Some(raw), Some(resize))
        } else {
            (None, None)
        };
        let (c, i, e) = (client.clone(), id.to_owned(), exec_id.to_owned());
        let signals = SignalForwarder::start(move |signal| {
            let signal = u32::try_from(signal).unwrap_or_default();
            match c.kill(&i, &e, signal, KillScope::Process) {
                // Already gone: the session is about to end by itself.
                Err(err) if !err.is_not_found() => {
                    eprintln!("wrenctl: failed to forward signal {signal} to {i}: {err}");
                }
                _ => {}
            }
        })
        .context("failed to forward signals")?;
        let (c, i, e) = (client.clone(), id.to_owned(), exec_id.to_owned());
        let pump = open.pump(
            Input::Inherit,
            Output::Inherit,
            Output::Inherit,
            move || {
                let _ = c.close_io(&i, &e);
            },
        )?;
        Ok(Self {
            pump,
            _signals: signals,
            _resize: resize,
            _raw: raw,
        })
    }

    fn finish(self, client: &TaskClient, id: &str, exec_id: &str) -> Result<ExitInfo> {
        let exit = client.wait(id, exec_id)?;
        self.pump.wait();
        Ok(exit)
    }
}

/// Runs an extra process in a container, attached; returns its exit code.
pub fn exec(ctl: &Ctl, args: &ExecArgs) -> Result<i32> {
    let record = ctl.state.load(&ctl.namespace, &args.id)?;
    let id = &args.id;
    let dead =
        || format!("the shim of {id} does not answer (delete it with `wrenctl delete {id}`)");
    let shim = Shim::attach(ctl.shim_config(&record), record.address()).with_context(dead)?;
    let client = shim.client();
    let exec_id = args
        .exec_id
        .clone()
        .unwrap_or_else(|| format!("exec-{}", std::process::id()));
    let terminal = if args.tty {
        Terminal::On
    } else {
        Terminal::Off
    };
    let mut spec = bundle::read_process(&record.bundle)?;
    spec["args"] = serde_json::json!(args.args);
    spec["terminal"] = serde_json::json!(terminal.enabled());
    let dir = ctl.state.container_dir(&ctl.namespace, &args.id);
    let fifos = FifoSet::create(&dir.join("fifo"), &exec_id, StdinMode::Piped, terminal)?;
    let open = fifos.open()?;
    let exec = client.exec(&ExecProcess {
        id: args.id.clone(),
        exec_id: exec_id.clone(),
        terminal: terminal.enabled(),
        stdin: path_text(fifos.stdin.as_deref()),
        stdout: path_text(Some(&fifos.stdout)),
        stderr: path_text(fifos.stderr.as_deref()),
        spec,
    });
    exec.map_err(|err| match err.is_connection_lost() {
        true => anyhow::Error::new(err).context(dead()),
        false => err.into(),
    })?;
    let session = Session::begin(client, &args.id, &exec_id, terminal, open)?;
    let started = client.start(&args.id, &exec_id);
    let exit = started
        .map_err(anyhow::Error::from)
        .and_then(|_| session.finish(client, &args.id, &exec_id));
    client.delete(&args.id, &exec_id).ok();
    Ok(exit_code(exit?))
}

fn find_shim(explicit: Option<&Path>) -> Result<PathBuf> {
    let name = explicit.unwrap_or(Path::new(DEFAULT_SHIM));
    let me = std::env::current_exe().ok();
    resolve_binary(name, me.as_deref())
        .with_context(|| format!("shim {} not found (give --shim PATH)", name.display()))
}

fn rootfs_mount(kind: Option<&str>) -> Result<RootfsMount> {
    Ok(match kind.unwrap_or("spec") {
        "spec" => RootfsMount::Spec,
        "bind" => RootfsMount::Bind,
        "overlay" => RootfsMount::Overlay,
        other => bail!("--rootfs-mount must be spec, bind or overlay, not {other:?}"),
    })
}

fn generated_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("wren-{}-{nanos:08x}", std::process::id())
}

fn path_text(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// wrenctl's own exit code for a container exit status (128+N for signals, like a shell).
pub fn exit_code(exit: ExitInfo) -> i32 {
    i32::try_from(exit.status).unwrap_or(255)
}
