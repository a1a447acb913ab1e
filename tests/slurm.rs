//! The Slurm wrappers against a real single-node cluster (started by
//! `scripts/test.sh` through `scripts/slurm-up.sh`; skipped, saying so,
//! without one): job arrays of real processes, their states, exit codes,
//! logs, cancellation, dependent jobs, accounting, and worker journals
//! written by real array tasks and merged.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cpia::executor::slurm::{
    ExitCode, JobId, JobSpec, LogIds, LogPattern, Slurm, SlurmError, TaskState,
};
use cpia::store::journal::{self, Cursor, JournalWriter};
use cpia::workspace::slurm::SlurmConfig;

/// The partition `slurm-up.sh` made, so the `partition` option is exercised.
fn config() -> SlurmConfig {
    SlurmConfig {
        partition: std::env::var("CPIA_SLURM_PARTITION").ok(),
        time: Some("10".into()),
        ..SlurmConfig::default()
    }
}

/// An array of `tasks` running `sh -c SCRIPT` in `dir`, logging to
/// `dir/log-%A_%a.out`.
fn sh_array(dir: &Path, name: &str, tasks: Option<u32>, script: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        tasks,
        max_running: None,
        command: vec!["sh".into(), "-c".into(), script.into()],
        workdir: dir.to_path_buf(),
        output: LogPattern("log-%A_%a.out".into()),
        error: None,
        after_ok: None,
    }
}

/// Submits [`sh_array`] with the test [`config`].
fn submit_sh(slurm: &Slurm, dir: &Path, name: &str, tasks: Option<u32>, script: &str) -> JobId {
    slurm
        .submit(&config(), &sh_array(dir, name, tasks, script))
        .unwrap()
}

/// Polls until every task of `job` has finished (or `what` fails the test).
fn wait_finished(slurm: &Slurm, job: JobId, what: &str) {
    wait_for(what, || {
        let q = slurm.queue(job).unwrap();
        !q.is_empty() && q.iter().all(|t| t.state.is_finished())
    });
}

/// Polls `squeue` and the like every 200 ms (not the watchdog's 10 ms: each
/// poll is a request to slurmctld); fails after the watchdog's limit
/// (`CPIA_TEST_TIMEOUT`), which only separates "slow" from "never".
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let limit = common::process::limit();
    let end = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < end, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_array_runs_and_each_task_reports_its_state_exit_code_and_log() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let dir = tempfile::tempdir().unwrap();
    let script = "echo \"task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT\" > out-$SLURM_ARRAY_TASK_ID; \
                  echo logged $SLURM_ARRAY_TASK_ID; [ $SLURM_ARRAY_TASK_ID != 2 ] || exit 7";
    let job = submit_sh(&slurm, dir.path(), "cpia-test-array", Some(4), script);
    wait_finished(&slurm, job, "the array");

    let status = slurm.status(job, 4).unwrap();
    assert!(status.is_finished());
    let c = status.counts();
    assert_eq!((c.completed, c.failed, c.pending, c.running), (3, 1, 0, 0));
    let failed: Vec<_> = status.unsuccessful().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].task, Some(2));
    assert_eq!(failed[0].state, TaskState::Failed);
    assert_eq!(failed[0].exit, Some(ExitCode { code: 7, signal: 0 }));
    assert_eq!(failed[0].reason.as_deref(), Some("NonZeroExitCode"));
    for (i, t) in &status.tasks {
        let out = std::fs::read_to_string(dir.path().join(format!("out-{i}"))).unwrap();
        assert_eq!(out, format!("task {i} of 4\n"));
        // The log is where the pattern says, as resolved from the task's ids.
        let ids = LogIds {
            array_job: job,
            task: Some(*i),
            job: t.job,
            name: "cpia-test-array",
            user: None,
        };
        let log = LogPattern("log-%A_%a.out".into())
            .resolve(&ids, dir.path())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("logged {i}\n")
        );
        let own = LogPattern("%x-%j".into())
            .resolve(&ids, Path::new(""))
            .unwrap();
        assert_eq!(
            own,
            PathBuf::from(format!("cpia-test-array-{}", t.job.unwrap()))
        );
    }
}

