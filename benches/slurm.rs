//! Slurm builds: `cargo bench --bench slurm [-- merge] [-- overhead]`.
//!
//! - `merge`: 1 M output files' journal entries, shaped like the corpus (WSI
//!   slides of 985 tiles in 48 units, 5 of 12 cells kept, plus a QC
//!   picture), written by 16 tasks exactly as a worker writes them (a binary
//!   record per job result, appended and synced in batches by
//!   `JournalRecorder`), then merged into a state with the coordinator's own
//!   code (`Merging`: read, verify, decode, `State::record_merged`).
//!   Reported: entries (output files) per second, wall and CPU seconds.
//!   Target (issue 12): 1 M entries in ≤ 10 s.
//! - `overhead`: the demo workspace plus a generated slide, built on this
//!   machine and as Slurm builds (`--shards 1` and `4`, `--wait`) on the
//!   test cluster, each from scratch, medians of 3; the Slurm time split into
//!   planning and submission (until sbatch answered), the array (until the
//!   last task ended) and merging and closing. Needs the test cluster
//!   (`eval "$(scripts/slurm-up.sh)"`, `CPIA_TEST_SLURM=1`) and the shared
//!   test data; says so and skips otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use cpia::engine::cluster::finish::Merging;
use cpia::engine::cluster::task_results::JournalRecorder;
use cpia::engine::cluster::PlanPaths;
use cpia::engine::{JobResult, Recorder};
use cpia::store::journal::JournalWriter;
use cpia::store::{
    Event, FileStat, Maker, OutputRecord, ReadFacts, State, TileRecord, UnitRecord, WrittenFile,
};

const ENTRIES: u64 = 1_000_000;
const TASKS: usize = 16;
/// Tiles of a kept cell per writing step (XL, L, M, S), as benches/corpus.rs.
const PER_SINK: [(&str, &str, u32, u32); 4] = [
    ("write_XL", "XL/TCGA-BRCA-3840", 3840, 1),
    ("write_L", "L/TCGA-BRCA-960", 960, 16),
    ("write_M", "M/TCGA-BRCA-384", 384, 90),
    ("write_S", "S/TCGA-BRCA-96", 96, 90),
];
const KEPT: [usize; 5] = [1, 2, 5, 6, 9];

fn hex(salt: &str, i: u64) -> String {
    blake3::hash(format!("{salt}{i}").as_bytes())
        .to_hex()
        .to_string()
}

/// Wall and CPU seconds (all threads of the process) of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    fn cpu() -> f64 {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s(u.ru_utime) + s(u.ru_stime)
    }
    let (t, c) = (Instant::now(), cpu());
    let v = f();
    (v, t.elapsed().as_secs_f64(), cpu() - c)
}

