//! `wrenctl checkpoint`: dumps a running container with CRIU through its shim's Checkpoint
//! RPC; `wrenctl run --checkpoint DIR` restores such an image.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use wren_manager::protocol::runc::CheckpointOptions;
use wren_manager::shim::Shim;

use super::Ctl;

pub const HELP: &str = "\
usage: wrenctl checkpoint [OPTIONS] --image-path DIR ID

Dumps container ID with CRIU into DIR (created if missing). The container keeps running
unless --exit is given. Restore it with `wrenctl run --checkpoint DIR`, giving the same
--bundle (or --rootfs and command) as the checkpointed run.

  --image-path DIR     where the images go
  --exit               stop the container after the dump
  --leave-running      keep it running (the default)
  --work-path DIR      where CRIU writes its logs and work files (default: in the bundle,
                       removed after the dump)
  --tcp-established    allow established TCP connections
  --ext-unix-sk        allow unix sockets connected outside the container
  --shell-job          the container was started from a shell (a terminal)
  --file-locks         dump held file locks
  --empty-ns NS        do not dump namespace NS (e.g. network); repeatable

example: wrenctl checkpoint --exit --image-path /srv/ckpt/web web";

/// What `wrenctl checkpoint` was asked to do.
#[derive(Debug, Default)]
pub struct CheckpointArgs {
    pub id: String,
    pub image_path: PathBuf,
    pub options: CheckpointOptions,
}

pub fn parse(rest: Vec<String>) -> Result<CheckpointArgs> {
    let mut args = CheckpointArgs::default();
    let mut image_path = None;
    let mut it = rest.into_iter();
    let value = |it: &mut std::vec::IntoIter<String>, flag: &str| {
        it.next().with_context(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        let options = &mut args.options;
        match arg.as_str() {
            "--image-path" => image_path = Some(PathBuf::from(value(&mut it, &arg)?)),
            "--work-path" => options.work_path = value(&mut it, &arg)?,
            "--exit" => options.exit = true,
            "--leave-running" => options.exit = false,
            "--tcp-established" => options.open_tcp = true,
            "--ext-unix-sk" => options.external_unix_sockets = true,
            "--shell-job" => options.terminal = true,
            "--file-locks" => options.file_locks = true,
            "--empty-ns" => options.empty_namespaces.push(value(&mut it, &arg)?),
            id if !id.starts_with('-') && args.id.is_empty() => args.id = arg,
            other => bail!("checkpoint: unexpected {other:?}; see `wrenctl checkpoint --help`"),
        }
    }
    let Some(image_path) = image_path else {
        bail!("checkpoint: --image-path DIR is required");
    };
    if args.id.is_empty() {
        bail!("usage: wrenctl checkpoint [OPTIONS] --image-path DIR ID");
    }
    args.image_path = image_path;
    Ok(args)
}

pub fn checkpoint(ctl: &Ctl, args: &CheckpointArgs) -> Result<()> {
    let id = &args.id;
    let record = ctl.state.load(&ctl.namespace, id)?;
    let shim = Shim::attach(ctl.shim_config(&record), record.address()).with_context(|| {
        format!("the shim of {id} does not answer (delete it with `wrenctl delete {id}`)")
    })?;
    // containerd gives every bundle a `work` directory and shims keep CRIU's work files in
    // it (containerd's own shim fails without it).
    let work = record.bundle.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("work dir {}", work.display()))?;
    // The shim runs elsewhere (its cwd is the bundle): it needs an absolute path.
    std::fs::create_dir_all(&args.image_path)
        .with_context(|| format!("image path {}", args.image_path.display()))?;
    let image = args
        .image_path
        .canonicalize()
        .with_context(|| format!("image path {}", args.image_path.display()))?;
    let mut options = args.options.clone();
    if !options.work_path.is_empty() {
        std::fs::create_dir_all(&options.work_path)
            .with_context(|| format!("work path {}", options.work_path))?;
        options.work_path = std::path::absolute(&options.work_path)?
            .display()
            .to_string();
    }
    shim.client()
        .checkpoint(id, &image.display().to_string(), Some(&options))
        .with_context(|| format!("checkpoint of {id} into {}", image.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn flags_map_onto_containerd_checkpoint_options() {
        let args = parse(argv(
            "--exit --image-path /i --tcp-established --ext-unix-sk --shell-job \
             --file-locks --empty-ns network --work-path /w c1",
        ))
        .unwrap();
        assert_eq!(args.id, "c1");
        assert_eq!(args.image_path, PathBuf::from("/i"));
        let o = &args.options;
        assert!(o.exit && o.open_tcp && o.external_unix_sockets && o.terminal && o.file_locks);
        assert_eq!(o.empty_namespaces, ["network"]);
        assert_eq!(o.work_path, "/w");
        assert!(!parse(argv("--image-path /i c1")).unwrap().options.exit);
        assert!(parse(argv("c1")).is_err());
        assert!(parse(argv("--image-path /i")).is_err());
        assert!(parse(argv("--bogus --image-path /i c1")).is_err());
    }
}
