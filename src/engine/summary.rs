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
