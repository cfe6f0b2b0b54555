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
        Command::Pause(id) => manage::pause(&ctl, &id)?,
        Command::Resume(id) => manage::resume(&ctl, &id)?,
        Command::Stats(id) => manage::stats(&ctl, &id)?,
        Command::Events(ids) => manage::events(&ctl, &ids)?,
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
    }
    Ok(0)
}
