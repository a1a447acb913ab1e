//! `cpia build --executor slurm` end to end on a real single-node Slurm
//! cluster (started by `scripts/test.sh`; skipped, saying so, without one):
//! the demo's collections plus a generated slide, built by job arrays of
//! real `cpia worker` tasks, compared with the local build of the same
//! workspace byte for byte and record for record; a cancelled task; an
//! incremental change; a coordinator killed while waiting.
//!
//! `cpia verify` is being written in parallel (issue 10); until it lands,
//! records are compared through the state's flat views (`output_records`,
//! `unit_records`, `input_records`) and the files themselves.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;

use common::{counts, process, stderr};

/// The demo workspace (`cpia demo --no-build`) plus a generated 20x slide,
/// written once per test run; tests work on copies. Only called once
/// [`demo`] found the test data.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let root = common::scratch::process_tempdir("cpia-slurm-template").join("demo");
        let out = process::output(
            Command::new(env!("CARGO_BIN_EXE_cpia"))
                .args(["demo", "--no-build"])
                .arg(&root),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let spec = cpia::fixture::SlideSpec::aperio_20x(3, 3, 5);
        let slide =
            cpia::fixture::cached_fixture(&spec, &cpia::fixture::fixture_cache_dir()).unwrap();
        std::fs::copy(slide, root.join("sources/WSI/extra-20x-3x3.svs")).unwrap();
        root
    })
}

/// The template, or `None` when the test data it is made of is missing (a
/// skip, or in CI a failure: [`common::need`]).
fn demo() -> Option<&'static Path> {
    common::testdata()?;
    Some(template())
}

/// A fresh copy of the template, with the test cluster's partition and one
/// CPU per task (tasks long enough to be caught running).
fn workspace(template: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    for e in walkdir::WalkDir::new(template) {
        let e = e.unwrap();
        let to = root.join(e.path().strip_prefix(template).unwrap());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).unwrap();
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
    let mut toml = std::fs::read_to_string(root.join("cpia.toml")).unwrap();
    toml.push_str("\n[executor.slurm]\ncpus_per_task = 1\ntime = \"10\"\n");
    if let Ok(p) = std::env::var("CPIA_SLURM_PARTITION") {
        toml.push_str(&format!("partition = \"{p}\"\n"));
    }
    std::fs::write(root.join("cpia.toml"), toml).unwrap();
    (dir, root)
}

fn cpia(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cpia"));
    c.current_dir(root).env_remove("CPIA_DEBUG_COUNTERS");
    c
}

/// `cpia build --json ARGS` in `root`: the summary and the output.
fn build(root: &Path, args: &[&str]) -> (serde_json::Value, Output) {
    let out = process::output(cpia(root).args(["build", "--json"]).args(args));
    (summary_of(&out), out)
}

fn summary_of(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}).\nstdout: {text}\nstderr: {}",
            stderr(out)
        )
    })
}

/// Every dataset file and its bytes.
fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    common::snapshot(&root.join("dataset"))
        .into_iter()
        .map(|(k, (bytes, _))| (k, bytes))
        .collect()
}

