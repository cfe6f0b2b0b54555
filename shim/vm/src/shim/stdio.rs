//! A guest process's stdio on the host: containerd's FIFOs fed from (and feeding) the agent.
//!
//! Output is pulled: one thread per stream keeps a ReadOutput call open and writes what
//! comes back to the FIFO, until the agent answers empty (end of file in the guest). Stdin
//! is pushed: a thread reads the FIFO and sends WriteStdin, then CloseStdin at end of file.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protobuf::EnumOrUnknown;
use wren_shim_protocol::vm_agent::{
    AgentClient, ProcessRef, ReadOutputRequest, Stream, WriteStdinRequest,
};

/// Output still arriving after the exit is waited for this long at most (a background
/// child in the guest may hold the pipe open for ever).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// The output copies of one process; [`Pumps::drain`] waits for them.
#[derive(Debug)]
pub struct Pumps {
    done: Receiver<()>,
    count: usize,
}

impl Pumps {
    /// Waits until both outputs reached end of file, or the grace period is over.
    pub fn drain(&self) {
        let deadline = Instant::now() + DRAIN_GRACE;
        for _ in 0..self.count {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                return;
            }
        }
    }
}

/// An output destination: a FIFO path, opened read-write as containerd's shims do (the
/// open never blocks and writes never fail for want of a reader), or a `file://` URI
/// (`wrenctl run -d`, `ctr run --log-uri file://...`), appended to. `binary://` loggers
/// are not supported.
pub fn open_output(path: &str) -> std::io::Result<Option<File>> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(file) = path.strip_prefix("file://") {
        if let Some(parent) = std::path::Path::new(file).parent() {
            std::fs::create_dir_all(parent)?;
        }
        return File::options()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(file)
            .map(Some);
    }
    if path.contains("://") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "only FIFOs and file:// URIs are supported",
        ));
    }
    File::options().read(true).write(true).open(path).map(Some)
}

/// Starts copying the process's stdout and stderr to `outputs` (None: read and dropped,
/// so the guest process never blocks on a full pipe).
pub fn start_output(
    agent: &Arc<AgentClient>,
    process: &ProcessRef,
    outputs: [Option<File>; 2],
) -> Pumps {
    let (sender, done) = mpsc::channel();
    for (stream, output) in [Stream::STDOUT, Stream::STDERR].into_iter().zip(outputs) {
        let mut request = ReadOutputRequest::new();
        request.container_id.clone_from(&process.container_id);
        request.exec_id.clone_from(&process.exec_id);
        request.stream = EnumOrUnknown::new(stream);
        let (agent, sender) = (Arc::clone(agent), sender.clone());
        std::thread::spawn(move || {
            copy_output(&agent, &request, output);
            let _ = sender.send(());
        });
    }
    Pumps { done, count: 2 }
}

fn copy_output(agent: &AgentClient, request: &ReadOutputRequest, mut output: Option<File>) {
    loop {
        let data = match agent.read_output(ttrpc::context::Context::default(), request) {
            Ok(response) if !response.data.is_empty() => response.data,
            // End of file, or the VM is gone.
            Ok(_) | Err(_) => return,
        };
        if let Some(file) = output.as_mut() {
            if file.write_all(&data).is_err() {
                output = None; // keep draining the guest pipe
            }
        }
    }
}

/// Copies the stdin FIFO to the guest until containerd's writer closes it.
pub fn start_stdin(agent: &Arc<AgentClient>, process: &ProcessRef, path: &str) {
    if path.is_empty() {
        return;
    }
    let (agent, process, path) = (Arc::clone(agent), process.clone(), path.to_owned());
    std::thread::spawn(move || {
        // Blocks until a writer opens the FIFO, or Delete unblocks it (unblock_stdin).
        if let Ok(mut fifo) = File::open(&path) {
            let mut buffer = vec![0; 32 * 1024];
            loop {
                match fifo.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut request = WriteStdinRequest::new();
                        request.container_id.clone_from(&process.container_id);
                        request.exec_id.clone_from(&process.exec_id);
                        request.data = buffer[..n].to_vec();
                        if agent
                            .write_stdin(ttrpc::context::Context::default(), &request)
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        }
        let _ = agent.close_stdin(ttrpc::context::Context::default(), &process);
    });
}

/// Ends a [`start_stdin`] thread still waiting to open the FIFO: a non-blocking open for
/// writing succeeds since it is a reader, and closing at once gives it end of file.
pub fn unblock_stdin(path: &str) {
    if !path.is_empty() {
        let _ = File::options()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
    }
}
