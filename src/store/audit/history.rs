//! The build history: which recipe versions each build used (with their
//! texts, archived by content hash so an old output's recipe can be shown
//! after the file changed), the failures each build reported, and the
//! `builds` rows read back for `cpia log`.

use std::ops::ControlFlow;

use rusqlite::{params, OptionalExtension};

use crate::store::state::{blob_hex, hex_blob, State, StateError};

/// One file a recipe version was read from: its path (relative to the
/// workspace) and the blake3 of its text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipeFile {
    pub path: String,
    pub blake3: String,
}

/// The recipe a build used for one collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsedRecipe {
    pub collection: String,
    /// The recipe hash (blake3 of `canonical`).
    pub recipe_hash: String,
    /// The canonical text the recipe hash is computed from.
    pub canonical: String,
    /// The recipe file, then the templates it extends, with their texts.
    pub files: Vec<(RecipeFile, String)>,
}

/// A row of `builds`, with what it used and reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRow {
    pub id: i64,
    pub started: i64,
    /// `None`: killed, refused mid-way, or still running.
    pub finished: Option<i64>,
    /// built, up to date, removed, failed (when finished).
    pub counts: Option<[u64; 4]>,
    pub tool_version: String,
    pub command: String,
}

/// An archived recipe version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipeVersion {
    pub recipe_hash: String,
    pub collection: String,
    pub canonical: String,
    pub first_build: i64,
    /// The files of the most recent build that used it, with their texts.
    pub files: Vec<(RecipeFile, String)>,
}

impl State {
    /// Records that build `build` used `recipes`: each file text once by
    /// its hash, each recipe version once, and the build's link to them.
    pub fn record_build_recipes(
        &mut self,
        build: i64,
        recipes: &[UsedRecipe],
    ) -> Result<(), StateError> {
        self.transaction("archiving recipes", |tx| {
            let mut text =
                tx.prepare_cached("INSERT OR IGNORE INTO recipe_texts (hash, text) VALUES (?1, ?2)")?;
            let mut version = tx.prepare_cached(
                "INSERT OR IGNORE INTO recipe_versions (recipe_hash, collection, canonical, files, first_build)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut used = tx.prepare_cached(
                "INSERT OR REPLACE INTO build_recipes (build, collection, recipe_hash, file, files)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in recipes {
                for (f, t) in &r.files {
                    text.execute(params![hex_blob(&f.blake3), t])?;
                }
                let files: Vec<&RecipeFile> = r.files.iter().map(|(f, _)| f).collect();
                let json = serde_json::to_string(&files).unwrap_or_default();
                version.execute(params![r.recipe_hash, r.collection, r.canonical, json, build])?;
                let file = r.files.first().map(|(f, _)| f.path.as_str()).unwrap_or("");
                used.execute(params![build, r.collection, r.recipe_hash, file, json])?;
            }
            Ok(())
        })
    }

    /// Records the failures build `build` reported: (input, error).
    pub fn record_build_failures(
        &mut self,
        build: i64,
        failures: &[(String, String)],
    ) -> Result<(), StateError> {
        self.transaction("recording the build's failures", |tx| {
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO build_failures (build, n, input, error) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (n, (input, error)) in failures.iter().enumerate() {
                put.execute(params![build, n as i64, input, error])?;
            }
            Ok(())
        })
    }

    /// Calls `f` with every build, oldest first, streamed.
    pub fn for_each_build(
        &self,
        f: &mut dyn FnMut(BuildRow) -> ControlFlow<()>,
    ) -> Result<(), StateError> {
        let what = "reading the build log";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, started, finished, built, up_to_date, removed, failed, tool_version, command
                   FROM builds ORDER BY id",
            )
            .map_err(self.err(what))?;
        let mut rows = stmt.query([]).map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            let row = build_row(r).map_err(self.err(what))?;
            if f(row).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Build `id`, if recorded.
    pub fn build_row(&self, id: i64) -> Result<Option<BuildRow>, StateError> {
        self.conn
            .prepare_cached(
                "SELECT id, started, finished, built, up_to_date, removed, failed, tool_version, command
                   FROM builds WHERE id = ?1",
            )
            .and_then(|mut s| s.query_row([id], build_row).optional())
            .map_err(self.err("reading the build log"))
    }

