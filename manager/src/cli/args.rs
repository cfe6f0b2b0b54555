//! Hand-written argument parsing for wrenctl, and the help texts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Options before the command.
#[derive(Debug)]
pub struct Global {
    pub state: PathBuf,
    pub namespace: String,
    pub debug: bool,
}

#[derive(Debug)]
pub enum Command {
    Run(RunArgs),
    Exec(ExecArgs),
    Ps(String),
    Kill {
        id: String,
        signal: String,
        all: bool,
    },
    Stop {
        id: String,
        grace: Duration,
    },
    Pause(String),
    Resume(String),
    Stats(String),
    Events(Vec<String>),
    Delete {
        id: String,
        force: bool,
    },
    List,
    Checkpoint(super::checkpoint::CheckpointArgs),
    Help(Option<String>),
    Version,
    /// No command at all: the usage, as an error.
    Usage,
}

/// `docker stop`'s default grace period.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct RunArgs {
    pub id: Option<String>,
    pub detach: bool,
    pub remove: bool,
    pub tty: bool,
    pub shim: Option<PathBuf>,
    pub runtime_options: Option<String>,
    pub bundle: Option<PathBuf>,
    pub rootfs: Option<PathBuf>,
    pub rootfs_mount: Option<String>,
    pub shim_log: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    pub args: Vec<String>,
}

#[derive(Debug, Default)]
pub struct ExecArgs {
    pub id: String,
    pub exec_id: Option<String>,
    pub tty: bool,
    pub args: Vec<String>,
}

pub const USAGE: &str = "\
wrenctl: run containers on any containerd shim v2 binary, without containerd

usage: wrenctl [--state DIR] [--namespace NS] [--debug] COMMAND [ARGS]

commands:
  run      create and start a container (attached unless -d)
  exec     run an extra process in a running container
  ps       list a container's processes
  stop     stop a container: TERM, then KILL after a grace period
  kill     signal a container's init (or all its processes)
  pause    freeze a container
  resume   thaw a container
  stats    print a container's cgroup metrics
  events   print the events of detached containers until Ctrl-C
  delete   remove a stopped container and its shim
  list     list the containers wrenctl knows
  checkpoint  dump a running container with CRIU (restore: run --checkpoint DIR)

global options:
  --state DIR       state directory (default $WRENCTL_STATE or /run/wrenctl)
  --namespace NS    containerd namespace (default \"wrenctl\")
  --debug           run shims with -debug and copy their log to stderr
  --version         print wrenctl's version

`wrenctl COMMAND --help` explains each command.
";

/// The help text of one command.
pub fn command_help(command: &str) -> Option<&'static str> {
    Some(match command {
        "run" => "\
usage: wrenctl run [OPTIONS] --bundle DIR
       wrenctl run [OPTIONS] --rootfs DIR -- COMMAND [ARGS...]

Starts a shim, creates and starts a container in it. Attached by default: the
container's output goes to your terminal and wrenctl exits with its exit code.

  --name ID                container id (default: generated, printed with -d)
  -d, --detach             start in the background; output goes to <state>/<ns>/<id>/output.log
  --rm                     remove the container and its shim after it exits (attached only)
  -t, --tty                allocate a terminal (attached only)
  --shim BINARY            shim binary (default: containerd-shim-wren-v2 next to wrenctl, else in PATH)
  --runtime-options OPTS   runc options: key=value,... or JSON, keys like binary_name, root,
                           systemd_cgroup, no_pivot_root, no_new_keyring, shim_cgroup
  --bundle DIR             an OCI bundle (config.json + rootfs); its name should be the id
  --rootfs DIR             a root filesystem directory; wrenctl writes the bundle
  --rootfs-mount KIND      with --rootfs: spec (default, root.path = DIR), bind, or overlay
                           (DIR as read-only lower layer, changes kept in the bundle)
  --shim-log FILE          append the shim's log to FILE
  --checkpoint DIR         restore the image `wrenctl checkpoint` wrote to DIR instead of
                           starting afresh (same bundle, or rootfs and command, as before)

example: wrenctl run --rm --rootfs /srv/busybox -- sh -c 'echo hi'",
        "exec" => "\
usage: wrenctl exec [-t] [--exec-id EID] ID -- COMMAND [ARGS...]

Runs COMMAND inside container ID (same user, env and cwd as its init), attached,
and exits with its exit code.",
        "ps" => "usage: wrenctl ps ID\n\nLists the host pids of ID's processes; exec processes show their exec id.",
        "kill" => "\
usage: wrenctl kill [-s SIGNAL] [--all] ID

Sends SIGNAL (default TERM; a name like KILL or SIGKILL, or a number) to ID's init,
or with --all to every process of the container.",
        "stop" => "\
usage: wrenctl stop [-t SECONDS] ID

Sends TERM to ID's init, waits up to SECONDS (default 10) for the container to exit,
then sends KILL to all its processes, like `docker stop`. The container stays, stopped:
remove it with `wrenctl delete ID`.",
        "pause" => "usage: wrenctl pause ID\n\nFreezes every process of ID.",
        "resume" => "usage: wrenctl resume ID\n\nThaws a paused container.",
        "stats" => "usage: wrenctl stats ID\n\nPrints ID's cgroup metrics (CPU, memory, pids) as the shim reports them.",
        "events" => "\
usage: wrenctl events [ID...]

Listens on the events socket of each detached container (all by default) and prints
every event the shims publish until Ctrl-C. An attached `wrenctl run` receives its own
container's events itself; events published while nobody listens are dropped by the shim.",
        "delete" => "\
usage: wrenctl delete [-f] ID

Deletes a stopped container, shuts its shim down and removes its state. With -f a
running container is killed first. A shim that died is cleaned up with its delete action.",
        "list" => "usage: wrenctl list\n\nLists the containers in the namespace with their status.",
        "checkpoint" => super::checkpoint::HELP,
        _ => return None,
    })
}

