//! Named pipes: creation and the open rules containerd's client follows.
//!
//! A FIFO open blocks until its peer appears, so nothing here ever opens one in a
//! blocking mode without a peer already present: readers open `O_NONBLOCK`, and a
//! writer is opened while a throwaway reader of our own holds the FIFO open.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;

/// Creates a FIFO at `path` readable and writable by its owner only.
pub fn make(path: &Path) -> io::Result<()> {
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR).map_err(io::Error::from)
}

/// Opens `path` for reading without waiting for a writer; the file stays non-blocking.
pub fn open_reader_nonblocking(path: &Path) -> io::Result<File> {
    // std opens every file O_CLOEXEC and hands it back owned.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Opens `path` for reading and writing; Linux never blocks on this open, which makes
/// it the way to hold a FIFO open whether or not a peer exists yet.
pub fn open_read_write_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// Opens `path` write-only and blocking, without waiting for the peer.
///
/// `O_WRONLY|O_NONBLOCK` fails with ENXIO while no reader exists, so a throwaway
/// reader of our own exists for the duration of the open. The result is a pure
/// writer: once the real reader goes away, writes fail with EPIPE instead of
/// filling a pipe nobody drains.
pub fn open_writer(path: &Path) -> io::Result<File> {
    let _placeholder_reader = open_reader_nonblocking(path)?;
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    set_blocking(&writer)?;
    Ok(writer)
}

/// Clears `O_NONBLOCK` on `file`.
pub fn set_blocking(file: &File) -> io::Result<()> {
    let flags = fcntl(file.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
    fcntl(file.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn writer_opens_without_peer_and_reader_sees_data_then_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        make(&path).unwrap();
        let reader = open_reader_nonblocking(&path).unwrap();
        let mut writer = open_writer(&path).unwrap();
        writer.write_all(b"hello").unwrap();
        drop(writer);
        set_blocking(&reader).unwrap();
        let mut text = String::new();
        (&reader).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
    }

    #[test]
    fn writer_without_reader_gets_epipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        make(&path).unwrap();
        let mut writer = open_writer(&path).unwrap();
        let err = writer.write_all(b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
