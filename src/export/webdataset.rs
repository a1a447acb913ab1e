//! WebDataset shards: deterministic ustar tars written with the `tar`
//! crate.
//!
//! Each sample is `<key>.jpg` — the output's bytes, unchanged (checked
//! against their recorded blake3 as they are read) — then `<key>.json`, its
//! record ([`super::record`]). Samples come in the shard's stable
//! pseudo-random order ([`super::key::rank`]). Every header is ustar with
//! mode 0644, uid and gid 0, empty user and group names, and the fixed mtime
//! [`MTIME`]; the archive ends with the two zero blocks and nothing else. So
//! the same samples give the same bytes, whoever writes them and when.
//!
//! The `tar` crate writes exactly that: `Header::new_ustar` and
//! `Builder::append` write the header given, byte for byte (it adds no PAX
//! or GNU records), and `set_path` splits a long name into ustar's prefix
//! and name fields — keys are built to fit them ([`super::key`]).
//!
//! **Where the time goes, and why the work is spread over threads.** Per
//! byte of image a shard costs: a read into memory, the image's blake3 (the
//! check against its record), a copy into the tar stream, the write, and the
//! shard's blake3 and SHA-256 (Croissant's checksum). One thread doing all
//! of it in turn ran at 0.48× GNU `tar -cf`, which only reads and writes.
//! So the images of the next batch are opened, read and checked on the
//! export's rayon threads while the current batch is appended
//! ([`for_each_checked`]), and each megabyte of the stream is written and
//! blake3-hashed on one thread while SHA-256 hashes it on another
//! ([`Hashing`]). The bytes are the same whatever the threads: the members
//! are appended in order, and each hash sees the stream in order. An image
//! costs one `openat`, one `fstat`, one `read` and one `close`; the stream is
//! sent to the disk as it is written ([`crate::engine::writeback`]), so the
//! shard's fsync does not idle the writer. What is left is the per-byte work
//! the shard's checksums must do: SHA-256 alone (SHA-NI, ~1.9 GB/s, the
//! speed of `openssl speed -evp sha256` on the same machine) takes about
//! what GNU tar takes for the whole copy.

use std::io::{self, Write};

use rayon::prelude::*;

use crate::store::audit::OutputFacts;

/// The fixed modification time of every member (2000-01-01T00:00:00Z;
/// GNU tar warns about timestamps of 0).
pub const MTIME: u64 = 946_684_800;

/// Bump when the bytes written for the same samples change.
pub const VERSION: &str = "1";

/// One sample as a shard holds it.
#[derive(Clone, Debug)]
pub struct Member {
    pub key: String,
    pub rank: u64,
    /// The output's path relative to the output folder.
    pub source: String,
    /// The blake3 (hex) its bytes must have.
    pub blake3: String,
    /// Its recorded size: what a read-ahead batch counts, and what the file
    /// must measure to be read at all.
    pub bytes: u64,
    pub record: Vec<u8>,
}

impl Member {
    /// Output `f` as a sample under `key`, with its record.
    pub fn of(f: &OutputFacts, key: String, record: Vec<u8>) -> Member {
        Member {
            rank: super::key::rank(&key),
            key,
            source: f.path(),
            blake3: f.file.content_hash.clone(),
            bytes: f.file.size,
            record,
        }
    }
}

/// How a shard writer reads an output's bytes, given its path and its
/// recorded size (from any of the export's threads).
pub type Read<'a> = dyn Fn(&str, u64) -> io::Result<Vec<u8>> + Sync + 'a;

/// A read-ahead batch ends after this many members…
const BATCH_MEMBERS: usize = 64;
/// …or once it holds this many recorded bytes: memory is two batches per
/// shard being written, whatever the images' sizes.
const BATCH_BYTES: u64 = 4 << 20;

/// A writer that hashes (blake3 and SHA-256) and counts what passes through
/// it: each run is written and blake3-hashed on one thread while SHA-256
/// hashes it on another (`rayon::join`).
///
/// Put it *under* a large buffer ([`hashed`]): blake3 hashes many 1 KiB
/// chunks at once (SIMD) only when handed long runs; fed the tar builder's
/// 512-byte headers and 8 KiB copies directly, most of its time went to
/// one-block compressions (half the export's blake3 time in `perf`), and a
/// join per megabyte costs nothing measurable.
pub struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
    sha: sha2::Sha256,
    bytes: u64,
}

/// What a written file is: blake3 and SHA-256 (hex) and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sums {
    pub blake3: String,
    pub sha256: String,
    pub bytes: u64,
}

impl<W: Write> Hashing<W> {
    pub fn new(inner: W) -> Hashing<W> {
        Hashing {
            inner,
            hasher: blake3::Hasher::new(),
            sha: <sha2::Sha256 as sha2::Digest>::new(),
            bytes: 0,
        }
    }

    /// The sums of everything written, and the inner writer.
    pub fn finish(self) -> (Sums, W) {
        let sha = sha2::Digest::finalize(self.sha);
        let sums = Sums {
            blake3: self.hasher.finalize().to_hex().to_string(),
            sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
            bytes: self.bytes,
        };
        (sums, self.inner)
    }
}

impl<W: Write + Send> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Hashing {
            inner,
            hasher,
            sha,
            bytes,
        } = self;
        let (written, ()) = rayon::join(
            || {
                inner.write_all(buf)?;
                hasher.update(buf);
                Ok::<(), io::Error>(())
            },
            || sha2::Digest::update(sha, buf),
        );
        written?;
        *bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `out` under a hashing writer under a 1 MiB buffer: the hashers see
