//! Running a program while measuring its wall time and peak RSS (wait4).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// What a measured run did.
pub struct Run {
    pub wall: f64,
    pub rss_mib: f64,
    /// User + system CPU seconds: the work done, whatever else runs.
    pub cpu: f64,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cpia ARGS` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Run {
    run_program(Command::new(env!("CARGO_BIN_EXE_cpia")).args(args), dir)
}

/// Runs `cmd` in `dir`; its wall time, CPU time and peak RSS (wait4).
pub fn run_program(cmd: &mut Command, dir: &Path) -> Run {
    let t = Instant::now();
    let child = cmd
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (stdout, stderr) = {
        let mut child = child;
        let err = child.stderr.take();
        // Stderr on its own thread, so neither pipe can fill and block.
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = err {
                use std::io::Read;
                let _ = e.read_to_string(&mut s);
            }
            s
        });
        let mut stdout = String::new();
        if let Some(mut o) = child.stdout.take() {
            use std::io::Read;
            o.read_to_string(&mut stdout).unwrap();
        }
        (stdout, reader.join().unwrap_or_default())
    };
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter for wait4.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unwaited child; the pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4 failed");
    Run {
        wall,
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
        cpu: [usage.ru_utime, usage.ru_stime]
            .iter()
            .map(|t| t.tv_sec as f64 + t.tv_usec as f64 / 1e6)
            .sum(),
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout,
        stderr,
    }
}

/// The median of `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
