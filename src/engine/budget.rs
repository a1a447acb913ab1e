//! The build's memory budget: a byte semaphore that jobs take their
//! estimated need from before they start and give back when they end.
//!
//! Jobs are admitted in arrival order (a ticket each), so a large job waiting
//! for memory is not overtaken forever by small ones, and a job wait never
//! happens on a worker thread (see [`super::admit`]): a job never waits for
//! memory that a worker blocked behind it would have to free. A job whose
//! need alone exceeds the whole budget is refused at once — it could never
//! run — with its estimate and the budget in the error.

use std::sync::{Condvar, Mutex};

use crate::workspace::Workspace;

/// The fraction of the machine's available memory taken by default.
pub const DEFAULT_FRACTION: (u64, u64) = (3, 4);

/// Used when the machine's memory cannot be read.
const FALLBACK: u64 = 4 << 30;

/// How the binary's allocator gives freed memory back to the system (the
/// binary knows which allocator it has: [`set_allocator`]).
#[derive(Clone, Copy, Debug)]
pub struct Allocator {
    /// From now on, memory freed on any thread goes back to the system at
    /// once (`true`), or after the allocator's own delay (`false`, its default).
    pub eager: fn(bool),
    /// Gives back, now, what has been freed and is still held.
    pub collect: fn(),
}

static ALLOCATOR: std::sync::OnceLock<Allocator> = std::sync::OnceLock::new();

/// Whether the allocator is in eager mode now ([`Allocator::eager`]).
static EAGER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the binary's allocator control. Without it, an allocator that
/// keeps freed memory for a while (mimalloc: a purge delay) would let the
/// memory of a finished job still count when the next one starts, beyond the
/// budget; with it, the budget asks for memory back only when it is short
/// ([`Budget::acquire`]), so a build whose jobs fit keeps reusing its pages.
pub fn set_allocator(a: Allocator) {
    let _ = ALLOCATOR.set(a);
}

/// Puts the allocator in eager mode (giving back what it holds now) or
/// back in its default mode; nothing when it is already in that mode.
fn allocator_eager(on: bool) {
    let Some(a) = ALLOCATOR.get() else {
        return;
    };
    if EAGER.swap(on, std::sync::atomic::Ordering::Relaxed) != on {
        (a.eager)(on);
    }
    if on {
        (a.collect)();
    }
}

/// The process's resident memory (`/proc/self/statm`), if it can be read.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// How much memory the build may use, and where that number came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub bytes: u64,
    /// For messages: `--max-memory`, `max_memory in cpia.toml`, or the default.
    pub origin: String,
}

impl Limit {
    /// `--max-memory` if given, else `max_memory` of `cpia.toml`, else
    /// [`DEFAULT_FRACTION`] of the memory available to this process.
    pub fn resolve(flag: Option<u64>, ws: &Workspace) -> Limit {
        match (flag, ws.max_memory) {
            (Some(b), _) => Limit {
                bytes: b,
                origin: "--max-memory".into(),
            },
            (None, Some(b)) => Limit {
                bytes: b,
                origin: "max_memory in cpia.toml".into(),
            },
            (None, None) => default_limit(),
        }
    }
}

/// [`DEFAULT_FRACTION`] of `MemAvailable` (else `MemTotal`) of
/// `/proc/meminfo`, and of the cgroup's `memory.max` when that is lower.
pub fn default_limit() -> Limit {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    let (available, what) = match (field("MemAvailable:"), field("MemTotal:")) {
        (Some(a), _) => (a, "available"),
        (None, Some(t)) => (t, "installed"),
        (None, None) => {
            return Limit {
                bytes: FALLBACK,
                origin: format!(
                    "default: {} (the machine's memory could not be read)",
                    human(FALLBACK)
                ),
            }
        }
    };
    let (available, what) = match cgroup {
        Some(c) if c < available => (c, "allowed by the cgroup"),
        _ => (available, what),
    };
    let (n, d) = DEFAULT_FRACTION;
    Limit {
        bytes: available / d * n,
        origin: format!("default: {n}/{d} of the {} {what}", human(available)),
    }
}

/// Bytes as people read them: `512 B`, `40.0 MiB`, `2.5 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A need larger than the whole budget.
#[derive(Debug)]
pub struct TooLarge {
    pub need: u64,
    pub limit: Limit,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "more than the whole memory budget of {} ({})",
            human(self.limit.bytes),
            self.limit.origin
        )
    }
}

/// The budget: bytes in use by admitted jobs, and the queue of waiting ones.
pub struct Budget {
    limit: Limit,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    used: u64,
    /// The next ticket to hand out, and the ticket allowed in next.
    next: u64,
    serving: u64,
}

