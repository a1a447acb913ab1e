//! A Slurm build's plan on disk, under `cache/plans/<plan>/`: a manifest and
//! one file per shard, read by the array tasks on other nodes.
//!
//! A shard file is JSON lines: a `collection` line (name, ids, the recipe's
//! plan fingerprint), then one `input` line per input of that collection
//! given to the shard, with just enough to rebuild its actions: the task
//! loads the same recipes and expands the input again with the planner's
//! own functions (ROI outputs by path; WSI units by cell and writing step,
//! from the slide metadata the planner cached), and checks the result
//! against a digest of the planned keys. A recipe edited since planning
//! changes its fingerprint, and the task refuses to build from it.
//!
//! Files are written whole and synced before the array is submitted; the
//! manifest, written last by rename, marks a complete plan.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::driver::Watched;
use crate::engine::EngineError;

/// Bump when the layout changes: a task refuses other versions.
pub const FORMAT: u32 = 1;

/// What every task of a plan shares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub plan: String,
    /// The build (row of `builds`) the records belong to.
    pub build: i64,
    /// The coordinator's `cpia` version: a task of another version refuses.
    pub tool_version: String,
    /// Shards, numbered `0..tasks`.
    pub tasks: u32,
    pub fail_fast: bool,
    /// Output folders checked when the build started (for its end).
    pub watched: Vec<Watched>,
}

/// One line of a shard file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Collection(CollectionLine),
    Input(InputWork),
}

/// The collection whose inputs follow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionLine {
    pub name: String,
    pub id: i64,
    /// The fingerprint id its complete inputs get.
    pub fp: Option<i64>,
    /// The recipe's plan fingerprint when it was planned.
    pub fingerprint: String,
}

/// One input's work for a task: all of it (its outputs, or its slide's
/// units and QC picture) goes to one task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputWork {
    pub id: i64,
    pub source_root: String,
    pub rel: String,
    pub abs: PathBuf,
    pub hash: String,
    /// Estimated cost ([`super::shard`]).
    pub cost: u64,
    /// Outputs, units and QC pictures to build.
    pub actions: u64,
    /// ROI: the paths of the outputs to build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// WSI: the slide metadata planning used (JSON, as the state caches it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<UnitWork>,
    /// WSI: the QC picture is drawn; the decisions recorded before the
    /// build, as (i, j, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<Vec<(u32, u32, bool)>>,
    /// blake3 of the planned keys, in the order above (outputs, units, QC).
    pub keys: String,
}

/// One WSI unit to build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitWork {
    pub cell: (u32, u32),
    /// Index into the recipe's steps of the writing step.
    pub sink: usize,
    /// The tiles it recorded before, as (path, x, y).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<(String, u32, u32)>,
}

/// The digest of a list of keys, as [`InputWork::keys`] holds it.
pub fn keys_digest<'k>(keys: impl IntoIterator<Item = &'k str>) -> String {
    let mut h = blake3::Hasher::new();
    for k in keys {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Whether `id` can be a plan id (one path component of safe characters).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn shard_path(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("shard-{shard}.jsonl"))
}

fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("manifest.json")
}

fn io_err<'p>(path: &'p Path, what: &str) -> impl Fn(io::Error) -> EngineError + 'p {
    let what = what.to_string();
    move |e| EngineError(format!("{what} {}: {e}", path.display()))
}

/// Writes a plan's shard files, a collection at a time.
pub struct PlanWriter {
    dir: PathBuf,
    shards: u32,
    /// Shards that received an input (they are `0..used`: the assignment
    /// fills the least loaded first, lowest index first).
    used: u32,
}

impl PlanWriter {
    /// Creates the plan folder `dir` for up to `shards` shards.
    pub fn create(dir: &Path, shards: u32) -> Result<PlanWriter, EngineError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir, "creating the plan folder"))?;
        Ok(PlanWriter {
            dir: dir.to_path_buf(),
            shards,
            used: 0,
        })
    }

    /// Appends a collection and its inputs, each given to its shard
    /// (`assigned[i]` for `inputs[i]`).
    pub fn collection(
        &mut self,
        line: &CollectionLine,
        inputs: &[InputWork],
        assigned: &[u32],
    ) -> Result<(), EngineError> {
        let mut by_shard: Vec<Vec<&InputWork>> = vec![Vec::new(); self.shards as usize];
        for (w, &s) in inputs.iter().zip(assigned) {
            by_shard[s as usize].push(w);
        }
        for (s, works) in by_shard.iter().enumerate() {
            if works.is_empty() {
                continue;
            }
            self.used = self.used.max(s as u32 + 1);
            let path = shard_path(&self.dir, s as u32);
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path, "writing"))?;
            let mut out = BufWriter::new(file);
            let mut put = |l: &Line| -> io::Result<()> {
                serde_json::to_writer(&mut out, l).map_err(io::Error::other)?;
                out.write_all(b"\n")
            };
            put(&Line::Collection(line.clone())).map_err(io_err(&path, "writing"))?;
            for w in works {
                put(&Line::Input((*w).clone())).map_err(io_err(&path, "writing"))?;
            }
            out.flush().map_err(io_err(&path, "writing"))?;
        }
        Ok(())
    }

    /// How many shards hold work.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Syncs the shard files and writes the manifest (by rename): the plan
    /// is then complete.
    pub fn finish(&self, manifest: &Manifest) -> Result<(), EngineError> {
        for s in 0..self.used {
            let path = shard_path(&self.dir, s);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&path, "syncing"))?;
        }
        let path = manifest_path(&self.dir);
        let tmp = self.dir.join("manifest.json.tmp");
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| EngineError(format!("encoding the plan manifest: {e}")))?;
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(io_err(&path, "writing"))
    }
}