/// A slide's job results as a worker hands them to its recorder: one per
/// cell (its four units, then the cell's success), the QC picture, and the
/// input's completion. Returns them and the output files they describe.
fn slide_results(input: i64, slide: u64, fp: i64, build: i64) -> (Vec<JobResult>, u64) {
    let source_hash = hex("slide", slide);
    let maker = Maker {
        recipe_hash: hex("recipe", 0),
        tool_version: "cpia 0.1.0".into(),
        libraries: cpia::plan::libraries::of_kind(cpia::recipe::Kind::Wsi).to_string(),
    };
    let read = ReadFacts {
        source_hash: source_hash.clone(),
        read_size: 3840,
        mpp: 0.5,
        mpp_origin: "openslide".into(),
        reader: "direct".into(),
    };
    let mut results = Vec::new();
    let mut files = 0;
    for idx in 0..12usize {
        let cell = ((idx % 4 + 1) as u32, (idx / 4 + 1) as u32);
        let kept = KEPT.contains(&idx);
        let mut events = Vec::new();
        for (k, (sink, dir, size, n)) in PER_SINK.iter().enumerate() {
            let tiles: Vec<TileRecord> = if kept {
                (0..*n)
                    .map(|t| TileRecord {
                        x: cell.0 * 10 + t % 10,
                        y: cell.1 * 10 + t / 10,
                        file: WrittenFile {
                            ino: slide * 100_000 + (idx * 1000 + k * 100) as u64 + u64::from(t),
                            size: 20_000 + u64::from(t),
                            mtime_ns: 1_700_000_000_000_000_000 + i64::from(t),
                            content_hash: hex(
                                "tile",
                                slide * 100_000 + u64::from(t) + (idx * 1000 + k * 100) as u64,
                            ),
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            };
            files += tiles.len() as u64;
            events.push(Event::Unit(Box::new(UnitRecord {
                input,
                sink: sink.to_string(),
                cell,
                dir: dir.to_string(),
                size: *size,
                pipeline_hash: hex("pipeline", k as u64),
                read: read.clone(),
                encoding: "pixels".into(),
                maker: maker.clone(),
                kept: Some(kept),
                complete: true,
                tiles,
                removed_tiles: Vec::new(),
                built_at: 1_700_000_000,
                build,
            })));
        }
        events.push(Event::Succeeded {
            input,
            unit: format!("{},{}", cell.0, cell.1),
        });
        let built = events
            .iter()
            .map(|e| match e {
                Event::Unit(u) => u.tiles.len() as u64,
                _ => 0,
            })
            .sum();
        results.push(JobResult {
            events,
            built,
            ..JobResult::default()
        });
    }
    results.push(JobResult {
        events: vec![
            Event::Output(Box::new(OutputRecord {
                input,
                dir: "qc/TCGA-BRCA".into(),
                name: format!("TCGA-{slide:06}.png"),
                sink: "qc".into(),
                pipeline_hash: hex("pipeline", 9),
                source_hash: source_hash.clone(),
                class: None,
                maker: maker.clone(),
                read: Some(read),
                file: WrittenFile {
                    ino: slide,
                    size: 300_000,
                    mtime_ns: 1_700_000_000_000_000_000,
                    content_hash: hex("qc", slide),
                },
                built_at: 1_700_000_000,
                build,
            })),
            Event::Succeeded {
                input,
                unit: "qc".into(),
            },
        ],
        built: 1,
        ..JobResult::default()
    });
    files += 1;
    results.push(JobResult {
        events: vec![Event::InputComplete { id: input, fp }],
        ..JobResult::default()
    });
    (results, files)
}

fn merge_bench() {
    let dir = tempfile::tempdir().unwrap();
    let paths = PlanPaths {
        id: "000001-bench".into(),
        plan: dir.path().join("cache/plans/000001-bench"),
        journals: dir.path().join("cache/journal/000001-bench"),
        logs: dir.path().join("cache/logs/000001-bench"),
    };
    let mut state = State::open(&dir.path().join("cache/state.sqlite")).unwrap();
    let collection = state.collection_id("TCGA-BRCA").unwrap();
    let src = state.src_dir_id("TCGA", "BRCA").unwrap();
    let fp = state.fingerprint_id(&hex("fp", 0)).unwrap();
    for k in 0..10 {
        state.pipeline_id(&hex("pipeline", k), "{}").unwrap();
    }
    let build = state.begin_build("bench", "cpia 0.1.0").unwrap();
    let slides = ENTRIES.div_ceil(986);
    let mut inputs = Vec::new();
    for s in 0..slides {
        let name = format!("TCGA-{s:06}.svs");
        inputs.push(
            state
                .record_files(
                    collection,
                    &[(src, name.as_str(), FileStat::default(), &hex("slide", s))],
                )
                .unwrap()[0]
                .1,
        );
    }

    // The tasks' journals, written as workers write them.
    let ((entries, bytes), wall, _) = timed(|| {
        let mut entries = 0;
        let mut bytes = 0;
        let mut writers: Vec<JournalRecorder> = (0..TASKS)
            .map(|t| {
                JournalRecorder::new(
                    JournalWriter::create(&paths.journals, &format!("task-{t}")).unwrap(),
                )
            })
            .collect();
        for (s, &input) in inputs.iter().enumerate() {
            let (mut results, files) = slide_results(input, s as u64, fp, build);
            entries += files;
            writers[s % TASKS].record(&mut results).unwrap();
        }
        for w in &writers {
            bytes += w.writer().len();
        }
        (entries, bytes)
    });
    eprintln!(
        "merge bench: {entries} entries ({slides} slides) in {TASKS} journals, {:.0} MB ({:.0} bytes per entry): written and synced in {wall:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / entries as f64
    );
    let ((), wall, cpu_merge) = timed(|| {
        let mut m = Merging::begin(&state, &paths).unwrap();
        m.merge(&mut state, &paths).unwrap();
        assert_eq!(m.tally.built, entries);
    });
    eprintln!(
        "  merged into the state: {wall:.2} s wall, {cpu_merge:.2} s CPU = {:.0} entries/s (target: 1 M in ≤ 10 s)",
        entries as f64 / wall
    );
    let tiles: i64 = rusqlite::Connection::open(dir.path().join("cache/state.sqlite"))
        .unwrap()
        .query_row(
            "SELECT (SELECT count(*) FROM tiles) + (SELECT count(*) FROM outputs)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tiles as u64, entries, "every entry recorded once");
    // A second merge finds nothing new (cursors), and costs a read of headers.
    let ((), wall, _) = timed(|| {
        let mut m = Merging::begin(&state, &paths).unwrap();
        m.merge(&mut state, &paths).unwrap();
        assert_eq!(m.tally.built, 0);
    });
    eprintln!("  merging again: nothing applied, {wall:.3} s");
}

/// Runs `cpia ARGS` in `dir`; wall seconds at each stderr line that starts
/// with one of `marks`, and at exit.
fn run_marked(dir: &Path, args: &[&str], marks: &[&str]) -> (Vec<Option<f64>>, f64) {
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpia"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut at = vec![None; marks.len()];
    let mut last = String::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        for (i, m) in marks.iter().enumerate() {
            if line.contains(m) {
                at[i] = Some(t.elapsed().as_secs_f64());
            }
        }
        last = line;
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "cpia {args:?} failed: {last}");
    (at, t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let dest = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn overhead_bench() {
    if std::env::var("CPIA_TEST_SLURM").as_deref() != Ok("1") {
        eprintln!("overhead bench: SKIPPED: no Slurm test cluster (eval \"$(scripts/slurm-up.sh)\" first)");
        return;
    }
    if cpia::fixture::testdata_dir().is_none() {
        eprintln!("overhead bench: SKIPPED: shared/testdata not found (set CPIA_TESTDATA)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let template = base.path().join("template");
    let out = Command::new(env!("CARGO_BIN_EXE_cpia"))
        .args(["demo", "--no-build"])
        .arg(&template)
        .output()
        .unwrap();
    assert!(out.status.success());
    let slide = cpia::fixture::cached_fixture(
        &cpia::fixture::SlideSpec::aperio_20x(3, 3, 5),
        &cpia::fixture::fixture_cache_dir(),
    )
    .unwrap();
    std::fs::copy(slide, template.join("sources/WSI/extra-20x-3x3.svs")).unwrap();
    let mut toml = std::fs::read_to_string(template.join("cpia.toml")).unwrap();
    if let Ok(p) = std::env::var("CPIA_SLURM_PARTITION") {
        toml.push_str(&format!("\n[executor.slurm]\npartition = \"{p}\"\n"));
    }
    std::fs::write(template.join("cpia.toml"), toml).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fresh = |name: String| -> PathBuf {
        let dir = base.path().join(name);
        copy_tree(&template, &dir);
        dir
    };
    // Round by round, each configuration once per round: on a shared
    // machine, load changes between rounds, not between configurations.
    let configs: [(&str, &[&str]); 3] = [
        ("local", &[]),
        (
            "slurm --shards 1",
            &["--executor", "slurm", "--wait", "--shards", "1"],
        ),
        (
            "slurm --shards 4",
            &["--executor", "slurm", "--wait", "--shards", "4"],
        ),
    ];
    let jobs = cores.to_string();
    let mut runs: Vec<Vec<Timing>> = vec![Vec::new(); configs.len()];
    for r in 0..3 {
        for (c, (name, extra)) in configs.iter().enumerate() {
            let dir = fresh(format!("{}-{r}", name.replace(' ', "_")));
            let mut args = vec!["build", "-j", jobs.as_str()];
            args.extend_from_slice(extra);
            let (at, t) = run_marked(
                &dir,
                &args,
                &["slurm: submitted job", " 0 pending, 0 running,"],
            );
            runs[c].push((t, at[0], at[1]));
        }
    }
    eprintln!("overhead bench: the demo + a generated slide, from scratch, medians of 3 interleaved rounds");
    let local = median(runs[0].iter().map(|r| r.0).collect());
    eprintln!("  local build (-j {cores}): {local:.2} s");
    for (c, (name, _)) in configs.iter().enumerate().skip(1) {
        let t = median(runs[c].iter().map(|r| r.0).collect());
        let s = median(runs[c].iter().map(|r| r.1.expect("a submission")).collect());
        let a = median(
            runs[c]
                .iter()
                .map(|r| r.2.unwrap_or(r.0) - r.1.unwrap_or(0.0))
                .collect(),
        );
        eprintln!(
            "  {name} --wait: {t:.2} s = plan and submit {s:.2} s + array {a:.2} s + merge and close {:.2} s; over local {:+.2} s",
            t - s - a,
            t - local
        );
    }
}

/// One build: seconds in all, seconds to its submission, seconds until
/// its array had nothing left (the two marks, when seen).
type Timing = (f64, Option<f64>, Option<f64>);

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = args.is_empty();
    if all || args.iter().any(|a| a == "merge") {
        merge_bench();
    }
    if all || args.iter().any(|a| a == "overhead") {
        overhead_bench();
    }
}
