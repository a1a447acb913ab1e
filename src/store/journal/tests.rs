use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::format::{FRAME_LEN, HEADER_LEN};
use super::*;

fn payloads(n: usize) -> Vec<Vec<u8>> {
    // Sizes 0, 1, … and one long record, so frames meet every alignment.
    (0..n)
        .map(|i| {
            let len = if i == 3 { 70_000 } else { i * 7 % 300 };
            (0..len).map(|j| (i * 31 + j) as u8).collect()
        })
        .collect()
}

/// Writes `records` to a new journal in `dir`; returns its path and the
/// offset at which each record starts.
fn write(dir: &Path, stem: &str, records: &[Vec<u8>]) -> (PathBuf, Vec<u64>) {
    let mut w = JournalWriter::create(dir, stem).unwrap();
    let mut starts = Vec::new();
    for r in records {
        starts.push(w.len());
        w.append(r).unwrap();
    }
    w.sync().unwrap();
    (w.path().to_path_buf(), starts)
}

fn read_all(path: &Path) -> (Vec<Vec<u8>>, Tail) {
    let mut r = JournalReader::open(path).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_record().unwrap() {
        out.push(p.to_vec());
    }
    (out, r.tail().unwrap().clone())
}

#[test]
fn records_read_back_in_order_with_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let recs = payloads(20);
    let (path, _) = write(dir.path(), "task-0", &recs);
    assert_eq!(path, dir.path().join("task-0-0.journal"));
    let (back, tail) = read_all(&path);
    assert_eq!(back, recs);
    assert_eq!(tail, Tail::Clean);
}

#[test]
fn a_second_writer_of_the_same_task_gets_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = JournalWriter::create(dir.path(), "task-3").unwrap();
    let b = JournalWriter::create(dir.path(), "task-3").unwrap();
    assert_eq!(a.path(), dir.path().join("task-3-0.journal"));
    assert_eq!(b.path(), dir.path().join("task-3-1.journal"));
    assert_ne!(a.id(), b.id());
    assert!(JournalWriter::create(dir.path(), "../x").is_err());
}

#[test]
fn a_torn_tail_ends_reading_at_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let recs = payloads(6);
    let (path, starts) = write(dir.path(), "t", &recs);
    let full = std::fs::read(&path).unwrap();
    let last = *starts.last().unwrap() as usize;
    // Every cut inside the last record (frame or payload) is a torn tail.
    for cut in last + 1..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let (back, tail) = read_all(&path);
        assert_eq!(back, recs[..5], "cut at {cut}");
        assert_eq!(tail, Tail::Torn { at: last as u64 }, "cut at {cut}");
    }
    // Cut exactly at a record boundary: a clean end with fewer records.
    std::fs::write(&path, &full[..last]).unwrap();
    assert_eq!(read_all(&path), (recs[..5].to_vec(), Tail::Clean));
    // A header cut short: the writer died creating it; nothing to read.
    for cut in [0, 1, HEADER_LEN - 1] {
        std::fs::write(&path, &full[..cut]).unwrap();
        assert!(matches!(
            JournalReader::open(&path),
            Err(OpenError::Unfinished(_))
        ));
    }
}

#[test]
fn a_zero_filled_tail_is_torn_not_corrupt() {
    // A crash can leave a file's new size on disk without its data: zeros.
    let dir = tempfile::tempdir().unwrap();
    let recs = payloads(5);
    let (path, starts) = write(dir.path(), "t", &recs);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = bytes.len();
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        read_all(&path),
        (recs.clone(), Tail::Torn { at: end as u64 })
    );
    // The last record's own bytes zeroed (size on disk, data not).
    let last = starts[4] as usize;
    bytes[last + 10..].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        read_all(&path),
        (recs[..4].to_vec(), Tail::Torn { at: last as u64 })
    );
}

