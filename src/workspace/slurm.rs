//! `[executor.slurm]` in `cpia.toml`: the site's sbatch options.
//!
//! ```toml
//! [executor.slurm]
//! partition = "cpu"            # sbatch --partition
//! account = "pathology"        # sbatch --account
//! time = "4:00:00"             # sbatch --time: minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S
//! mem = "16G"                  # sbatch --mem: a number with an optional K, M, G or T (MB by default; 0: all of the node's)
//! cpus_per_task = 8            # sbatch --cpus-per-task
//! sbatch_args = ["--qos=long", "--constraint=avx2"]   # anything else, one option per element
//! shards = 64                  # array tasks per build, unless --shards
//! ```
//! Every key is optional; whatever is not set is left to the site's
//! defaults (and to `SBATCH_*` environment variables).
//!
//! Read with the rest of `cpia.toml` (so a typo fails every command, not only
//! a Slurm build), and used by `executor::slurm` to build `sbatch`'s command
//! line: it lives here, below both.

/// Array tasks of a build when neither `shards` nor `--shards` says.
pub const DEFAULT_SHARDS: u32 = 16;
/// More tasks than this is a typo (Slurm's own `MaxArraySize` is usually
/// far lower, and sbatch says so).
pub const MAX_SHARDS: u32 = 1_000_000;

/// The Slurm options of a workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmConfig {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// A time limit in one of sbatch's formats (checked).
    pub time: Option<String>,
    /// Memory per node in sbatch's format (checked).
    pub mem: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// Further sbatch options, each checked by [`check_sbatch_arg`].
    pub sbatch_args: Vec<String>,
    pub shards: u32,
}

impl Default for SlurmConfig {
    fn default() -> SlurmConfig {
        SlurmConfig {
            partition: None,
            account: None,
            time: None,
            mem: None,
            cpus_per_task: None,
            sbatch_args: Vec::new(),
            shards: DEFAULT_SHARDS,
        }
    }
}

/// A bad value in `[executor.slurm]` (or of the command-line flag that
/// overrides it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, e.g. `time` or `sbatch_args[2]`.
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[executor.slurm] {}: {}", self.key, self.message)
    }
}
impl std::error::Error for ConfigError {}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

const KEYS: &str = "partition, account, time, mem, cpus_per_task, sbatch_args, shards";

impl SlurmConfig {
    /// Reads the `[executor.slurm]` table (the table itself, not the whole
    /// file). Unknown keys and bad values are errors naming the key.
    pub fn from_toml(table: &toml::Table) -> Result<SlurmConfig, ConfigError> {
        let mut c = SlurmConfig::default();
        for (key, value) in table {
            match key.as_str() {
                "partition" => c.partition = Some(string(key, value)?),
                "account" => c.account = Some(string(key, value)?),
                // A bare number is minutes (time) or megabytes (mem), as in sbatch.
                "time" => c.time = Some(string_or_int(key, value)?),
                "mem" => c.mem = Some(string_or_int(key, value)?),
                "cpus_per_task" => c.cpus_per_task = Some(count(key, value, u32::MAX)?),
                "shards" => c.shards = count(key, value, MAX_SHARDS)?,
                "sbatch_args" => {
                    let toml::Value::Array(items) = value else {
                        return Err(err(
                            key,
                            format!("expected a list of strings, got {}", value.type_str()),
                        ));
                    };
                    c.sbatch_args = items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| string(&format!("sbatch_args[{i}]"), v))
                        .collect::<Result<_, _>>()?;
                }
                _ => return Err(err(key, format!("unknown key (known: {KEYS})"))),
            }
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every value (after command-line overrides, too).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.partition {
            check_name(p).map_err(|m| err("partition", m))?;
        }
        if let Some(a) = &self.account {
            check_name(a).map_err(|m| err("account", m))?;
        }
        if let Some(t) = &self.time {
            if time_seconds(t).is_none() {
                return Err(err(
                    "time",
                    format!("`{t}` is not a Slurm time limit (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S or UNLIMITED, and more than 0)"),
                ));
            }
        }
        if let Some(m) = &self.mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
            let suffix = m.len() - digits.len();
            if digits.is_empty() || suffix > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    "mem",
                    format!("`{m}` is not a Slurm memory size (a number with an optional K, M, G or T, e.g. 16G)"),
                ));
            }
        }
        if self.cpus_per_task == Some(0) {
            return Err(err("cpus_per_task", "must be at least 1"));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return Err(err("shards", format!("must be 1 to {MAX_SHARDS}")));
        }
        for (i, a) in self.sbatch_args.iter().enumerate() {
            check_sbatch_arg(a).map_err(|m| err(format!("sbatch_args[{i}]"), m))?;
        }
        Ok(())
    }
}