/// Parses the whole command line (without `argv[0]`).
pub fn parse(args: Vec<String>) -> Result<(Global, Command)> {
    let mut global = Global {
        state: std::env::var_os("WRENCTL_STATE")
            .map_or_else(|| PathBuf::from("/run/wrenctl"), PathBuf::from),
        namespace: "wrenctl".into(),
        debug: false,
    };
    let mut it = args.into_iter();
    let command = loop {
        let Some(arg) = it.next() else {
            return Ok((global, Command::Usage));
        };
        match arg.as_str() {
            "--state" => global.state = PathBuf::from(value(&mut it, "--state")?),
            "--namespace" | "-n" => global.namespace = value(&mut it, "--namespace")?,
            "--debug" => global.debug = true,
            "-h" | "--help" | "help" => return Ok((global, Command::Help(it.next()))),
            "-v" | "--version" | "version" => return Ok((global, Command::Version)),
            flag if flag.starts_with('-') => bail!("unknown option {flag}; see `wrenctl --help`"),
            _ => break arg,
        }
    };
    let rest: Vec<String> = it.collect();
    if rest
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
    {
        return Ok((global, Command::Help(Some(command))));
    }
    let parsed = match command.as_str() {
        "run" => Command::Run(parse_run(rest)?),
        "exec" => Command::Exec(parse_exec(rest)?),
        "ps" => Command::Ps(single_id(&command, rest)?),
        "kill" => parse_kill(rest)?,
        "stop" => parse_stop(rest)?,
        "pause" => Command::Pause(single_id(&command, rest)?),
        "resume" => Command::Resume(single_id(&command, rest)?),
        "stats" => Command::Stats(single_id(&command, rest)?),
        "events" => Command::Events(rest),
        "delete" | "rm" => parse_delete(rest)?,
        "list" | "ls" => Command::List,
        "checkpoint" => Command::Checkpoint(super::checkpoint::parse(rest)?),
        other => bail!("unknown command {other:?}; see `wrenctl --help`"),
    };
    Ok((global, parsed))
}

fn value(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<String> {
    it.next().with_context(|| format!("{flag} needs a value"))
}

fn single_id(command: &str, rest: Vec<String>) -> Result<String> {
    match <[String; 1]>::try_from(rest) {
        Ok([id]) if !id.starts_with('-') => Ok(id),
        _ => bail!("usage: wrenctl {command} ID"),
    }
}

fn parse_run(rest: Vec<String>) -> Result<RunArgs> {
    let mut run = RunArgs::default();
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => {
                run.args = it.by_ref().collect();
            }
            "--name" => run.id = Some(value(&mut it, "--name")?),
            "-d" | "--detach" => run.detach = true,
            "--rm" => run.remove = true,
            "-t" | "--tty" => run.tty = true,
            "--shim" => run.shim = Some(value(&mut it, "--shim")?.into()),
            "--runtime-options" => run.runtime_options = Some(value(&mut it, "--runtime-options")?),
            "--bundle" => run.bundle = Some(value(&mut it, "--bundle")?.into()),
            "--rootfs" => run.rootfs = Some(value(&mut it, "--rootfs")?.into()),
            "--rootfs-mount" => run.rootfs_mount = Some(value(&mut it, "--rootfs-mount")?),
            "--shim-log" => run.shim_log = Some(value(&mut it, "--shim-log")?.into()),
            "--checkpoint" => run.checkpoint = Some(value(&mut it, "--checkpoint")?.into()),
            other => bail!("run: unexpected {other:?}; see `wrenctl run --help`"),
        }
    }
    match (&run.bundle, &run.rootfs) {
        (Some(_), Some(_)) => bail!("run: give either --bundle or --rootfs, not both"),
        (None, None) => bail!("run: give --bundle DIR, or --rootfs DIR -- COMMAND"),
        (None, Some(_)) if run.args.is_empty() => bail!("run: --rootfs needs a command after --"),
        _ => {}
    }
    if run.detach && (run.tty || run.remove) {
        bail!("run: -t and --rm need an attached run (drop -d)");
    }
    Ok(run)
}

