//! Opening files that must be regular files: sources, slides, recipes,
//! `cpia.toml`, outputs read back. A leaf every layer may use.
//!
//! A path that was a regular file when it was listed may be something else
//! by the time it is opened (a source replaced after planning, a recipe
//! that is a FIFO, a link to `/dev/zero`). `File::open` would then block
//! forever on a FIFO with no writer, and reading a character device never
//! ends. Here every open is non-blocking (`O_NONBLOCK`: a FIFO opens at
//! once), the type of what was opened is checked on the descriptor
//! (`fstat`, so nothing can be swapped in between), and reads are bounded
//! by the size `fstat` gave: a file that grows while it is read is an error,
//! never an unbounded allocation.
//!
//! Cost: one `fcntl` and one `fstat` more per file than `File::open` +
//! `metadata` (which the callers did anyway), nothing per byte.

use std::fs::{File, FileType, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular file is, in words ("a FIFO (named pipe)").
pub fn kind_of(t: &FileType) -> &'static str {
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The error for something that is not a regular file.
fn not_regular(t: &FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {}, not a regular file", kind_of(t)),
    )
}

/// Opens `path` (following links) for reading without blocking, and only if
/// what was opened is a regular file; its metadata, from the descriptor.
pub fn open(path: &Path) -> io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta.file_type()));
    }
    // Back to blocking reads (regular files ignore the flag; this keeps the
    // descriptor ordinary for whoever reads it).
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: fcntl on a descriptor we own; the result is checked.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags >= 0 {
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) };
    }
    Ok((file, meta))
}

/// Reads the rest of `file` into `into`, which then holds at most `len`
/// bytes (the size the file had when opened): a file that grew is an error.
pub fn read_rest(file: &mut File, len: u64, into: &mut Vec<u8>) -> io::Result<()> {
    let room = len.saturating_sub(into.len() as u64);
    into.reserve(room.min(1 << 30) as usize);
    file.take(room + 1).read_to_end(into)?;
    if into.len() as u64 > len {
        return Err(grew(len));
    }
    Ok(())
}

/// The error for a file that grew past its `len` bytes while it was read.
fn grew(len: u64) -> io::Error {
    io::Error::other(format!(
        "it grew beyond its {len} bytes while it was read (being written?)"
    ))
}

/// Exactly the first `len` bytes of `file` — the size its `fstat` gave —
/// in one `read` for a file of ordinary size, with no probe for its end: for
/// callers that check the bytes against a recorded hash and size anyway (an
/// export reading 20,000 images made `std`'s adaptive `read_to_end` issue
/// four reads per 48 KiB image). A file that shrank is an error.
pub fn read_exactly(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::other("it is too large to read"))?;
    let mut bytes = vec![0; len];
    file.read_exact(&mut bytes).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::other(format!("it shrank below its {len} bytes while it was read"))
        }
        _ => e,
    })?;
    Ok(bytes)
}

/// The bytes of the regular file `path`, refusing one larger than `limit`.
pub fn read(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let (mut file, meta) = open(path)?;
    if meta.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is {} bytes, more than the {limit} this file may have",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::new();
    read_rest(&mut file, meta.len(), &mut bytes)?;
    Ok(bytes)
}

/// The text of the regular file `path` ([`read`]), which must be UTF-8.
pub fn read_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read(path, limit)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Files at least this large are hashed memory-mapped, on all cores.
const MAP_AT: u64 = 16 << 20;

/// blake3 of the regular file `path` ([`open`]) and its size: read whole
/// when small, memory-mapped and hashed on all cores when large (whole
/// slides), as `b3sum` does.
pub fn blake3(path: &Path) -> io::Result<(blake3::Hash, u64)> {
    let (mut file, meta) = open(path)?;
    let mut hasher = blake3::Hasher::new();
    if meta.len() >= MAP_AT {
        // SAFETY: a read-only private mapping of a regular file we opened;
        // a writer truncating it meanwhile is the one hazard, as for any
        // mmap-based hasher (blake3's own `update_mmap_rayon`).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        hasher.update_rayon(&map);
        return Ok((hasher.finalize(), map.len() as u64));
    }
    let len = hash_streamed(&mut file, meta.len(), &mut hasher)?;
    Ok((hasher.finalize(), len))
}

/// Bytes of a small file hashed at a time, through one buffer per thread.
const HASH_BUFFER: usize = 256 << 10;

thread_local! {
    static HASH_BUFFER_OF_THREAD: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Feeds the rest of `file` to `hasher` through this thread's buffer, and
/// says how many bytes it held: at most `len` (the size the file had when
/// opened; one that grew is an error, as in [`read_rest`]).
///
/// Not the whole file read into a fresh `Vec` per file: planning hashes
/// every new source, and 1,000 PNGs of 424 MB read that way spent 0.28 s of
/// the planning threads' CPU clearing fresh pages (`perf`: `clear_page_erms`
/// under the reads, 57 % of their samples), while the workers waited.
fn hash_streamed(file: &mut File, len: u64, hasher: &mut blake3::Hasher) -> io::Result<u64> {
    HASH_BUFFER_OF_THREAD.with_borrow_mut(|buf| {
        buf.resize(HASH_BUFFER, 0);
        let mut total = 0u64;
        loop {
            let n = match file.read(buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            total += n as u64;
            if total > len {
                return Err(grew(len));
            }
            hasher.update(&buf[..n]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_hash_through_the_buffer_as_a_whole_read_does() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            0,
            1,
            HASH_BUFFER - 1,
            HASH_BUFFER,
            HASH_BUFFER + 1,
            3 * HASH_BUFFER + 7,
        ] {
            let mut bytes = vec![0; n];
            blake3::Hasher::new().finalize_xof().fill(&mut bytes);
            let path = dir.path().join(format!("{n}"));
            std::fs::write(&path, &bytes).unwrap();
            let (hash, len) = blake3(&path).unwrap();
            assert_eq!((hash, len), (blake3::hash(&bytes), n as u64), "{n} bytes");
        }
        // A file longer than the size it had when opened (it grew) is refused.
        let path = dir.path().join(format!("{}", HASH_BUFFER + 1));
        let (mut file, _) = open(&path).unwrap();
        let e = hash_streamed(&mut file, HASH_BUFFER as u64, &mut blake3::Hasher::new());
        assert!(e.unwrap_err().to_string().contains("grew"));
    }

    #[test]
    fn fifos_devices_and_folders_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read(&fifo, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let e = read(Path::new("/dev/zero"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read(&link, 1 << 20).is_err());
        let e = read(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("folder"), "{e}");
        assert!(blake3(&fifo).is_err());
    }

    #[test]
    fn hashes_equal_blake3_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 5, MAP_AT as usize + 7] {
            let p = dir.path().join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&p, &bytes).unwrap();
            assert_eq!(blake3(&p).unwrap(), (::blake3::hash(&bytes), len as u64));
        }
    }

    #[test]
    fn sizes_and_text_are_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read(&p, 5).unwrap(), b"hello");
        assert!(read(&p, 4).is_err());
        std::fs::write(&p, b"ok\xffno").unwrap();
        let e = read_to_string(&p, 100).unwrap_err().to_string();
        assert!(e.contains("offset 2"), "{e}");
        // A file that grows after it was opened.
        std::fs::write(&p, b"12345").unwrap();
        let (mut f, m) = open(&p).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut w| std::io::Write::write_all(&mut w, b"678"))
            .unwrap();
        let mut into = Vec::new();
        assert!(read_rest(&mut f, m.len(), &mut into).is_err());
    }
}