/// Options cpia sets itself, and what to do instead.
const OWNED: &[(&str, Option<char>, &str)] = &[
    (
        "array",
        Some('a'),
        "cpia submits the array (set `shards` or --shards)",
    ),
    ("parsable", None, "cpia reads the job id with it"),
    ("wrap", None, "cpia sets the command each task runs"),
    (
        "dependency",
        Some('d'),
        "cpia sets the dependencies of its jobs",
    ),
    (
        "kill-on-invalid-dep",
        None,
        "cpia sets the dependencies of its jobs",
    ),
    (
        "output",
        Some('o'),
        "cpia names the log files (under the cache)",
    ),
    (
        "error",
        Some('e'),
        "cpia names the log files (under the cache)",
    ),
    ("chdir", Some('D'), "tasks run in the workspace"),
    ("wait", Some('W'), "use cpia's --wait"),
    ("test-only", None, "nothing would be submitted"),
    ("partition", Some('p'), "set `partition` (or --partition)"),
    ("account", Some('A'), "set `account`"),
    ("time", Some('t'), "set `time`"),
    ("mem", None, "set `mem`"),
    ("cpus-per-task", Some('c'), "set `cpus_per_task`"),
];

/// Checks one extra sbatch option: it must be an option with its value
/// attached (`--qos=long`, `-qlong`), not one cpia sets itself (long
/// options abbreviated as getopt allows are recognised too).
pub fn check_sbatch_arg(arg: &str) -> Result<(), String> {
    if !arg.starts_with('-') || arg == "-" || arg == "--" {
        return Err(format!(
            "`{arg}` is not an sbatch option: give one option per element, its value attached (`--qos=long`)"
        ));
    }
    let owned = if let Some(long) = arg.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or("");
        OWNED
            .iter()
            .find(|(o, _, _)| *o == name || (name.len() >= 3 && o.starts_with(name)))
    } else {
        let letter = arg.chars().nth(1);
        OWNED.iter().find(|(_, s, _)| s.is_some() && *s == letter)
    };
    match owned {
        Some((name, _, instead)) => Err(format!("`{arg}`: cpia sets --{name} itself ({instead})")),
        None => Ok(()),
    }
}

/// Seconds of a Slurm time limit (`u64::MAX` for UNLIMITED); `None` if it is
/// not one, or is zero.
pub fn time_seconds(t: &str) -> Option<u64> {
    if t.eq_ignore_ascii_case("UNLIMITED") || t.eq_ignore_ascii_case("INFINITE") {
        return Some(u64::MAX);
    }
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let secs = match (days, &parts[..]) {
        (None, &[m]) => m * 60,
        (None, &[m, s]) => m * 60 + s,
        (None, &[h, m, s]) | (Some(_), &[h, m, s]) => h * 3600 + m * 60 + s,
        (Some(_), &[h]) => h * 3600,
        (Some(_), &[h, m]) => h * 3600 + m * 60,
        _ => return None,
    };
    let secs = secs + days.unwrap_or(0) * 86_400;
    (secs > 0).then_some(secs)
}

fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{s}` is not a Slurm name (no spaces, not starting with `-`)"
        ));
    }
    Ok(())
}

fn string(key: &str, v: &toml::Value) -> Result<String, ConfigError> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        _ => Err(err(key, format!("expected a string, got {}", v.type_str()))),
    }
}

fn string_or_int(key: &str, v: &toml::Value) -> Result<String, ConfigError> {
    match v {
        toml::Value::Integer(i) if *i >= 0 => Ok(i.to_string()),
        toml::Value::Integer(i) => Err(err(key, format!("must not be negative, got {i}"))),
        _ => string(key, v),
    }
}

fn count(key: &str, v: &toml::Value, max: u32) -> Result<u32, ConfigError> {
    match v {
        toml::Value::Integer(i) if (1..=max as i64).contains(i) => Ok(*i as u32),
        toml::Value::Integer(i) => Err(err(key, format!("must be 1 to {max}, got {i}"))),
        _ => Err(err(
            key,
            format!("expected a whole number, got {}", v.type_str()),
        )),
    }
}