impl Manifest {
    /// Reads the manifest of the plan in `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, EngineError> {
        let path = manifest_path(dir);
        let text = std::fs::read(&path).map_err(|e| {
            EngineError(format!(
                "plan {}: {e} (a plan is removed once it is merged; is this task left over from an earlier build?)",
                path.display()
            ))
        })?;
        let m: Manifest = serde_json::from_slice(&text)
            .map_err(|e| EngineError(format!("plan {}: {e}", path.display())))?;
        if m.format != FORMAT {
            return Err(EngineError(format!(
                "plan {}: format {}, this cpia reads format {FORMAT}",
                path.display(),
                m.format
            )));
        }
        Ok(m)
    }
}

/// Reads a shard file a collection at a time.
pub struct ShardReader {
    path: PathBuf,
    lines: std::io::Lines<BufReader<File>>,
    next: Option<CollectionLine>,
    line_no: usize,
}

impl ShardReader {
    /// Opens shard `shard` of the plan in `dir`.
    pub fn open(dir: &Path, shard: u32) -> Result<ShardReader, EngineError> {
        let path = shard_path(dir, shard);
        let file = File::open(&path).map_err(io_err(&path, "reading"))?;
        let mut r = ShardReader {
            path,
            lines: BufReader::new(file).lines(),
            next: None,
            line_no: 0,
        };
        r.next = match r.line()? {
            None => None,
            Some(Line::Collection(c)) => Some(c),
            Some(Line::Input(_)) => return Err(r.bad("an input before any collection")),
        };
        Ok(r)
    }

    fn bad(&self, what: impl std::fmt::Display) -> EngineError {
        EngineError(format!(
            "plan {} line {}: {what}",
            self.path.display(),
            self.line_no
        ))
    }

    fn line(&mut self) -> Result<Option<Line>, EngineError> {
        let Some(text) = self.lines.next() else {
            return Ok(None);
        };
        self.line_no += 1;
        let text = text.map_err(|e| self.bad(e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| self.bad(e))
    }

    /// The next collection and its inputs, `None` at the end.
    pub fn next_collection(
        &mut self,
    ) -> Result<Option<(CollectionLine, Vec<InputWork>)>, EngineError> {
        let Some(c) = self.next.take() else {
            return Ok(None);
        };
        let mut inputs = Vec::new();
        loop {
            match self.line()? {
                None => break,
                Some(Line::Input(w)) => inputs.push(w),
                Some(Line::Collection(n)) => {
                    self.next = Some(n);
                    break;
                }
            }
        }
        Ok(Some((c, inputs)))
    }

    /// Every input id of the shard and its number of actions (to report
    /// what a failed task left undone).
    pub fn inputs(dir: &Path, shard: u32) -> Result<Vec<(i64, u64)>, EngineError> {
        let mut r = ShardReader::open(dir, shard)?;
        let mut out = Vec::new();
        while let Some((_, inputs)) = r.next_collection()? {
            out.extend(inputs.iter().map(|w| (w.id, w.actions)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(id: i64) -> InputWork {
        InputWork {
            id,
            source_root: "A".into(),
            rel: format!("x/{id}.png"),
            abs: PathBuf::from(format!("/src/x/{id}.png")),
            hash: "h".into(),
            cost: 10,
            actions: 2,
            outputs: vec![format!("M/A/{id}.jpg")],
            meta: None,
            units: vec![],
            qc: None,
            keys: keys_digest(["k"]),
        }
    }

    #[test]
    fn shards_read_back_collection_by_collection() {
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("p1");
        let mut w = PlanWriter::create(&plan, 4).unwrap();
        let coll = |name: &str| CollectionLine {
            name: name.into(),
            id: 1,
            fp: Some(3),
            fingerprint: "f".into(),
        };
        w.collection(&coll("A"), &[work(1), work(2), work(3)], &[0, 1, 0])
            .unwrap();
        w.collection(&coll("B"), &[work(4)], &[0]).unwrap();
        assert_eq!(w.used(), 2);
        let m = Manifest {
            format: FORMAT,
            plan: "p1".into(),
            build: 5,
            tool_version: "t".into(),
            tasks: 2,
            fail_fast: false,
            watched: vec![],
        };
        w.finish(&m).unwrap();
        assert_eq!(Manifest::read(&plan).unwrap(), m);
        let mut r = ShardReader::open(&plan, 0).unwrap();
        let (c, i) = r.next_collection().unwrap().unwrap();
        assert_eq!((c.name.as_str(), i.len()), ("A", 2));
        assert_eq!(i[1], work(3));
        let (c, i) = r.next_collection().unwrap().unwrap();
        assert_eq!((c.name.as_str(), i.len()), ("B", 1));
        assert!(r.next_collection().unwrap().is_none());
        assert_eq!(ShardReader::inputs(&plan, 1).unwrap(), [(2, 2)]);
        // A damaged line names the file and line.
        std::fs::write(plan.join("shard-1.jsonl"), "{\"collection\":{}}\n").unwrap();
        let e = ShardReader::open(&plan, 1).err().unwrap().to_string();
        assert!(e.contains("shard-1.jsonl line 1"), "{e}");
        assert!(ShardReader::open(&plan, 2).is_err());
        assert!(valid_id("000012-9fa0c1d2") && !valid_id("../x") && !valid_id(""));
    }
}
