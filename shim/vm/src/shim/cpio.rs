//! A writer for the cpio "newc" format, the one the kernel unpacks an initramfs from.
//!
//! Each entry: the magic `070701`, thirteen 8-digit hex fields (inode, mode, uid, gid,
//! nlink, mtime, file size, device major/minor, rdev major/minor, name size with its NUL,
//! checksum 0), the name and a NUL padded to 4 bytes, the data padded to 4 bytes. The
//! archive ends with an entry named `TRAILER!!!`.

use std::io::{self, Write};

/// A cpio newc archive being written.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_inode: u32,
}

/// `S_IFDIR`, `S_IFREG`, `S_IFCHR` as cpio spells them.
const DIR: u32 = 0o040_000;
const FILE: u32 = 0o100_000;
const CHAR: u32 = 0o020_000;

impl<W: Write> Writer<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_inode: 1,
        }
    }

    /// A directory (its parents must come first).
    pub fn dir(&mut self, name: &str, mode: u32) -> io::Result<()> {
        self.entry(name, DIR | mode, 2, (0, 0), &[])
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, FILE | mode, 1, (0, 0), data)
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, CHAR | mode, 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        Ok(self.out)
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is over 4 GiB"))
        })?;
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name too long"))?;
        let inode = self.next_inode;
        self.next_inode += 1;
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, name_size, 0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rest = (4 - self.written % 4) % 4;
        let zeros = [0u8; 3];
        // rest < 4, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        self.put(&zeros[..rest as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_terminated() {
        let mut writer = Writer::new(Vec::new());
        writer.dir("dev", 0o755).unwrap();
        writer.file("init", 0o755, b"abcde").unwrap();
        let bytes = writer.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("init\0"));
        assert!(text.contains("abcde"));
        assert!(text.contains("TRAILER!!!\0"));
        // the file entry: mode 0100755, size 5, name size 5
        assert!(text.contains("000081ed0000000000000000000000010000000000000005"));
    }
}