/// The records of the state through its flat views, without what depends
/// on when and where a file was written (times, build ids, inodes).
fn records(root: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open(root.join("cache/state.sqlite")).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT 'output', path, collection, content_hash, size, source_root, source_rel, source_hash,
                pipeline_hash, recipe_hash, tool_version, sub_dataset, scale, class, unit, sink
           FROM output_records ORDER BY path",
        "SELECT 'unit', collection, source_root, source_rel, source_hash, unit, sink, pipeline_hash,
                outputs, kept, read_size, mpp, mpp_origin, reader, recipe_hash, tool_version, complete
           FROM unit_records ORDER BY collection, source_rel, unit, sink",
        "SELECT 'input', collection, source_root, source_rel, source_hash, outputs, clean
           FROM input_records ORDER BY collection, source_rel",
        "SELECT 'failure', input, unit, error FROM failures ORDER BY input, unit",
    ] {
        let mut stmt = db.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut cols = Vec::new();
                for i in 0..n {
                    cols.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(cols.join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

/// A build's summary, files and records.
type Built = (serde_json::Value, BTreeMap<String, Vec<u8>>, Vec<String>);

/// The local build of the template.
fn reference() -> &'static Built {
    static R: OnceLock<Built> = OnceLock::new();
    R.get_or_init(|| {
        let (dir, root) = workspace(template());
        let (json, out) = build(&root, &["-j", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let built = (json, files(&root), records(&root));
        drop(dir);
        built
    })
}

/// Whether every file's recorded content hash is the hash of its bytes.
fn records_match_files(root: &Path) {
    let db = rusqlite::Connection::open(root.join("cache/state.sqlite")).unwrap();
    let mut stmt = db
        .prepare("SELECT path, content_hash FROM output_records")
        .unwrap();
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let on_disk = files(root);
    assert_eq!(rows.len(), on_disk.len(), "a record per file");
    for (path, hash) in rows {
        let bytes = on_disk
            .get(&path)
            .unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(blake3::hash(bytes).to_hex().as_str(), hash, "{path}");
    }
}

fn count(root: &Path, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(root.join("cache/state.sqlite")).unwrap();
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Nothing of a plan is left once it is merged (logs are kept).
fn no_plan_left(root: &Path) {
    assert_eq!(count(root, "SELECT count(*) FROM submitted"), 0);
    assert_eq!(count(root, "SELECT count(*) FROM journal_cursors"), 0);
    for dir in ["cache/plans", "cache/journal"] {
        let n = std::fs::read_dir(root.join(dir)).map_or(0, |d| d.count());
        assert_eq!(n, 0, "{dir} is not empty");
    }
    assert!(!root.join("dataset/.cpia-tmp").exists());
}

/// A coordinator started in the background, its stderr read line by line.
struct Coordinator {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Coordinator {
    fn start(root: &Path, args: &[&str]) -> Coordinator {
        let mut child = cpia(root)
            .args(["build", "--executor", "slurm", "--wait"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Coordinator {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for it to exit: its output, with every stderr line.
    fn finish(mut self) -> (Output, String) {
        let out = process::wait(self.child, "the coordinator");
        self.seen.extend(self.lines.iter());
        (out, self.seen.join("\n"))
    }

    /// The id of the job array it submitted.
    fn job(&mut self) -> u64 {
        loop {
            let line = self
                .lines
                .recv_timeout(process::limit())
                .unwrap_or_else(|_| panic!("no job submitted; it said: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix("slurm: submitted job ") {
                return rest.split(' ').next().unwrap().parse().unwrap();
            }
        }
    }
}

/// Runs `scontrol ARGS`; whether it succeeded.
fn scontrol(args: &[&str]) -> bool {
    Command::new("scontrol")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Task states of `job` from squeue, by index (0 for a job that is not
/// an array).
fn task_states(job: u64) -> BTreeMap<u32, String> {
    let out = Command::new("squeue")
        .args([
            "-h",
            "-r",
            "-t",
            "all",
            "-j",
            &job.to_string(),
            "-o",
            "%K|%T",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, s) = l.split_once('|')?;
            let t = if t.trim() == "N/A" {
                0
            } else {
                t.trim().parse().ok()?
            };
            Some((t, s.trim().to_string()))
        })
        .collect()
}

/// The journal files of shard `shard` with at least one record.
fn journal_has_records(root: &Path, shard: u32) -> bool {
    let Ok(plans) = std::fs::read_dir(root.join("cache/journal")) else {
        return false;
    };
    plans.flatten().any(|p| {
        let f = p.path().join(format!("task-{shard}-0.journal"));
        std::fs::metadata(f).is_ok_and(|m| m.len() > 32)
    })
}

#[test]
fn a_four_shard_build_equals_the_local_build_byte_for_byte() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (local, local_files, local_records) = reference();
    let (_d, root) = workspace(t);
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "4", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&json), counts(local), "{json}");
    assert!(
        counts(&json).0 > 900,
        "the demo and the extra slide: {json}"
    );
    let jobs = json["slurm"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    let tasks = jobs[0]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "{json}");
    for t in tasks {
        assert_eq!(t["state"], "COMPLETED", "{json}");
        // Each task used the CPUs it was given (cpus_per_task = 1).
        let log = std::fs::read_to_string(t["log"].as_str().unwrap()).unwrap();
        assert!(log.contains(", -j 1,"), "{log}");
    }
    assert_eq!(&files(&root), local_files, "the datasets differ");
    assert_eq!(&records(&root), local_records, "the records differ");
    records_match_files(&root);
    no_plan_left(&root);
    // Folder identities are recorded as after a local build: a no-op
    // verifies nothing, reads no record, and submits nothing.
    assert_eq!(
        count(&root, "SELECT count(*) FROM out_dirs WHERE dev IS NULL"),
        0
    );
    let out = process::output(
        cpia(&root)
            .args(["build", "--json", "--executor", "slurm", "--wait"])
            .env("CPIA_DEBUG_COUNTERS", "1"),
    );
    let noop = summary_of(&out);
    assert_eq!(counts(&noop), (0, counts(local).0, 0, 0), "{noop}");
    assert!(noop.get("slurm").is_none(), "nothing submitted: {noop}");
    assert!(
        stderr(&out).contains("output_dirs_verified=0 output_records_checked=0"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_cancelled_task_is_named_and_the_next_build_makes_only_what_it_left() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (local, local_files, local_records) = reference();
    let total = counts(local).0;
    let (_d, root) = workspace(t);
    let mut c = Coordinator::start(&root, &["--json", "--shards", "2"]);
    let job = c.job();
    // Shard 0 holds the largest input (the demo's 5x4-cell slide): cancel
    // it once it has recorded something, long before it is done.
    process::until(&mut c.child, "shard 0 to record a result", || {
        journal_has_records(&root, 0)
    });
    let scancel = Command::new("scancel")
        .arg(format!("{job}_0"))
        .output()
        .unwrap();
    assert!(scancel.status.success(), "{}", stderr(&scancel));
    let out = process::wait(c.child, "the coordinator");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let first = summary_of(&out);
    let failure = first["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["input"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Slurm task {job}_0"))
        })
        .unwrap_or_else(|| panic!("no failure names the task: {first}"));
    let error = failure["error"].as_str().unwrap();
    assert!(error.starts_with("CANCELLED"), "{error}");
    assert!(error.contains("have no result"), "{error}");
    assert!(
        error.contains(&format!("log: {}", root.display())),
        "{error}"
    );
    let tasks = first["slurm"][0]["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["state"], "CANCELLED");
    assert_eq!(tasks[1]["state"], "COMPLETED");
    let (built, _, _, failed) = counts(&first);
    assert!(built > 0 && built < total, "{first}");
    assert!(failed > 0, "{first}");

    // The next build makes exactly what was not recorded.
    let (second, out) = build(&root, &["--executor", "slurm", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&second), (total - built, built, 0, 0), "{second}");
    assert_eq!(&files(&root), local_files);
    assert_eq!(&records(&root), local_records);
    no_plan_left(&root);
}

#[test]
fn an_incremental_change_after_a_slurm_build_rebuilds_only_what_it_affects() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (_d, root) = workspace(t);
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "3", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let total = counts(&json).0;
    let before = common::snapshot(&root.join("dataset"));
    let inode = |p: &str| {
        std::fs::metadata(root.join("dataset").join(p))
            .unwrap()
            .ino()
    };
    let inodes: BTreeMap<String, u64> = before.keys().map(|p| (p.clone(), inode(p))).collect();

    // Only the S tiles' writer changes: S tiles are rewritten, nothing else.
    let recipe = root.join("recipes/wsi-demo.toml");
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[steps]]\nid = \"write_S\"\nquality = 90\n");
    std::fs::write(&recipe, text).unwrap();
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "3", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s_tiles = before
        .keys()
        .filter(|p| p.starts_with("S/WSI-demo-96/"))
        .count() as u64;
    assert!(s_tiles > 10);
    assert_eq!(counts(&json), (s_tiles, total - s_tiles, 0, 0), "{json}");
    let after = common::snapshot(&root.join("dataset"));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (p, (bytes, mtime)) in &after {
        let (old_bytes, old_mtime) = &before[p];
        if p.starts_with("S/WSI-demo-96/") {
            assert_ne!(bytes, old_bytes, "{p} was not rewritten at quality 90");
        } else {
            assert_eq!((bytes, mtime), (old_bytes, old_mtime), "{p} was touched");
            assert_eq!(inode(p), inodes[p], "{p} was replaced");
        }
    }
    records_match_files(&root);
    no_plan_left(&root);
}

#[test]
fn a_coordinator_killed_while_waiting_is_recovered_by_the_next_invocation() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (local, local_files, local_records) = reference();
    let total = counts(local).0;
    let (_d, root) = workspace(t);
    let mut c = Coordinator::start(&root, &["--json", "--shards", "2"]);
    let job = c.job();
    // Balanced shards end within moments of each other, so one task is held
    // (SIGSTOP through `scontrol suspend`) while the other runs to its end:
    // the coordinator then dies with one task done and one still running.
    let mut held = None;
    process::wait_for("a task to hold while the other runs or is done", || {
        let s = task_states(job);
        let others_going = |t: u32| {
            s.iter()
                .all(|(o, st)| *o == t || st == "RUNNING" || st == "COMPLETED")
        };
        let pick = s
            .iter()
            .find(|(t, st)| *st == "RUNNING" && s.len() == 2 && others_going(**t));
        if let Some((t, _)) = pick {
            if scontrol(&["suspend", &format!("{job}_{t}")]) {
                held = Some(*t);
            }
        }
        held.is_some()
    });
    let held = held.unwrap();
    process::wait_for("the other task done", || {
        task_states(job)
            .iter()
            .any(|(t, st)| *t != held && st == "COMPLETED")
    });
    c.child.kill().unwrap(); // SIGKILL
    c.child.wait().unwrap();

    // A local build does not run beside the array.
    let out = process::output(cpia(&root).args(["build", "--json"]));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("still running: job {job}")),
        "{}",
        stderr(&out)
    );
    assert!(scontrol(&["resume", &format!("{job}_{held}")]));

    // Count every row recorded from now on: none may be recorded twice.
    let db = rusqlite::Connection::open(root.join("cache/state.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE test_inserts (n INTEGER);
         CREATE TRIGGER test_outputs AFTER INSERT ON outputs BEGIN INSERT INTO test_inserts VALUES (1); END;
         CREATE TRIGGER test_tiles AFTER INSERT ON tiles BEGIN INSERT INTO test_inserts VALUES (1); END;",
    )
    .unwrap();
    let rows = "SELECT (SELECT count(*) FROM outputs) + (SELECT count(*) FROM tiles)";
    let recorded_before = count(&root, rows);
    drop(db);

    // It waits for the array if it still runs, merges, then plans the rest.
    let (json, out) = build(&root, &["--executor", "slurm", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (built, up_to_date, _, failed) = counts(&json);
    assert_eq!(failed, 0, "{json}");
    assert_eq!(count(&root, rows) as u64, total);
    assert_eq!(built, total - recorded_before as u64, "{json}");
    assert_eq!(
        up_to_date, total,
        "after the merge, the plan finds all done: {json}"
    );
    assert_eq!(
        count(&root, "SELECT count(*) FROM test_inserts"),
        total as i64 - recorded_before,
        "a row was recorded twice"
    );
    assert_eq!(json["slurm"][0]["job"], job, "{json}");
    assert_eq!(&files(&root), local_files);
    assert_eq!(&records(&root), local_records);
    no_plan_left(&root);
}

#[test]
fn journals_of_a_killed_coordinator_are_merged_before_a_newer_local_build() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (_d, root) = workspace(t);
    let mut c = Coordinator::start(&root, &["--json", "--shards", "2"]);
    let job = c.job();
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    process::wait_for("the array to end", || {
        let s = task_states(job);
        s.len() == 2 && s.values().all(|s| s == "COMPLETED")
    });
    // A newer recipe, built locally: the old plan's journals (old S tiles)
    // are merged first, then its S tiles are rebuilt; the old records never
    // land on top of the new ones.
    let recipe = root.join("recipes/wsi-demo.toml");
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[steps]]\nid = \"write_S\"\nquality = 90\n");
    std::fs::write(&recipe, text).unwrap();
    let (json, out) = build(&root, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Whatever is merged afterwards must not put old rows back.
    let (again, out) = build(&root, &["--executor", "slurm", "--attach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    records_match_files(&root);
    assert_eq!(
        json["slurm"][0]["job"], job,
        "merged by the local build: {json}"
    );
    assert_eq!(counts(&again).0, 0, "{again}");
    no_plan_left(&root);
    let (noop, _) = build(&root, &[]);
    assert_eq!(counts(&noop).0, 0, "{noop}");
}

#[test]
fn without_wait_a_merge_job_merges_and_attach_waits_for_it() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (local, local_files, local_records) = reference();
    let (_d, root) = workspace(t);
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&json).0, 0, "nothing merged yet: {json}");
    let job = &json["slurm"][0];
    assert!(job["merge_job"].as_u64().is_some(), "{json}");
    assert_eq!(job["tasks"].as_array().unwrap().len(), 2, "{json}");
    // The merge job (afterok) merges on its own once the array is done.
    let merge_job = job["merge_job"].as_u64().unwrap();
    let mut ended = String::new();
    process::wait_for("the merge job to end", || {
        let states = task_states(merge_job);
        ended = states.values().next().cloned().unwrap_or_default();
        // COMPLETING (the epilog still runs) and the like are not an end.
        !ended.is_empty() && cpia::executor::slurm::TaskState::parse(&ended).is_finished()
    });
    assert_eq!(ended, "COMPLETED", "merge job {merge_job}");
    let merge_log = std::fs::read_dir(root.join("cache/logs"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join("merge.log"))
        .find(|p| p.exists())
        .expect("the merge job's log");
    let log = std::fs::read_to_string(merge_log).unwrap();
    assert!(log.contains(&format!("built {}", counts(local).0)), "{log}");
    assert_eq!(&files(&root), local_files);
    assert_eq!(&records(&root), local_records);
    no_plan_left(&root);
    // Nothing left to wait for.
    let (again, out) = build(&root, &["--executor", "slurm", "--attach"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&again).0, 0, "{again}");
}

#[test]
fn ctrl_c_on_a_waiting_coordinator_cancels_the_array() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (local, local_files, _) = reference();
    let (_d, root) = workspace(t);
    let mut c = Coordinator::start(&root, &["--json", "--shards", "2"]);
    let job = c.job();
    process::signal_when(
        &mut c.child,
        "shard 0 to record a result",
        || journal_has_records(&root, 0),
        libc::SIGINT,
    );
    let (out, err) = c.finish();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cancelling job {job}")), "{err}");
    let json = summary_of(&out);
    let tasks = json["slurm"][0]["tasks"].as_array().unwrap();
    assert!(tasks.iter().any(|t| t["state"] == "CANCELLED"), "{json}");
    assert!(task_states(job)
        .values()
        .all(|s| s != "RUNNING" && s != "PENDING"));
    no_plan_left(&root);
    // What the tasks finished is recorded; the next build makes the rest.
    let (built, ..) = counts(&json);
    let (next, out) = build(&root, &["--executor", "slurm", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(counts(&next).0 + built, counts(local).0, "{json}\n{next}");
    assert_eq!(&files(&root), local_files);
}

#[test]
fn an_output_deleted_while_a_slurm_build_is_merged_is_not_vouched_for() {
    // The window of a Slurm build is long (its plan is finished when its
    // tasks are merged, maybe days later); changes made in it, in folders
    // the build writes or not, must not be recorded as the build's.
    require_slurm!();
    let Some(t) = demo() else { return };
    let (_d, root) = workspace(t);
    let (_, out) = build(&root, &["--executor", "slurm", "--shards", "2", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recipe = root.join("recipes/wsi-demo.toml");
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[steps]]\nid = \"write_S\"\nquality = 90\n");
    std::fs::write(&recipe, text).unwrap();
    let untouched = root.join("dataset/S/P_vivax/vivax-002.jpg");
    let rewritten = std::fs::read_dir(root.join("dataset/S/WSI-demo-96"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let flag = root.join("pause.flag");
    let mut child = cpia(&root)
        .args([
            "build",
            "--json",
            "--executor",
            "slurm",
            "--shards",
            "2",
            "--wait",
        ])
        .env("CPIA_DEBUG_PAUSE", format!("merged:{}", flag.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    process::wait_for("the coordinator to pause after merging", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the coordinator ended ({status}) without pausing");
        }
        flag.exists()
    });
    assert!(rewritten.is_file(), "the S tile was not rewritten yet");
    std::fs::remove_file(&untouched).unwrap();
    std::fs::remove_file(&rewritten).unwrap();
    std::fs::remove_file(&flag).unwrap();
    let out = process::wait(child, "the paused coordinator");
    assert!(out.status.success(), "{}", stderr(&out));
    let (json, out) = build(&root, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        counts(&json).0 >= 2,
        "the deletions were vouched for: {json}"
    );
    assert!(untouched.is_file() && rewritten.is_file(), "{json}");
    let (json, _) = build(&root, &[]);
    assert_eq!(counts(&json).0, 0, "{json}");
    records_match_files(&root);
}

/// The blake3 of every shard of export `name`.
fn shard_hashes(root: &Path, name: &str) -> BTreeMap<String, String> {
    std::fs::read_dir(root.join("dataset/export").join(name))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                blake3::hash(&bytes).to_hex().to_string(),
            )
        })
        .collect()
}

#[test]
fn declared_exports_follow_a_slurm_build_once_it_is_merged() {
    require_slurm!();
    let Some(t) = demo() else { return };
    let (_d, root) = workspace(t);
    let mut toml = std::fs::read_to_string(root.join("cpia.toml")).unwrap();
    toml.push_str("\n[export.pretrain]\nformat = \"webdataset\"\nshard_samples = 50\n");
    std::fs::write(root.join("cpia.toml"), toml).unwrap();

    // Merged by the waiting coordinator: exported as after a local build.
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "2", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let images = count(
        &root,
        "SELECT count(*) FROM output_records WHERE sink <> 'qc'",
    );
    assert!(images > 100, "{images}");
    let e = &json["exports"][0];
    assert_eq!(e["name"], "pretrain", "{json}");
    assert_eq!(e["samples"], images, "{json}");
    let before = shard_hashes(&root, "pretrain");
    assert_eq!(e["shards_written"], before.len() as u64, "{json}");
    let verify = process::output(cpia(&root).args(["verify"]));
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Merged by the merge job (no --wait): it brings the export up to date.
    let recipe = root.join("recipes/wsi-demo.toml");
    let mut text = std::fs::read_to_string(&recipe).unwrap();
    text.push_str("\n[[steps]]\nid = \"write_S\"\nquality = 90\n");
    std::fs::write(&recipe, text).unwrap();
    let (json, out) = build(&root, &["--executor", "slurm", "--shards", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        json.get("exports").is_none(),
        "exported before the merge: {json}"
    );
    let merge_job = json["slurm"][0]["merge_job"].as_u64().unwrap();
    let mut ended = String::new();
    process::wait_for("the merge job to end", || {
        ended = task_states(merge_job)
            .values()
            .next()
            .cloned()
            .unwrap_or_default();
        !ended.is_empty() && cpia::executor::slurm::TaskState::parse(&ended).is_finished()
    });
    assert_eq!(ended, "COMPLETED", "merge job {merge_job}");
    let log = std::fs::read_dir(root.join("cache/logs"))
        .unwrap()
        .flatten()
        .map(|d| d.path().join("merge.log"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find(|l| l.contains("export pretrain"))
        .expect("a merge log naming the export");
    assert!(log.contains("export pretrain (webdataset)"), "{log}");
    let after = shard_hashes(&root, "pretrain");
    assert_ne!(after, before, "the S tiles' shards were not rewritten");
    let verify = process::output(cpia(&root).args(["verify"]));
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Nothing left for `cpia export` to write.
    let again = process::output(cpia(&root).args(["export", "--json"]));
    assert!(again.status.success(), "{}", stderr(&again));
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["exports"][0]["shards_written"], 0, "{v}");
    assert_eq!(shard_hashes(&root, "pretrain"), after);
}