/// megabyte runs. [`sums`] finishes it.
pub fn hashed<W: Write + Send>(out: W) -> io::BufWriter<Hashing<W>> {
    io::BufWriter::with_capacity(1 << 20, Hashing::new(out))
}

/// Flushes a [`hashed`] writer: the sums of everything written.
pub fn sums<W: Write + Send>(w: io::BufWriter<Hashing<W>>) -> io::Result<Sums> {
    let (sums, mut inner) = w.into_inner().map_err(|e| e.into_error())?.finish();
    inner.flush()?;
    Ok(sums)
}

fn header(path: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// The bytes of `m`'s output through `read`, checked against its recorded
/// blake3: an error naming the output when they differ (it changed since
/// it was built) or cannot be read.
pub fn read_checked(m: &Member, read: &Read<'_>) -> io::Result<Vec<u8>> {
    let bytes = read(&m.source, m.bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", m.source)))?;
    let found = blake3::hash(&bytes).to_hex();
    if found.as_str() != m.blake3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: its bytes (blake3 {found}) are not the ones recorded ({}): it changed since it was built; \
                 `cpia build --check-outputs` rebuilds it",
                m.source, m.blake3
            ),
        ));
    }
    Ok(bytes)
}

/// Hands each member and its checked bytes ([`read_checked`]) to `f`, in
/// order; the next batch of members is read and checked in parallel (on
/// the current rayon pool) while `f` takes the current one. The first
/// member that fails, in order, stops it with its error.
pub fn for_each_checked(
    members: &[Member],
    read: &Read<'_>,
    mut f: impl FnMut(&Member, Vec<u8>) -> io::Result<()> + Send,
) -> io::Result<()> {
    let load = |b: &[Member]| -> Vec<io::Result<Vec<u8>>> {
        b.par_iter().map(|m| read_checked(m, read)).collect()
    };
    let mut rest = members;
    let mut batch = next_batch(&mut rest);
    let mut loaded = load(batch);
    while !batch.is_empty() {
        let next = next_batch(&mut rest);
        let (ahead, taken) = rayon::join(
            || load(next),
            || -> io::Result<()> {
                for (m, bytes) in batch.iter().zip(std::mem::take(&mut loaded)) {
                    f(m, bytes?)?;
                }
                Ok(())
            },
        );
        taken?;
        (batch, loaded) = (next, ahead);
    }
    Ok(())
}

/// Splits the next read-ahead batch off the front of `rest`.
fn next_batch<'m>(rest: &mut &'m [Member]) -> &'m [Member] {
    let mut n = 0;
    let mut bytes = 0u64;
    while n < rest.len() && n < BATCH_MEMBERS && (n == 0 || bytes < BATCH_BYTES) {
        bytes += rest[n].bytes;
        n += 1;
    }
    let (batch, tail) = rest.split_at(n);
    *rest = tail;
    batch
}

/// Writes the shard of `members` (already in shard order) to `out`;
/// `read(source, recorded size)` gives an output's bytes. Returns the shard's sums. An
/// output whose bytes do not match its record stops the shard with an
/// error naming it.
pub fn write_shard(
    out: impl Write + Send,
    members: &[Member],
    read: &Read<'_>,
) -> io::Result<Sums> {
    let mut b = tar::Builder::new(hashed(out));
    for_each_checked(members, read, |m, bytes| {
        b.append(
            &header(&format!("{}.jpg", m.key), bytes.len() as u64)?,
            &bytes[..],
        )?;
        b.append(
            &header(&format!("{}.json", m.key), m.record.len() as u64)?,
            &m.record[..],
        )
    })?;
    sums(b.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<Member> {
        vec![Member {
            key: "M/sub/a".into(),
            rank: 1,
            source: "M/sub/a.jpg".into(),
            blake3: blake3::hash(b"jpeg").to_hex().to_string(),
            bytes: 4,
            record: b"{}\n".to_vec(),
        }]
    }

    #[test]
    fn a_shard_is_the_same_bytes_every_time_and_plain_ustar() {
        let read = |_: &str, _: u64| Ok(b"jpeg".to_vec());
        let mut a = Vec::new();
        let mut b = Vec::new();
        let sa = write_shard(&mut a, &members(), &read).unwrap();
        let sb = write_shard(&mut b, &members(), &read).unwrap();
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_eq!(sa.bytes as usize, a.len());
        assert_eq!(sa.blake3, blake3::hash(&a).to_hex().as_str());
        // Two members of one block each plus data, and the two end blocks.
        assert_eq!(a.len(), 512 * 6);
        assert_eq!(&a[257..263], b"ustar\0");
        let mut ar = tar::Archive::new(&a[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mode().unwrap(), 0o644);
                assert_eq!(e.header().mtime().unwrap(), MTIME);
                assert_eq!(e.header().uid().unwrap(), 0);
                e.path().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(names, ["M/sub/a.jpg", "M/sub/a.json"]);
    }

    #[test]
    fn bytes_that_are_not_the_recorded_ones_stop_the_shard() {
        let read = |_: &str, _: u64| Ok(b"other".to_vec());
        let e = write_shard(Vec::new(), &members(), &read).unwrap_err();
        assert!(e.to_string().contains("M/sub/a.jpg: its bytes"), "{e}");
    }
}