    /// The recipe versions build `id` used: (collection, recipe hash, file).
    pub fn build_recipes(&self, id: i64) -> Result<Vec<(String, String, String)>, StateError> {
        self.rows(
            "SELECT collection, recipe_hash, file FROM build_recipes WHERE build = ?1 ORDER BY collection",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            "reading the build log",
        )
    }

    /// The failures build `id` reported: (input, error).
    pub fn build_failures(&self, id: i64) -> Result<Vec<(String, String)>, StateError> {
        self.rows(
            "SELECT input, error FROM build_failures WHERE build = ?1 ORDER BY n",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading the build log",
        )
    }

    /// The archived recipe version `hash` (a unique prefix of at least 8
    /// hex digits is enough), with the files of the last build that used it.
    pub fn recipe_version(&self, hash: &str) -> Result<Option<RecipeVersion>, StateError> {
        let what = "reading the recipe archive";
        let found: Vec<(String, String, String, i64, String)> = self.rows(
            "SELECT recipe_hash, collection, canonical, first_build, files FROM recipe_versions
              WHERE recipe_hash >= ?1 AND recipe_hash < ?1 || 'g' LIMIT 2",
            [hash.to_ascii_lowercase()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            what,
        )?;
        let mut found = found.into_iter();
        let (Some((recipe_hash, collection, canonical, first_build, files)), None) =
            (found.next(), found.next())
        else {
            return Ok(None);
        };
        // The files of the latest build that used this version.
        let latest: Option<String> = self
            .conn
            .prepare_cached(
                "SELECT files FROM build_recipes WHERE recipe_hash = ?1 ORDER BY build DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row([&recipe_hash], |r| r.get(0)).optional())
            .map_err(self.err(what))?;
        let list: Vec<RecipeFile> =
            serde_json::from_str(latest.as_deref().unwrap_or(&files)).unwrap_or_default();
        let mut out = Vec::new();
        for f in list {
            let text: Option<String> = self
                .conn
                .prepare_cached("SELECT text FROM recipe_texts WHERE hash = ?1")
                .and_then(|mut s| s.query_row([hex_blob(&f.blake3)], |r| r.get(0)).optional())
                .map_err(self.err(what))?;
            out.push((f, text.unwrap_or_default()));
        }
        Ok(Some(RecipeVersion {
            recipe_hash,
            collection,
            canonical,
            first_build,
            files: out,
        }))
    }

    /// The recipe file a build used for `collection` (workspace-relative).
    pub fn recipe_file_of(
        &self,
        build: i64,
        collection: &str,
    ) -> Result<Option<String>, StateError> {
        self.conn
            .prepare_cached("SELECT file FROM build_recipes WHERE build = ?1 AND collection = ?2")
            .and_then(|mut s| {
                s.query_row(params![build, collection], |r| r.get(0))
                    .optional()
            })
            .map_err(self.err("reading the build log"))
    }
}

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BuildRow> {
    let finished: Option<i64> = r.get(2)?;
    let c = |i: usize| -> rusqlite::Result<Option<u64>> {
        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v as u64))
    };
    let counts = match (c(3)?, c(4)?, c(5)?, c(6)?) {
        (Some(a), Some(b), Some(x), Some(d)) => Some([a, b, x, d]),
        _ => None,
    };
    Ok(BuildRow {
        id: r.get(0)?,
        started: r.get(1)?,
        finished,
        counts,
        tool_version: r.get(7)?,
        command: r.get(8)?,
    })
}

/// Hex of a blob (re-exported for callers that hash texts).
pub fn text_hash(text: &str) -> String {
    blob_hex(blake3::hash(text.as_bytes()).as_bytes())
}