#[test]
fn damage_before_the_end_stops_reading_and_is_never_misread() {
    let dir = tempfile::tempdir().unwrap();
    let recs = payloads(8);
    let (path, starts) = write(dir.path(), "t", &recs);
    let full = std::fs::read(&path).unwrap();
    // Record 5 (a mid-file record): flip every byte of its frame and payload
    // in turn, and each bit of its length.
    let (from, to) = (starts[5] as usize, starts[6] as usize);
    let mut flips: Vec<(usize, u8)> = (from..to).map(|i| (i, 0xff)).collect();
    flips.extend((0..32).map(|bit| (from + bit / 8, 1u8 << (bit % 8))));
    for (i, mask) in flips {
        let mut bytes = full.clone();
        bytes[i] ^= mask;
        std::fs::write(&path, &bytes).unwrap();
        let (back, tail) = read_all(&path);
        assert_eq!(back, recs[..5], "byte {i} ^ {mask:#x}");
        assert!(
            matches!(tail, Tail::Corrupt { at, .. } if at == from as u64),
            "byte {i} ^ {mask:#x}: {tail:?}"
        );
    }
    // The reason says what was wrong.
    let mut bytes = full.clone();
    bytes[from] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_all(&path).1,
        Tail::Corrupt {
            reason: "record length damaged",
            ..
        }
    ));
    let mut bytes = full;
    bytes[from + FRAME_LEN] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        read_all(&path).1,
        Tail::Corrupt {
            reason: "checksum mismatch",
            ..
        }
    ));
}

#[test]
fn other_files_are_refused_by_their_header() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write(dir.path(), "t", &payloads(2));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8] = 9; // format version 9
    std::fs::write(&path, &bytes).unwrap();
    let e = JournalReader::open(&path).err().unwrap().to_string();
    assert!(e.contains("version 9") && e.contains("t-0.journal"), "{e}");
    std::fs::write(&path, b"PNG, not a journal at all, but long enough").unwrap();
    let e = JournalReader::open(&path).err().unwrap().to_string();
    assert!(e.contains("not a cpia journal"), "{e}");
}

#[test]
fn concurrent_writers_each_get_a_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    // 8 writers, two per task name, appending and syncing at the same time.
    let paths: Vec<PathBuf> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.path();
                s.spawn(move || {
                    let mut w = JournalWriter::create(dir, &format!("task-{}", t / 2)).unwrap();
                    for i in 0..500u32 {
                        w.append(format!("writer {t} record {i}").as_bytes())
                            .unwrap();
                        if i % 50 == 0 {
                            w.sync().unwrap();
                        }
                    }
                    w.sync().unwrap();
                    (t, w.path().to_path_buf())
                })
            })
            .collect();
        let mut out: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        out.sort();
        out.into_iter().map(|(_, p)| p).collect()
    });
    assert_eq!(paths.iter().collect::<BTreeSet<_>>().len(), 8);
    assert_eq!(journal_files(dir.path()).unwrap().len(), 8);
    for p in &paths {
        let (back, tail) = read_all(p);
        assert_eq!(tail, Tail::Clean);
        assert_eq!(back.len(), 500);
        let writer = std::str::from_utf8(&back[0])
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .to_string();
        for (i, r) in back.iter().enumerate() {
            assert_eq!(r, format!("writer {writer} record {i}").as_bytes());
        }
    }
}

/// A stand-in for the state: an upsert keyed by output path, plus a log
/// whose primary key makes applying one record twice an error.
#[derive(serde::Serialize, serde::Deserialize)]
struct Done {
    path: String,
    key: String,
    /// Unique per record written, so a replay is visible.
    seq: u64,
}

/// A workspace folder, its `journal/` folder and a state database in it.
fn workspace() -> (tempfile::TempDir, PathBuf, Connection) {
    let ws = tempfile::tempdir().unwrap();
    let conn = state_db(&ws.path().join("state.sqlite"));
    let dir = ws.path().join("journal");
    (ws, dir, conn)
}

fn state_db(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(CURSOR_SCHEMA).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS outputs (path TEXT PRIMARY KEY, key TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY);",
    )
    .unwrap();
    conn
}