#[test]
fn one_cancelled_task_is_reported_cancelled_by_its_index() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let dir = tempfile::tempdir().unwrap();
    let job = submit_sh(
        &slurm,
        dir.path(),
        "cpia-test-cancel",
        Some(3),
        "touch started-$SLURM_ARRAY_TASK_ID; exec sleep 300",
    );
    wait_for("task 1 to start", || dir.path().join("started-1").exists());
    slurm.cancel_task(job, 1).unwrap();
    wait_for("task 1 to end", || {
        slurm
            .queue(job)
            .unwrap()
            .iter()
            .any(|t| t.task == Some(1) && t.state.is_finished())
    });
    let status = slurm.status(job, 3).unwrap();
    assert_eq!(status.tasks[&1].state, TaskState::Cancelled);
    for i in [0, 2] {
        assert!(
            !status.tasks[&i].state.is_finished(),
            "task {i}: {:?}",
            status.tasks[&i]
        );
    }
    let bad: Vec<_> = status.unsuccessful().map(|t| t.task).collect();
    assert_eq!(bad, [Some(1)]);

    // The rest of the array; cancelling again is not an error.
    slurm.cancel(job).unwrap();
    wait_finished(&slurm, job, "the cancelled array");
    let status = slurm.status(job, 3).unwrap();
    assert!(
        status
            .tasks
            .values()
            .all(|t| t.state == TaskState::Cancelled),
        "{status:?}"
    );
    slurm.cancel(job).unwrap();
    slurm.cancel_task(job, 0).unwrap();
}

#[test]
fn a_merge_job_runs_after_a_successful_array_and_is_cancelled_after_a_failed_one() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let dir = tempfile::tempdir().unwrap();
    let merge = |after: JobId, name: &str| JobSpec {
        after_ok: Some(after),
        output: LogPattern(format!("{name}.log")),
        ..sh_array(dir.path(), name, None, &format!("cat part-* > {name}.txt"))
    };
    let ok = submit_sh(
        &slurm,
        dir.path(),
        "cpia-test-parts",
        Some(3),
        "echo $SLURM_ARRAY_TASK_ID > part-$SLURM_ARRAY_TASK_ID",
    );
    let m = slurm.submit(&config(), &merge(ok, "merged")).unwrap();
    wait_finished(&slurm, m, "the merge job");
    let q = slurm.queue(m).unwrap();
    assert_eq!(
        (q.len(), q[0].task, &q[0].state),
        (1, None, &TaskState::Completed)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("merged.txt")).unwrap(),
        "0\n1\n2\n"
    );

    let bad = submit_sh(
        &slurm,
        dir.path(),
        "cpia-test-bad",
        Some(2),
        "[ $SLURM_ARRAY_TASK_ID = 0 ]",
    );
    let m = slurm.submit(&config(), &merge(bad, "never")).unwrap();
    wait_finished(&slurm, m, "the merge job after a failure");
    let q = slurm.queue(m).unwrap();
    assert_eq!(q[0].state, TaskState::Cancelled, "{q:?}");
    assert!(!dir.path().join("never.txt").exists());
}

#[test]
fn accounting_has_the_tasks_when_the_cluster_keeps_it() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let dir = tempfile::tempdir().unwrap();
    let job = submit_sh(
        &slurm,
        dir.path(),
        "cpia-test-acct",
        Some(2),
        "exit $((SLURM_ARRAY_TASK_ID * 3))",
    );
    wait_finished(&slurm, job, "the array");
    if std::env::var("CPIA_SLURM_ACCOUNTING").as_deref() != Ok("1") {
        // No slurmdbd: sacct says accounting is off, which is not an error.
        assert_eq!(slurm.accounting(job).unwrap(), None);
        eprintln!("NOTE: accounting is off on this cluster (CPIA_SLURM_ACCOUNTING=1 turns it on)");
        return;
    }
    // slurmctld hands records to slurmdbd asynchronously.
    let mut tasks = Vec::new();
    wait_for("sacct to list both tasks finished", || {
        tasks = slurm.accounting(job).unwrap().unwrap();
        tasks.len() == 2 && tasks.iter().all(|t| t.state.is_finished())
    });
    tasks.sort_by_key(|t| t.task);
    assert_eq!(tasks[0].task, Some(0));
    assert_eq!(tasks[0].state, TaskState::Completed);
    assert_eq!(tasks[1].state, TaskState::Failed);
    assert_eq!(tasks[1].exit, Some(ExitCode { code: 3, signal: 0 }));
    assert!(tasks.iter().all(|t| t.job.is_some()));
}

