//! The closing summary of a build, for people and (`--json`) for programs.

use serde::Serialize;

/// One failed input (or collection) and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Failure {
    pub input: String,
    pub error: String,
}

/// A collection whose source root is not configured, missing or empty and
/// that has never been built: not an error (unless `--require-sources`).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Unavailable {
    pub collection: String,
    pub reason: String,
}

/// A Slurm job array of the build, and how each of its tasks ended.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SlurmJob {
    /// The plan (`cache/plans/<plan>`).
    pub plan: String,
    pub job: u64,
    /// The dependent merge job, when the coordinator did not wait.
    pub merge_job: Option<u64>,
    pub tasks: Vec<SlurmTask>,
}

/// One array task: its Slurm state, exit code and log file.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SlurmTask {
    pub task: u32,
    /// `COMPLETED`, `FAILED`, `CANCELLED`, `PENDING`, … (`GONE`: the
    /// controller forgot it and the cluster keeps no accounting).
    pub state: String,
    /// `exit code N` or `signal N`, once it ended.
    pub exit: Option<String>,
    pub log: String,
}

/// Counts of outputs, and the failed inputs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub built: u64,
    pub up_to_date: u64,
    pub removed: u64,
    pub failed: u64,
    /// Outputs not attempted because `--fail-fast` stopped the build.
    pub skipped: u64,
    pub failures: Vec<Failure>,
    /// Collections whose source is not available ("source not available").
    pub unavailable: Vec<Unavailable>,
    /// Slurm builds: the job arrays submitted or merged by this command.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slurm: Vec<SlurmJob>,
}

impl Summary {
    /// Whether the build succeeded as a whole.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.failures.is_empty() && self.skipped == 0
    }

    /// Adds another collection's summary to this one.
    pub fn merge(&mut self, o: Summary) {
        self.built += o.built;
        self.up_to_date += o.up_to_date;
        self.removed += o.removed;
        self.failed += o.failed;
        self.skipped += o.skipped;
        self.failures.extend(o.failures);
        self.unavailable.extend(o.unavailable);
        self.slurm.extend(o.slurm);
    }

    /// The human summary, ending with the counts line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.failures.is_empty() {
            s.push_str(&format!("{} failure(s):\n", self.failures.len()));
            for f in &self.failures {
                let mut lines = f.error.lines();
                s.push_str(&format!(
                    "  error: {}: {}\n",
                    f.input,
                    lines.next().unwrap_or("")
                ));
                for l in lines {
                    s.push_str(&format!("    {l}\n"));
                }
            }
        }
        if !self.unavailable.is_empty() {
            s.push_str(&format!(
                "{} collection(s) with no source available (not built; `cpia build --require-sources` makes this an error):\n",
                self.unavailable.len()
            ));
            for u in self.unavailable.iter().take(10) {
                s.push_str(&format!("  {}: {}\n", u.collection, u.reason));
            }
            if self.unavailable.len() > 10 {
                s.push_str(&format!(
                    "  … and {} more (`--json` lists all)\n",
                    self.unavailable.len() - 10
                ));
            }
        }
        for j in &self.slurm {
            let mut states: std::collections::BTreeMap<&str, usize> = Default::default();
            for t in &j.tasks {
                *states.entry(t.state.as_str()).or_default() += 1;
            }
            let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
            s.push_str(&format!(
                "slurm job {} ({} tasks: {}), plan {}\n",
                j.job,
                j.tasks.len(),
                states.join(", "),
                j.plan
            ));
        }
        s.push_str(&format!(
            "built {}, up to date {}, removed {}, failed {}",
            self.built, self.up_to_date, self.removed, self.failed
        ));
        if self.skipped > 0 {
            s.push_str(&format!(", skipped {}", self.skipped));
        }
        s
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal or when
/// `enabled` is false.
pub fn progress_bar(total: u64, enabled: bool) -> indicatif::ProgressBar {
    if !enabled || total == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} outputs ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}
