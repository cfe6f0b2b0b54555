//! wrenctl: run containers on any containerd shim v2 binary, without containerd.

mod cli;

use anyhow::Result;
use cli::args::{self, Command};
use cli::{manage, run, Ctl};
use wren_manager::state::StateDir;

fn main() {
    let code = match dispatch() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wrenctl: {err:#}");
            if needs_root(&err) {
                eprintln!("wrenctl needs root: it runs shims, which run runc (try sudo)");
            }
            125
        }
    };
    #[allow(
        clippy::exit,
        reason = "main passes the container's exit code on, after all destructors ran"
    )]
    std::process::exit(code);
}

fn dispatch() -> Result<i32> {
    let (global, command) = args::parse(std::env::args().skip(1).collect())?;
    let ctl = Ctl {
        state: StateDir::new(global.state),
        namespace: global.namespace,
        debug: global.debug,
    };
    match command {
        Command::Run(run_args) => return run::run(&ctl, &run_args),
        Command::Exec(exec_args) => return run::exec(&ctl, &exec_args),
        Command::Ps(id) => manage::ps(&ctl, &id)?,
        Command::Kill { id, signal, all } => manage::kill(&ctl, &id, &signal, all)?,
        Command::Stop { id, grace } => manage::stop(&ctl, &id, grace)?,
        Command::Pause(id) => manage::pause(&ctl, &id)?,
        Command::Resume(id) => manage::resume(&ctl, &id)?,
        Command::Stats(id) => manage::stats(&ctl, &id)?,
        Command::Events(ids) => cli::events::events(&ctl, &ids)?,
        Command::Delete { id, force } => manage::delete(&ctl, &id, force)?,
        Command::List => manage::list(&ctl)?,
        Command::Checkpoint(args) => cli::checkpoint::checkpoint(&ctl, &args)?,
        Command::Help(topic) => {
            let text = topic
                .as_deref()
                .and_then(args::command_help)
                .unwrap_or(args::USAGE);
            println!("{text}");
        }
        Command::Version => println!("wrenctl {}", env!("CARGO_PKG_VERSION")),
        Command::Usage => {
            eprintln!("{}", args::USAGE);
            return Ok(125);
        }
    }
    Ok(0)
}

/// Whether `err` is a permission failure of a user who is not root: the state and socket
/// directories are root's, and shims need root to run runc.
fn needs_root(err: &anyhow::Error) -> bool {
    let denied = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || cause
                .downcast_ref::<nix::Error>()
                .is_some_and(|errno| matches!(errno, nix::Error::EACCES | nix::Error::EPERM))
    });
    denied && !nix::unistd::geteuid().is_root()
}