#[test]
fn refusals_name_the_command_and_say_why() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let dir = tempfile::tempdir().unwrap();
    let bad = SlurmConfig {
        partition: Some("no-such-partition".into()),
        ..SlurmConfig::default()
    };
    let e = slurm
        .submit(&bad, &sh_array(dir.path(), "x", Some(2), "true"))
        .unwrap_err();
    assert!(matches!(e, SlurmError::Failed { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.starts_with("`sbatch --parsable"), "{msg}");
    assert!(msg.contains("invalid partition"), "{msg}");
    // A job id the cluster never had: no tasks, not an error.
    assert!(slurm.queue(JobId(999_999_999)).unwrap().is_empty());
}

/// Journals written by real array tasks at the same time, one of them
/// cancelled mid-way and run again, merged exactly once.
#[test]
fn journals_of_array_tasks_merge_exactly_once() {
    require_slurm!();
    let slurm = Slurm::from_path();
    let ws = tempfile::tempdir().unwrap();
    let jdir = ws.path().join("cache/journal/plan-1");
    let worker = |shard: Option<u32>| -> Vec<OsString> {
        let mut c: Vec<OsString> = vec!["env".into()];
        c.push(format!("CPIA_TEST_JOURNAL_DIR={}", jdir.display()).into());
        if let Some(s) = shard {
            c.push(format!("CPIA_TEST_SHARD={s}").into());
        }
        c.push(std::env::current_exe().unwrap().into());
        c.extend(
            [
                "--exact",
                "journal_worker",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]
            .map(OsString::from),
        );
        c
    };
    let array = JobSpec {
        command: worker(None),
        ..sh_array(ws.path(), "cpia-test-journal", Some(4), "")
    };
    let job = slurm.submit(&config(), &array).unwrap();
    // Shard 3 stops half-way (after syncing 100 records) until cancelled.
    wait_for("shard 3 to reach its pause", || {
        jdir.join("paused-3").exists()
    });
    slurm.cancel_task(job, 3).unwrap();
    wait_finished(&slurm, job, "the journal array");
    let status = slurm.status(job, 4).unwrap();
    let states: Vec<_> = status
        .tasks
        .values()
        .map(|t| t.state.name().to_string())
        .collect();
    assert_eq!(
        states,
        ["COMPLETED", "COMPLETED", "COMPLETED", "CANCELLED"],
        "{status:?}"
    );
    // Shard 3 again, as the next build would: a second journal of its own.
    let again = JobSpec {
        command: worker(Some(3)),
        ..sh_array(ws.path(), "cpia-test-journal-again", None, "")
    };
    let rerun = slurm.submit(&config(), &again).unwrap();
    wait_finished(&slurm, rerun, "the re-run of shard 3");
    assert_eq!(slurm.queue(rerun).unwrap()[0].state, TaskState::Completed);

    let files = journal::journal_files(&ws.path().join("cache/journal")).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "task-0-0.journal",
            "task-1-0.journal",
            "task-2-0.journal",
            "task-3-0.journal",
            "task-3-1.journal"
        ]
    );

    let mut db = rusqlite::Connection::open(ws.path().join("cache/state.sqlite")).unwrap();
    db.execute_batch(journal::CURSOR_SCHEMA).unwrap();
    db.execute_batch(
        "CREATE TABLE outputs (path TEXT PRIMARY KEY);
         CREATE TABLE applied (journal TEXT, i INTEGER, PRIMARY KEY (journal, i));",
    )
    .unwrap();
    let merge = |db: &mut rusqlite::Connection| {
        let mut cursor = Cursor::load(db).unwrap();
        journal::merge(
            &ws.path().join("cache/journal"),
            &mut cursor,
            64,
            journal::json::<Rec>,
            |b| {
                let tx = db.transaction()?;
                for r in &b.records {
                    tx.execute("INSERT OR REPLACE INTO outputs VALUES (?1)", [&r.path])?;
                    // Fails (and the merge with it) if a record is applied twice.
                    tx.execute(
                        "INSERT INTO applied VALUES (?1, ?2)",
                        rusqlite::params![b.journal.to_string(), r.i],
                    )?;
                }
                Cursor::save(&tx, b.journal, &b.path.to_string_lossy(), b.end)?;
                tx.commit()
            },
        )
        .unwrap()
    };
    let r = merge(&mut db);
    assert!(r.corrupt.is_empty() && r.unreadable.is_empty(), "{r:?}");
    assert_eq!(r.records, 3 * 200 + 100 + 200);
    let count = |db: &rusqlite::Connection, t: &str| -> i64 {
        db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&db, "outputs"), 800);
    assert_eq!(merge(&mut db).records, 0);
    assert_eq!(count(&db, "applied"), 900);
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Rec {
    path: String,
    i: u32,
}

/// Not a test: the worker of `journals_of_array_tasks_merge_exactly_once`,
/// run inside Slurm tasks by that test (it does nothing otherwise).
#[test]
#[ignore]
fn journal_worker() {
    let Some(dir) = std::env::var_os("CPIA_TEST_JOURNAL_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let shard: u32 = std::env::var("CPIA_TEST_SHARD")
        .or_else(|_| std::env::var("SLURM_ARRAY_TASK_ID"))
        .unwrap()
        .parse()
        .unwrap();
    let mut w = JournalWriter::create(&dir, &format!("task-{shard}")).unwrap();
    let first_run = std::env::var_os("CPIA_TEST_SHARD").is_none();
    for i in 0..200 {
        w.append_json(&Rec {
            path: format!("M/x/{shard}-{i}.jpg"),
            i,
        })
        .unwrap();
        if i % 20 == 19 {
            w.sync().unwrap();
        }
        if shard == 3 && first_run && i == 99 {
            std::fs::write(dir.join("paused-3"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(300));
        }
    }
    w.sync().unwrap();
}
