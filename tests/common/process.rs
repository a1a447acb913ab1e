//! Running `cpia` as a child process without trusting the clock: every wait
//! has a watchdog that kills the child and fails the test (a deadlock must
//! fail CI, not hang it), and tests that interrupt a build do so at a point
//! they observe, with the build frozen (SIGSTOP) while they look, so what
//! they see cannot move before the signal lands — on a fast machine or a
//! loaded one.
//!
//! No test here asserts how long something took: speed is the benchmarks'
//! business (`benches/`). The watchdog's limit only separates "slow" from
//! "never": `CPIA_TEST_TIMEOUT` seconds, default [`DEFAULT_LIMIT`].
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one child may run (or one condition take) before the test
/// fails as hung, unless `CPIA_TEST_TIMEOUT` (seconds) says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(30 * 60);

const POLL: Duration = Duration::from_millis(10);

/// The watchdog's limit.
pub fn limit() -> Duration {
    std::env::var("CPIA_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_LIMIT, Duration::from_secs)
}

/// Runs `cmd` to the end and returns its output, like `Command::output`
/// (stdin empty, stdout and stderr captured); kills it and fails the test
/// if it runs longer than [`limit`].
pub fn output(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    wait(child, &what)
}

/// As [`output`], for a command whose stdout the test has set itself (a
/// full device, a closed pipe): stderr is captured, stdout left as set.
pub fn output_to(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    wait(child, &what)
}

/// Waits for a spawned child and collects what it wrote to the pipes it was
/// given, like `Child::wait_with_output`; kills it and fails the test if it
/// runs longer than [`limit`].
pub fn wait(mut child: Child, what: &str) -> Output {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + limit();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!(
                "{what} did not finish within {:?}: killed it (a deadlock?)\nstderr so far:\n{}",
                limit(),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(POLL);
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Polls `done` until it holds; fails the test, naming `what`, after
/// [`limit`]. For conditions that do not depend on one child of ours (a
/// Slurm task's state); [`until`] also watches the child.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit();
    while !done() {
        assert!(Instant::now() < deadline, "waited {:?} for {what}", limit());
        std::thread::sleep(POLL);
    }
}

/// Polls `done` until it holds while `child` runs; fails the test if the
/// child exits first (the condition can no longer come about) or after
/// [`limit`] (killing the child).
pub fn until(child: &mut Child, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit();
    while !done() {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            // One last look: it may have come about as the child ended.
            assert!(done(), "the child exited ({status}) before {what}");
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("waited {:?} for {what}: killed the child", limit());
        }
        std::thread::sleep(POLL);
    }
}

/// A child frozen with SIGSTOP; SIGCONT when dropped.
pub struct Paused<'c> {
    child: &'c mut Child,
}

impl Paused<'_> {
    /// Sends `signal` to the frozen child (it acts on it once resumed;
    /// SIGKILL at once).
    pub fn signal(&self, signal: libc::c_int) {
        send(self.child, signal);
    }

    /// The child, frozen.
    pub fn child(&mut self) -> &mut Child {
        self.child
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        send(self.child, libc::SIGCONT);
    }
}

/// Sends `signal` to our own child, which has not been waited for (so its
/// pid is still its own).
pub fn send(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we have not reaped.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
}

/// Waits (as [`until`]) for `done`, then freezes the child. The child must
/// still be running: a test that pauses a build to interrupt it mid-way
/// fails if the build ended first, rather than testing nothing.
pub fn pause_when<'c>(
    child: &'c mut Child,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> Paused<'c> {
    until(child, what, &mut done);
    send(child, libc::SIGSTOP);
    // kill(2) returns before every thread has stopped; waitpid(WUNTRACED)
    // returns once the whole process has (or has exited, having raced us).
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child, with a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFSTOPPED(status),
        "the child exited (wait status {status:#x}) right after {what}, before it could be paused"
    );
    Paused { child }
}

/// Sends `signal` to `child` once `done` holds (the child frozen while it
/// is sent, then resumed).
pub fn signal_when(child: &mut Child, what: &str, done: impl FnMut() -> bool, signal: libc::c_int) {
    pause_when(child, what, done).signal(signal);
}

/// The JPEG files under `dir` (the outputs a build has put in place).
pub fn jpgs(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .count()
}

/// Freezes a running build once `dir` holds at least `n` outputs; returns
/// it frozen with the number of outputs in place, which cannot change
/// until it is resumed.
pub fn pause_after_outputs<'c>(child: &'c mut Child, dir: &Path, n: usize) -> (Paused<'c>, usize) {
    let paused = pause_when(child, &format!("{n} outputs in {}", dir.display()), || {
        jpgs(dir) >= n
    });
    let at = jpgs(dir);
    (paused, at)
}

/// Sends `signal` to a running build once `dir` holds at least `n` outputs
/// (frozen while it is counted and signalled, then resumed); returns the
/// number of outputs in place when the signal was sent.
pub fn signal_after_outputs(child: &mut Child, dir: &Path, n: usize, signal: libc::c_int) -> usize {
    let (paused, at) = pause_after_outputs(child, dir, n);
    paused.signal(signal);
    at
}
