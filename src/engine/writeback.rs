//! A large file written in one stream (an export's shard) whose pages are
//! sent to the disk while it is still being written.
//!
//! [`atomic::OutputDir::write_with`](super::atomic::OutputDir::write_with)
//! makes every file durable (fsync) before renaming it into place. Written
//! plainly, a shard's hundreds of megabytes sit dirty in the page cache until
//! that fsync, which then waits for all of them: measured on an export of
//! 1 GB in four shards on two threads, both writers stood idle ~0.2 s at
//! each fsync, a quarter of the export's wall time. Here every
//! [`WriteBack::AHEAD`] bytes written start the write-out of what came
//! before (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which queues the pages
//! and returns), so the disk works while the shard is being made and the
//! final fsync waits for the last stretch only. The fsync stays the only
//! durability guarantee; the early write-out is a hint, and a filesystem
//! that refuses it (an error) is simply not hinted again.

use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// A file being written from start to end, its written pages sent to the
/// disk every [`WriteBack::AHEAD`] bytes.
pub struct WriteBack<'f> {
    file: &'f mut std::fs::File,
    written: u64,
    /// Bytes already handed to the disk.
    started: u64,
    hinting: bool,
}

impl<'f> WriteBack<'f> {
    /// Bytes written between two write-outs: large enough that the requests
    /// are few and sequential, small enough that the last stretch is short.
    pub const AHEAD: u64 = 8 << 20;

    /// `file`, written from its current end (a new, empty file).
    pub fn new(file: &'f mut std::fs::File) -> WriteBack<'f> {
        WriteBack {
            file,
            written: 0,
            started: 0,
            hinting: true,
        }
    }

    fn start_write_out(&mut self) {
        let len = self.written - self.started;
        // SAFETY: a descriptor we hold open; offsets within what was
        // written; the call only schedules write-out and reads no memory.
        let r = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.started as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            self.started = self.written;
        } else {
            self.hinting = false;
        }
    }
}

impl Write for WriteBack<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.hinting && self.written - self.started >= Self::AHEAD {
            self.start_write_out();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bytes_written_are_the_file_and_write_out_starts_every_stretch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
        let mut w = WriteBack::new(&mut file);
        for _ in 0..20 {
            w.write_all(&chunk).unwrap();
        }
        assert!(w.hinting, "the write-out hint was refused on a plain file");
        assert_eq!(
            w.started,
            2 * WriteBack::AHEAD,
            "write-out starts every {} bytes",
            WriteBack::AHEAD
        );
        w.flush().unwrap();
        file.sync_all().unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 20 << 20);
        assert!(back.chunks(1 << 20).all(|c| c == &chunk[..]));
    }
}
