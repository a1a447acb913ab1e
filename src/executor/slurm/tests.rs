//! Parsing and argument tests; the real cluster is exercised by
//! `tests/slurm.rs`. Sample outputs are copied from Slurm 22.05.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::accounting::parse_sacct;
use super::control::parse_exit_codes;
use super::queue::parse_squeue;
use super::submit::parse_job_id;
use super::*;
use crate::workspace::slurm::{check_sbatch_arg, time_seconds, SlurmConfig};

#[test]
fn squeue_lines_become_task_states() {
    let out = "1|5|1|COMPLETED|None\n1|4|6|COMPLETED|None\n1|3|5|FAILED|NonZeroExitCode\n\
               1|2|1|PENDING|Dependency\n1|1|3|RUNNING|None\n1|0|2|CANCELLED|None\n";
    let t = parse_squeue(out, JobId(1)).unwrap();
    assert_eq!(t.len(), 6);
    assert_eq!(t[2].task, Some(3));
    assert_eq!(t[2].state, TaskState::Failed);
    assert_eq!(t[2].reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(t[2].job, Some(JobId(5)));
    // A pending task has no job of its own yet.
    assert_eq!((t[3].state.clone(), t[3].job), (TaskState::Pending, None));
    assert_eq!(t[3].reason.as_deref(), Some("Dependency"));
    assert_eq!(t[0].reason, None);
    assert_eq!(t[5].state, TaskState::Cancelled);
    // A job that is not an array; a reason with `|` in it stays whole.
    let t = parse_squeue("12|N/A|12|PENDING|a|b\n", JobId(12)).unwrap();
    assert_eq!((t[0].task, t[0].reason.as_deref()), (None, Some("a|b")));
    // Lines of another job are not ours.
    assert!(parse_squeue("13|0|13|RUNNING|None\n", JobId(12))
        .unwrap()
        .is_empty());
    assert!(parse_squeue("", JobId(12)).unwrap().is_empty());
    for bad in [
        "1|0|2|RUNNING",
        "x|0|2|RUNNING|None",
        "1|0-3|2|PENDING|None",
    ] {
        assert!(parse_squeue(bad, JobId(1)).is_err(), "{bad}");
    }
}

#[test]
fn sacct_lines_become_task_states_with_exit_codes() {
    let out = "7_0|8|RUNNING|0:0\n7_1|9|CANCELLED by 0|0:0\n7_3|11|FAILED|7:0\n\
               7_[4-6,9%2]|7|PENDING|0:0\n70_1|80|COMPLETED|0:0\n";
    let t = parse_sacct(out, JobId(7)).unwrap();
    let idx: Vec<_> = t.iter().map(|t| t.task.unwrap()).collect();
    assert_eq!(idx, [0, 1, 3, 4, 5, 6, 9]);
    assert_eq!(t[1].state, TaskState::Cancelled);
    assert_eq!(t[2].exit, Some(ExitCode { code: 7, signal: 0 }));
    assert_eq!(t[2].job, Some(JobId(11)));
    // Unfinished tasks have no exit code yet; pending ones no job.
    assert_eq!((t[0].exit, t[3].job), (None, None));
    assert_eq!(
        parse_sacct("5|5|TIMEOUT|0:15\n", JobId(5)).unwrap()[0].task,
        None
    );
    assert!(parse_sacct("7_x|8|RUNNING|0:0", JobId(7)).is_err());
    assert!(parse_sacct("7_[9-2]|8|PENDING|0:0", JobId(7)).is_err());
}

#[test]
fn scontrol_records_give_exit_codes() {
    let out = "JobId=5 ArrayJobId=1 ArrayTaskId=3 JobName=t1 UserId=root(0) JobState=FAILED Reason=NonZeroExitCode ExitCode=7:0 DerivedExitCode=0:0 WorkDir=/a b/c StdOut=/tmp/x y.out\n\
               JobId=9 ArrayJobId=7 ArrayTaskId=1 JobState=CANCELLED ExitCode=0:15\n\
               JobId=1 ArrayJobId=1 ArrayTaskId=4-9 JobState=PENDING ExitCode=0:0\n\
               JobId=2 ArrayJobId=1 ArrayTaskId=0 JobState=COMPLETED ExitCode=0:0\n";
    let c = parse_exit_codes(out, JobId(1));
    assert_eq!(c.len(), 2);
    assert_eq!(c[&Some(3)], ExitCode { code: 7, signal: 0 });
    assert_eq!(c[&Some(0)].code, 0);
    let c = parse_exit_codes(out, JobId(7));
    assert_eq!(
        c[&Some(1)],
        ExitCode {
            code: 0,
            signal: 15
        }
    );
    assert_eq!(c[&Some(1)].to_string(), "signal 15");
    let single = parse_exit_codes(
        "JobId=12 JobName=merge JobState=COMPLETED ExitCode=3:0\n",
        JobId(12),
    );
    assert_eq!(single[&None].to_string(), "exit code 3");
}

#[test]
fn states_know_whether_they_are_finished() {
    for (s, finished, success) in [
        ("PENDING", false, false),
        ("RUNNING", false, false),
        ("COMPLETING", false, false),
        ("REQUEUED", false, false),
        ("COMPLETED", true, true),
        ("FAILED", true, false),
        ("CANCELLED by 1234", true, false),
        ("CANCELLED+", true, false),
        ("TIMEOUT", true, false),
        ("OUT_OF_MEMORY", true, false),
        ("NODE_FAIL", true, false),
        ("SOMETHING_NEW", false, false),
    ] {
        let st = TaskState::parse(s);
        assert_eq!(
            (st.is_finished(), st.is_success()),
            (finished, success),
            "{s}"
        );
    }
    assert_eq!(TaskState::parse("CANCELLED by 0").name(), "CANCELLED");
    assert_eq!(
        TaskState::parse("SOMETHING_NEW").to_string(),
        "SOMETHING_NEW"
    );
    assert!(TaskState::Gone.is_finished());
    assert_eq!(ExitCode::parse("7"), None);
}

#[test]
fn array_status_counts_tasks_by_phase() {
    let task = |i: u32, s: &str| {
        (
            i,
            TaskStatus {
                task: Some(i),
                job: None,
                state: TaskState::parse(s),
                reason: None,
                exit: None,
            },
        )
    };
    let mut a = ArrayStatus {
        job: JobId(3),
        tasks: [
            task(0, "PENDING"),
            task(1, "RUNNING"),
            task(2, "COMPLETED"),
            task(3, "FAILED"),
        ]
        .into_iter()
        .collect(),
    };
    let c = a.counts();
    assert_eq!((c.pending, c.running, c.completed, c.failed), (1, 1, 1, 1));
    assert!(!a.is_finished());
    a.tasks.insert(0, task(0, "CANCELLED").1);
    a.tasks.insert(1, task(1, "COMPLETED").1);
    assert!(a.is_finished());
    let bad: Vec<u32> = a.unsuccessful().map(|t| t.task.unwrap()).collect();
    assert_eq!(bad, [0, 3]);
}

#[test]
fn sbatch_job_id_comes_from_the_parsable_line() {
    assert_eq!(parse_job_id("1234\n"), Some(JobId(1234)));
    assert_eq!(parse_job_id("1234;cluster2\n"), Some(JobId(1234)));
    assert_eq!(parse_job_id("site banner\n1234\n\n"), Some(JobId(1234)));
    assert_eq!(parse_job_id("Submitted batch job 1234\n"), None);
    assert_eq!(parse_job_id(""), None);
}

fn spec() -> JobSpec {
    JobSpec {
        name: "cpia-build".into(),
        tasks: Some(4),
        max_running: None,
        command: vec!["/opt/cpia".into(), "worker".into(), "--shard".into()],
        workdir: "/shared/ws".into(),
        output: LogPattern("cache/slurm/%A_%a.log".into()),
        error: None,
        after_ok: None,
    }
}

#[test]
fn sbatch_arguments_carry_the_spec_and_the_site_options() {
    let config = SlurmConfig {
        partition: Some("cpu".into()),
        account: Some("path".into()),
        time: Some("1-00:00".into()),
        mem: Some("16G".into()),
        cpus_per_task: Some(8),
        sbatch_args: vec!["--qos=long".into()],
        shards: 4,
    };
    let a: Vec<String> = sbatch_args(&config, &spec())
        .unwrap()
        .into_iter()
        .map(|s| s.into_string().unwrap())
        .collect();
    assert_eq!(
        a,
        [
            "--parsable",
            "--job-name=cpia-build",
            "--array=0-3",
            "--chdir=/shared/ws",
            "--output=cache/slurm/%A_%a.log",
            "--partition=cpu",
            "--account=path",
            "--time=1-00:00",
            "--mem=16G",
            "--cpus-per-task=8",
            "--qos=long",
            "--wrap=exec '/opt/cpia' 'worker' '--shard'",
        ]
    );
    // A merge job: one job, after the array, with its own error file.
    let merge = JobSpec {
        tasks: None,
        after_ok: Some(JobId(77)),
        error: Some(LogPattern("m.err".into())),
        max_running: Some(2),
        ..spec()
    };
    let a = sbatch_args(&SlurmConfig::default(), &merge).unwrap();
    let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
    assert!(!a.iter().any(|s| s.starts_with("--array")));
    assert!(a.contains(&"--error=m.err"));
    assert!(a.contains(&"--dependency=afterok:77"));
    assert!(a.contains(&"--kill-on-invalid-dep=yes"));
    // Throttled array.
    let a = sbatch_args(
        &SlurmConfig::default(),
        &JobSpec {
            max_running: Some(2),
            ..spec()
        },
    )
    .unwrap();
    assert!(a.contains(&OsString::from("--array=0-3%2")));
    // Nonsense specs are refused before sbatch sees them.
    assert!(sbatch_args(
        &SlurmConfig::default(),
        &JobSpec {
            tasks: Some(0),
            ..spec()
        }
    )
    .is_err());
    assert!(sbatch_args(
        &SlurmConfig::default(),
        &JobSpec {
            command: vec![],
            ..spec()
        }
    )
    .is_err());
}

#[test]
fn the_wrapped_command_reaches_the_program_byte_for_byte() {
    // Run the --wrap text through a real sh, as the batch script does.
    use std::os::unix::ffi::OsStringExt;
    let nasty: Vec<OsString> = vec![
        "printf".into(),
        "%s|".into(),
        "it's".into(),
        "$HOME `id` \\n".into(),
        "two\nlines".into(),
        "".into(),
        OsString::from_vec(vec![0xff, b'x', 0xfe]),
    ];
    let args = sbatch_args(
        &SlurmConfig::default(),
        &JobSpec {
            command: nasty.clone(),
            ..spec()
        },
    )
    .unwrap();
    let wrap = args.last().unwrap().clone().into_vec();
    let script = &wrap[b"--wrap=".len()..];
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(std::ffi::OsStr::from_bytes(script))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expect = Vec::new();
    for a in &nasty[2..] {
        expect.extend_from_slice(a.as_encoded_bytes());
        expect.push(b'|');
    }
    assert_eq!(out.stdout, expect);
}

#[test]
fn log_patterns_resolve_like_sbatch() {
    let ids = LogIds {
        array_job: JobId(120),
        task: Some(7),
        job: Some(JobId(128)),
        name: "cpia",
        user: Some("ana"),
    };
    let wd = Path::new("/ws");
    let r = |p: &str| LogPattern(p.into()).resolve(&ids, wd);
    assert_eq!(
        r("logs/%A_%a.out").unwrap(),
        Path::new("/ws/logs/120_7.out")
    );
    assert_eq!(
        r("/abs/%x-%j-%u.log").unwrap(),
        Path::new("/abs/cpia-128-ana.log")
    );
    assert_eq!(r("t%4a_%%.log").unwrap(), Path::new("/ws/t0007_%.log"));
    assert_eq!(r("lit\\%A.log").unwrap(), Path::new("/ws/lit%A.log"));
    // What only the running job knows.
    for p in ["%N.log", "%t.log", "%s.log", "%J.log", "trailing%"] {
        assert_eq!(r(p), None, "{p}");
    }
    // Before a task starts its own job id is unknown; a lone job's is the job's.
    let pending = LogIds { job: None, ..ids };
    assert_eq!(LogPattern("%j".into()).resolve(&pending, wd), None);
    let lone = LogIds {
        task: None,
        job: None,
        ..ids
    };
    assert_eq!(
        LogPattern("%j".into()).resolve(&lone, wd).unwrap(),
        Path::new("/ws/120")
    );
    assert_eq!(LogPattern("%a".into()).resolve(&lone, wd), None);
}

#[test]
fn a_missing_tool_is_named() {
    let empty = tempfile::tempdir().unwrap();
    let e = Slurm::in_dir(empty.path()).queue(JobId(1)).unwrap_err();
    assert!(
        matches!(e, SlurmError::Missing { tool: "squeue", .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("squeue not found") && msg.contains(&empty.path().display().to_string()),
        "{msg}"
    );
    let e = Slurm::in_dir(empty.path())
        .submit(&SlurmConfig::default(), &spec())
        .unwrap_err();
    assert!(e.to_string().starts_with("sbatch not found"), "{e}");
}

fn config(text: &str) -> Result<SlurmConfig, String> {
    let table: toml::Table = toml::from_str(text).unwrap();
    SlurmConfig::from_toml(&table).map_err(|e| e.to_string())
}

#[test]
fn config_reads_every_key() {
    let c = config(
        "partition = \"cpu\"\naccount = \"lab\"\ntime = \"2-12:30:00\"\nmem = \"64G\"\n\
         cpus_per_task = 16\nsbatch_args = [\"--qos=long\", \"-Cavx2\"]\nshards = 200\n",
    )
    .unwrap();
    assert_eq!(c.partition.as_deref(), Some("cpu"));
    assert_eq!(c.account.as_deref(), Some("lab"));
    assert_eq!(c.time.as_deref(), Some("2-12:30:00"));
    assert_eq!(c.mem.as_deref(), Some("64G"));
    assert_eq!(c.cpus_per_task, Some(16));
    assert_eq!(c.sbatch_args, ["--qos=long", "-Cavx2"]);
    assert_eq!(c.shards, 200);
    assert_eq!(config("").unwrap(), SlurmConfig::default());
    // Bare numbers: minutes and megabytes, as sbatch reads them.
    let c = config("time = 90\nmem = 4000").unwrap();
    assert_eq!(
        (c.time.as_deref(), c.mem.as_deref()),
        (Some("90"), Some("4000"))
    );
}

#[test]
fn config_errors_name_the_key_and_the_problem() {
    for (text, expect) in [
        (
            "partion = \"x\"",
            "[executor.slurm] partion: unknown key (known: partition,",
        ),
        (
            "partition = 3",
            "[executor.slurm] partition: expected a string, got integer",
        ),
        (
            "partition = \"a b\"",
            "partition: `a b` is not a Slurm name",
        ),
        ("account = \"--x\"", "account: `--x` is not a Slurm name"),
        (
            "time = \"90 minutes\"",
            "time: `90 minutes` is not a Slurm time limit",
        ),
        ("time = \"0\"", "time: `0` is not a Slurm time limit"),
        ("time = \"1:2:3:4\"", "is not a Slurm time limit"),
        ("time = -5", "time: must not be negative, got -5"),
        ("mem = \"16GB\"", "mem: `16GB` is not a Slurm memory size"),
        ("mem = \"lots\"", "mem: `lots` is not a Slurm memory size"),
        ("cpus_per_task = 0", "cpus_per_task: must be 1 to"),
        (
            "cpus_per_task = \"8\"",
            "cpus_per_task: expected a whole number, got string",
        ),
        ("shards = 0", "shards: must be 1 to 1000000, got 0"),
        ("shards = 2000000", "shards: must be 1 to 1000000"),
        (
            "sbatch_args = \"--qos=long\"",
            "sbatch_args: expected a list of strings, got string",
        ),
        (
            "sbatch_args = [\"--qos\", \"long\"]",
            "sbatch_args[1]: `long` is not an sbatch option",
        ),
        (
            "sbatch_args = [\"--array=0-9\"]",
            "sbatch_args[0]: `--array=0-9`: cpia sets --array itself",
        ),
        (
            "sbatch_args = [\"-pdebug\"]",
            "cpia sets --partition itself (set `partition`",
        ),
        (
            "sbatch_args = [\"--dep=afterok:1\"]",
            "cpia sets --dependency itself",
        ),
        (
            "sbatch_args = [\"--output=x.log\"]",
            "cpia sets --output itself",
        ),
        (
            "sbatch_args = [\"--mem=1G\"]",
            "cpia sets --mem itself (set `mem`)",
        ),
        (
            "sbatch_args = [1]",
            "sbatch_args[0]: expected a string, got integer",
        ),
    ] {
        let e = config(text).unwrap_err();
        assert!(e.contains(expect), "{text}: {e}");
    }
}

#[test]
fn sbatch_options_that_are_not_cpias_pass() {
    for ok in [
        "--qos=long",
        "--mem-per-cpu=2G",
        "--time-min=10",
        "--gres=gpu:1",
        "-Cavx2",
        "--exclusive",
        "--export=NONE",
        "-H",
    ] {
        assert_eq!(check_sbatch_arg(ok), Ok(()), "{ok}");
    }
}

#[test]
fn time_limits_in_every_sbatch_format() {
    for (t, s) in [
        ("30", 1800),
        ("30:15", 1815),
        ("1:00:00", 3600),
        ("2-0", 172_800),
        ("1-1:30", 91_800),
        ("1-01:00:05", 90_005),
        ("UNLIMITED", u64::MAX),
        ("infinite", u64::MAX),
    ] {
        assert_eq!(time_seconds(t), Some(s), "{t}");
    }
    for bad in [
        "",
        "0",
        "0:00",
        "1:",
        ":5",
        "1-",
        "a",
        "1.5",
        "1-2:3:4:5",
        "-5",
        "1--2",
    ] {
        assert_eq!(time_seconds(bad), None, "{bad}");
    }
}