fn parse_exec(rest: Vec<String>) -> Result<ExecArgs> {
    let mut exec = ExecArgs::default();
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--" => exec.args = it.by_ref().collect(),
            "-t" | "--tty" => exec.tty = true,
            "--exec-id" => exec.exec_id = Some(value(&mut it, "--exec-id")?),
            id if !id.starts_with('-') && exec.id.is_empty() => exec.id = id.to_owned(),
            command if !command.starts_with('-') => {
                let rest: Vec<String> = std::iter::once(arg.clone()).chain(it).collect();
                bail!(
                    "exec: put the command after `--`: wrenctl exec {} -- {}",
                    exec.id,
                    rest.join(" ")
                )
            }
            other => bail!("exec: unexpected {other:?}; see `wrenctl exec --help`"),
        }
    }
    if exec.id.is_empty() || exec.args.is_empty() {
        bail!("usage: wrenctl exec [-t] ID -- COMMAND [ARGS...]");
    }
    Ok(exec)
}

fn parse_kill(rest: Vec<String>) -> Result<Command> {
    let (mut signal, mut all, mut id) = ("TERM".to_owned(), false, None);
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-s" | "--signal" => signal = value(&mut it, "-s")?,
            "-a" | "--all" => all = true,
            other if !other.starts_with('-') && id.is_none() => id = Some(arg),
            other => bail!("kill: unexpected {other:?}; see `wrenctl kill --help`"),
        }
    }
    let id = id.context("usage: wrenctl kill [-s SIGNAL] [--all] ID")?;
    Ok(Command::Kill { id, signal, all })
}

fn parse_stop(rest: Vec<String>) -> Result<Command> {
    let (mut grace, mut id) = (DEFAULT_STOP_GRACE, None);
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-t" | "--time" | "--timeout" => {
                let seconds = value(&mut it, "-t")?;
                let seconds: u64 = seconds
                    .parse()
                    .with_context(|| format!("stop: -t wants whole seconds, not {seconds:?}"))?;
                grace = Duration::from_secs(seconds);
            }
            other if !other.starts_with('-') && id.is_none() => id = Some(arg),
            other => bail!("stop: unexpected {other:?}; see `wrenctl stop --help`"),
        }
    }
    let id = id.context("usage: wrenctl stop [-t SECONDS] ID")?;
    Ok(Command::Stop { id, grace })
}

fn parse_delete(rest: Vec<String>) -> Result<Command> {
    let (mut force, mut id) = (false, None);
    for arg in rest {
        match arg.as_str() {
            "-f" | "--force" => force = true,
            other if !other.starts_with('-') && id.is_none() => id = Some(arg),
            other => bail!("delete: unexpected {other:?}; see `wrenctl delete --help`"),
        }
    }
    Ok(Command::Delete {
        id: id.context("usage: wrenctl delete [-f] ID")?,
        force,
    })
}

/// A signal name (`TERM`, `SIGTERM`) or number.
pub fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(number) = text.parse::<u32>() {
        return Ok(number);
    }
    let name = if text.starts_with("SIG") {
        text.to_uppercase()
    } else {
        format!("SIG{}", text.to_uppercase())
    };
    let signal: nix::sys::signal::Signal = name
        .parse()
        .with_context(|| format!("unknown signal {text:?}"))?;
    Ok(u32::try_from(signal as i32)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn run_with_rootfs_and_command() {
        let (global, cmd) = parse(argv(
            "--state /tmp/s run --rm --shim /x --rootfs /r -- sh -c true",
        ))
        .unwrap();
        assert_eq!(global.state, PathBuf::from("/tmp/s"));
        let Command::Run(run) = cmd else {
            panic!("not run")
        };
        assert!(run.remove && !run.detach);
        assert_eq!(run.args, ["sh", "-c", "true"]);
        assert!(parse(argv("run -d -t --rootfs /r -- sh")).is_err());
        assert!(parse(argv("run --rootfs /r")).is_err());
    }

    #[test]
    fn conventions_and_hints() {
        assert!(matches!(parse(Vec::new()).unwrap().1, Command::Usage));
        assert!(matches!(
            parse(argv("--version")).unwrap().1,
            Command::Version
        ));
        let err = parse(argv("exec st true")).unwrap_err().to_string();
        assert!(err.contains("wrenctl exec st -- true"), "{err}");
    }

    #[test]
    fn help_and_signals() {
        assert!(
            matches!(parse(argv("kill --help")).unwrap().1, Command::Help(Some(c)) if c == "kill")
        );
        assert!(command_help("run").is_some());
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("NOPE").is_err());
        let Command::Stop { id, grace } = parse(argv("stop -t 3 web")).unwrap().1 else {
            panic!("not stop")
        };
        assert_eq!((id.as_str(), grace), ("web", Duration::from_secs(3)));
        assert!(
            matches!(parse(argv("stop web")).unwrap().1, Command::Stop { grace, .. } if grace == DEFAULT_STOP_GRACE)
        );
        let Command::Kill { signal, all, id } = parse(argv("kill -s INT --all c1")).unwrap().1
        else {
            panic!()
        };
        assert_eq!((signal.as_str(), all, id.as_str()), ("INT", true, "c1"));
    }
}