/// Merges into `conn` the way the state must: records and cursor in one
/// transaction. Fails (rolling back) on the batch number `fail_at`.
fn merge_into(
    conn: &mut Connection,
    dir: &Path,
    fail_at: Option<usize>,
) -> Result<MergeReport, String> {
    let mut cursor = Cursor::load(conn).unwrap();
    let mut n = 0;
    merge(dir, &mut cursor, 7, json::<Done>, |b| {
        n += 1;
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for d in b.records {
            tx.execute(
                "INSERT OR REPLACE INTO outputs VALUES (?1, ?2)",
                [&d.path, &d.key],
            )
            .map_err(|e| e.to_string())?;
            tx.execute("INSERT INTO applied VALUES (?1)", [d.seq])
                .map_err(|e| format!("record {} applied twice: {e}", d.seq))?;
        }
        Cursor::save(&tx, b.journal, &b.path.to_string_lossy(), b.end)
            .map_err(|e| e.to_string())?;
        if Some(n) == fail_at {
            return Err("killed".into()); // dropped: rolled back
        }
        tx.commit().map_err(|e| e.to_string())
    })
    .map_err(|e| e.error)
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn append_done(w: &mut JournalWriter, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let d = Done {
            path: format!("M/x/{}.jpg", seq % 1000),
            key: format!("k{}", seq % 1000),
            seq,
        };
        w.append_json(&d).unwrap();
    }
    w.sync().unwrap();
}

#[test]
fn merging_twice_or_after_a_crash_applies_each_record_once() {
    let (_ws, dir, mut conn) = workspace();
    let mut a = JournalWriter::create(&dir.join("plan-1"), "task-0").unwrap();
    let mut b = JournalWriter::create(&dir.join("plan-1"), "task-1").unwrap();
    append_done(&mut a, 0..40);
    append_done(&mut b, 1000..1030);

    // Killed during the 3rd batch: the first two stay applied.
    let e = merge_into(&mut conn, &dir, Some(3)).unwrap_err();
    assert_eq!(e, "killed");
    assert_eq!(count(&conn, "applied"), 14);
    // Run again (a fresh process: the cursor comes from the database).
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!((r.files, r.records), (2, 56));
    assert_eq!(count(&conn, "applied"), 70);
    // Merged twice: nothing more.
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!(r.records, 0);
    assert_eq!(count(&conn, "applied"), 70);

    // A live journal grows, with a torn record at its end: merged up to its
    // last whole record, and the rest once written.
    append_done(&mut a, 40..45);
    let mut bytes = std::fs::read(a.path()).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&[9, 0, 0, 0, 0xf6]);
    std::fs::write(a.path(), &bytes).unwrap();
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!(r.records, 5);
    assert_eq!(r.torn, vec![(a.path().to_path_buf(), whole as u64)]);
    assert_eq!(count(&conn, "applied"), 75);
}

#[test]
fn a_task_run_twice_is_two_journals_of_upserts() {
    let (_ws, dir, mut conn) = workspace();
    // The first attempt is killed after 30 of its outputs; the second
    // writes all 50 (same paths, same keys).
    append_done(&mut JournalWriter::create(&dir, "task-0").unwrap(), 0..30);
    append_done(
        &mut JournalWriter::create(&dir, "task-0").unwrap(),
        2000..2050,
    );
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!(r.records, 80);
    let paths: i64 = conn
        .query_row("SELECT count(DISTINCT path) FROM outputs", [], |r| r.get(0))
        .unwrap();
    assert_eq!((count(&conn, "outputs"), paths), (50, 50));
}

#[test]
fn a_new_journal_reusing_a_deleted_ones_name_is_merged_from_its_start() {
    let (_ws, dir, mut conn) = workspace();
    let mut w = JournalWriter::create(&dir, "task-0").unwrap();
    append_done(&mut w, 0..20);
    merge_into(&mut conn, &dir, None).unwrap();
    std::fs::remove_file(w.path()).unwrap();
    let mut w2 = JournalWriter::create(&dir, "task-0").unwrap();
    assert_eq!(w2.path(), w.path());
    append_done(&mut w2, 100..103);
    assert_eq!(merge_into(&mut conn, &dir, None).unwrap().records, 3);
}