impl Budget {
    /// A budget of `limit.bytes`.
    pub fn new(limit: &Limit) -> Budget {
        Budget {
            limit: limit.clone(),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    /// The limit this budget enforces.
    pub fn limit(&self) -> &Limit {
        &self.limit
    }

    /// Takes `need` bytes, waiting (in arrival order) until they are free;
    /// refuses at once a need larger than the whole budget.
    pub fn acquire(&self, need: u64) -> Result<Grant<'_>, TooLarge> {
        self.wait_for(need)?;
        Ok(Grant {
            budget: self,
            bytes: need,
        })
    }

    /// Counts `need` more bytes in use once it is this caller's turn and
    /// they fit.
    ///
    /// Memory goes back to the system only when the budget is short: when
    /// this job has to wait, or when what the process holds (resident memory,
    /// freed pages the allocator keeps included) plus the grants and this
    /// need would exceed the budget, the allocator is put in eager mode and
    /// gives back what it holds; otherwise it is left in its default mode, in
    /// which a freed buffer is reused by the next job without the kernel
    /// mapping and zeroing its pages again (a ROI build of 1,000 small PNGs
    /// took ~650 k page faults when every free went back at once).
    fn wait_for(&self, need: u64) -> Result<(), TooLarge> {
        self.check(need)?;
        // Read before the lock: other lanes need not wait for procfs.
        let resident = resident_bytes();
        let mut s = self.lock();
        let ticket = s.next;
        s.next += 1;
        let waits = s.serving != ticket || s.used + need > self.limit.bytes;
        let short = waits || resident.is_some_and(|r| r + s.used + need > self.limit.bytes);
        if short != EAGER.load(std::sync::atomic::Ordering::Relaxed) {
            drop(s);
            allocator_eager(short);
            s = self.lock();
        }
        while s.serving != ticket || s.used + need > self.limit.bytes {
            s = match self.changed.wait(s) {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
        }
        s.serving += 1;
        s.used += need;
        drop(s);
        // The next ticket may fit too.
        self.changed.notify_all();
        Ok(())
    }

    /// Whether `need` could ever be granted.
    pub fn check(&self, need: u64) -> Result<(), TooLarge> {
        if need > self.limit.bytes {
            return Err(TooLarge {
                need,
                limit: self.limit.clone(),
            });
        }
        Ok(())
    }

    /// Takes `need` bytes if they are free now and no job is waiting.
    pub fn try_acquire(&self, need: u64) -> Option<Grant<'_>> {
        let mut s = self.lock();
        if s.serving != s.next || s.used + need > self.limit.bytes {
            return None;
        }
        s.used += need;
        Some(Grant {
            budget: self,
            bytes: need,
        })
    }

    /// Bytes held by admitted jobs now.
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut s = self.lock();
        s.used = s.used.saturating_sub(bytes);
        drop(s);
        self.changed.notify_all();
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[must_use = "the bytes are given back as soon as the grant is dropped"]
pub struct Grant<'b> {
    budget: &'b Budget,
    bytes: u64,
}

impl Grant<'_> {
    /// Gives back all but `bytes` (what the job still holds, e.g. its encoded
    /// outputs waiting to be written).
    pub fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds `total` bytes instead: at once if they are free and nobody
    /// waits; else this grant's bytes are given back while it waits in line
    /// for all of them (holding some while waiting for more could deadlock
    /// two jobs that each hold part).
    pub fn grow_to(&mut self, total: u64) -> Result<(), TooLarge> {
        if total <= self.bytes {
            return Ok(());
        }
        self.budget.check(total)?;
        {
            let mut s = self.budget.lock();
            if s.serving == s.next && s.used - self.bytes + total <= self.budget.limit.bytes {
                s.used += total - self.bytes;
                self.bytes = total;
                return Ok(());
            }
        }
        self.budget.release(std::mem::take(&mut self.bytes));
        self.budget.wait_for(total)?;
        self.bytes = total;
        Ok(())
    }
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    fn limit(bytes: u64) -> Limit {
        Limit {
            bytes,
            origin: "test".into(),
        }
    }

    #[test]
    fn jobs_wait_for_room_and_never_exceed_the_budget() {
        let budget = Budget::new(&limit(100));
        let in_use = AtomicU64::new(0);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, in_use, peak) = (&budget, &in_use, &peak);
                s.spawn(move || {
                    let need = 30 + i * 5;
                    let grant = budget.acquire(need).unwrap();
                    let now = in_use.fetch_add(need, Ordering::SeqCst) + need;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    in_use.fetch_sub(need, Ordering::SeqCst);
                    drop(grant);
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_need_over_the_budget_is_refused_and_grants_shrink() {
        let budget = Budget::new(&limit(100));
        let e = budget.acquire(101).err().unwrap();
        assert_eq!(e.need, 101);
        assert!(e.to_string().contains("memory budget of 100 B (test)"));
        let mut g = budget.acquire(80).unwrap();
        g.shrink_to(10);
        assert_eq!((g.bytes(), budget.used()), (10, 10));
        let h = budget.acquire(90).unwrap();
        assert_eq!(budget.used(), 100);
        drop((g, h));
        assert_eq!(budget.used(), 0);
        // Growing: at once when free; beyond the budget, refused.
        let mut g = budget.acquire(10).unwrap();
        g.grow_to(60).unwrap();
        assert_eq!((g.bytes(), budget.used()), (60, 60));
        assert!(g.grow_to(101).is_err());
        drop(g);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn two_growing_grants_do_not_deadlock() {
        // Each holds 40 of 100 and wants 90: one gives its 40 back and
        // waits, the other grows, finishes, and lets the first in.
        let budget = Budget::new(&limit(100));
        std::thread::scope(|s| {
            for _ in 0..2 {
                let budget = &budget;
                s.spawn(move || {
                    let mut g = budget.acquire(40).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    g.grow_to(90).unwrap();
                    assert!(budget.used() <= 100);
                });
            }
        });
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn human_sizes_and_the_default() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(40 << 20), "40.0 MiB");
        assert_eq!(human(5 << 29), "2.5 GiB");
        let d = default_limit();
        assert!(d.bytes > 0 && d.origin.starts_with("default: "), "{d:?}");
    }
}