#[test]
fn bad_journals_are_reported_and_the_others_merged() {
    let (_ws, dir, mut conn) = workspace();
    let mut good = JournalWriter::create(&dir, "task-0").unwrap();
    append_done(&mut good, 0..10);
    let mut bad = JournalWriter::create(&dir, "task-1").unwrap();
    append_done(&mut bad, 100..110);
    merge_into(&mut conn, &dir, None).unwrap();
    // task-1 truncated after it was merged; task-2 damaged in the middle;
    // task-3 never got its header; a stray file that is not a journal.
    std::fs::write(bad.path(), &std::fs::read(bad.path()).unwrap()[..100]).unwrap();
    let mut w2 = JournalWriter::create(&dir, "task-2").unwrap();
    append_done(&mut w2, 200..210);
    let mut bytes = std::fs::read(w2.path()).unwrap();
    bytes[HEADER_LEN + 30] ^= 0x40;
    std::fs::write(w2.path(), &bytes).unwrap();
    std::fs::write(dir.join("task-3-0.journal"), b"CPIA").unwrap();
    std::fs::write(dir.join("notes-0.journal"), vec![7u8; 64]).unwrap();
    append_done(&mut good, 10..15);

    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!(r.records, 5, "{r:?}");
    assert_eq!(r.files, 5);
    assert_eq!(r.corrupt.len(), 1);
    assert_eq!(r.corrupt[0].0, w2.path());
    assert_eq!(r.corrupt[0].1, HEADER_LEN as u64);
    assert_eq!(r.unreadable.len(), 2, "{r:?}");
    assert!(r
        .unreadable
        .iter()
        .any(|m| m.contains("task-1-0.journal") && m.contains("truncated")));
    assert!(r
        .unreadable
        .iter()
        .any(|m| m.contains("notes-0.journal") && m.contains("not a cpia journal")));
}

#[test]
fn a_record_that_does_not_decode_stops_its_journal_there() {
    // A journal written by another version of the event type.
    let (_ws, dir, mut conn) = workspace();
    let mut w = JournalWriter::create(&dir, "task-0").unwrap();
    append_done(&mut w, 0..3);
    w.append(br#"{"path":"M/x/new.jpg","format":2}"#).unwrap();
    append_done(&mut w, 3..5);
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!(r.records, 3);
    assert_eq!(r.unreadable.len(), 1);
    let m = &r.unreadable[0];
    assert!(
        m.contains("task-0-0.journal") && m.contains("does not decode"),
        "{m}"
    );
    // It stays unmerged (and reported) until something can read it.
    let r = merge_into(&mut conn, &dir, None).unwrap();
    assert_eq!((r.records, r.unreadable.len()), (0, 1));
    assert_eq!(count(&conn, "applied"), 3);
}

/// Merge throughput, toward "merging 1 M entries <= 10 s": 1 M records
/// shaped like the state's output rows, in 16 journals, merged (1) read and
/// verified only, (2) also decoded, (3) also recorded with the real
/// `State::record` (a transaction per 10,000; without the cursor row the
/// lead will add to that transaction). Wall and CPU time of each:
/// `cargo test --release --lib store::journal::tests::bench -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_merge_throughput() {
    use crate::store::{Event, FileStat, Maker, OutputRecord, State, WrittenFile};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Output {
        path: String,
        collection: String,
        key: String,
        content_hash: String,
        size: u64,
        mtime_ns: i64,
        source_root: String,
        source_rel: String,
        source_hash: String,
        pipeline_hash: String,
        recipe_hash: String,
        tool_version: String,
        sub_dataset: String,
        scale: String,
        class: Option<String>,
        built_at: i64,
        unit: String,
        sink: String,
    }
    const N: u64 = 1_000_000;
    const SHARDS: u64 = 16;
    let hex = |i: u64, salt: &str| {
        blake3::hash(format!("{salt}{i}").as_bytes())
            .to_hex()
            .to_string()
    };
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path().join("journal/plan");
    let t = std::time::Instant::now();
    let mut bytes = 0;
    for s in 0..SHARDS {
        let mut w = JournalWriter::create(&dir, &format!("task-{s}")).unwrap();
        for i in (s..N).step_by(SHARDS as usize) {
            w.append_json(&Output {
                path: format!(
                    "M/TCGA-BRCA-384/TCGA-A1-A0SB-01Z-00-DX1-{}-{}.jpg",
                    i / 100,
                    i % 100
                ),
                collection: "TCGA-BRCA".into(),
                key: hex(i, "k"),
                content_hash: hex(i, "c"),
                size: 40_000 + i % 1000,
                mtime_ns: 1_700_000_000_000_000_000 + i as i64,
                source_root: "TCGA".into(),
                source_rel: format!("BRCA/TCGA-A1-A0SB-01Z-00-DX1-{}.svs", i / 5000),
                source_hash: hex(i / 5000, "s"),
                pipeline_hash: hex(0, "p"),
                recipe_hash: hex(0, "r"),
                tool_version: "cpia 0.1.0".into(),
                sub_dataset: "TCGA-BRCA-384".into(),
                scale: "M".into(),
                class: None,
                built_at: 1_700_000_000,
                unit: format!("{},{}", i % 40, i / 40 % 40),
                sink: "write_M".into(),
            })
            .unwrap();
            if (i / SHARDS) % 1000 == 999 {
                w.sync().unwrap(); // a sync per batch of outputs, as a worker does
            }
        }
        w.sync().unwrap();
        bytes += w.len();
    }
    let write = t.elapsed();
    eprintln!(
        "journal bench: {N} entries, {:.0} MB in {SHARDS} journals, written and synced in {:.1} s",
        bytes as f64 / 1e6,
        write.as_secs_f64()
    );
    let report = |what: &str, (wall, cpu): (f64, f64)| {
        eprintln!(
            "  {what}: {wall:.2} s wall, {cpu:.2} s CPU = {:.0} entries/s ({:.0} MB/s)",
            N as f64 / wall,
            bytes as f64 / 1e6 / wall
        )
    };

    let t = timed(|| {
        let r = merge(
            ws.path(),
            &mut Cursor::default(),
            10_000,
            |_| Ok(()),
            |_| Ok::<(), ()>(()),
        );
        assert_eq!(r.unwrap().records, N);
    });
    report("read + verify", t);

    let t = timed(|| {
        let mut sizes = 0u64;
        let r = merge(
            ws.path(),
            &mut Cursor::default(),
            10_000,
            json::<Output>,
            |b| {
                sizes += b.records.iter().map(|o| o.size).sum::<u64>();
                Ok::<(), ()>(())
            },
        );
        assert_eq!(r.unwrap().records, N);
        assert!(sizes > N * 40_000);
    });
    report("read + verify + decode JSON", t);

    let mut state = State::open(&ws.path().join("state.sqlite")).unwrap();
    let c = state.collection_id("TCGA-BRCA").unwrap();
    let d = state.src_dir_id("TCGA", "BRCA").unwrap();
    let input = state
        .record_files(c, &[(d, "x.svs", FileStat::default(), &hex(0, "s"))])
        .unwrap()[0]
        .1;
    let t = timed(|| {
        let r = merge(
            ws.path(),
            &mut Cursor::default(),
            10_000,
            json::<Output>,
            |b| {
                let events: Vec<Event> = b
                    .records
                    .into_iter()
                    .map(|o| {
                        let (dir, name) = o.path.rsplit_once('/').unwrap_or(("", &o.path));
                        Event::Output(Box::new(OutputRecord {
                            input,
                            dir: dir.to_string(),
                            name: name.to_string(),
                            sink: o.sink,
                            pipeline_hash: o.pipeline_hash,
                            source_hash: o.source_hash,
                            class: o.class,
                            maker: Maker {
                                recipe_hash: o.recipe_hash,
                                tool_version: o.tool_version,
                                libraries: String::new(),
                            },
                            read: None,
                            file: WrittenFile {
                                ino: o.size,
                                size: o.size,
                                mtime_ns: o.mtime_ns,
                                content_hash: o.content_hash,
                            },
                            built_at: o.built_at,
                            build: 1,
                        }))
                    })
                    .collect();
                state.record(&events)
            },
        );
        assert_eq!(r.unwrap().records, N);
    });
    report("read + verify + decode + State::record", t);
}

/// Wall and CPU seconds (all threads of the process) of `f`.
fn timed(f: impl FnOnce()) -> (f64, f64) {
    fn cpu() -> f64 {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s(u.ru_utime) + s(u.ru_stime)
    }
    let (t, c) = (std::time::Instant::now(), cpu());
    f();
    (t.elapsed().as_secs_f64(), cpu() - c)
}
