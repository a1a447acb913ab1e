//! What the state holds, aggregated for `cpia list`, `status` and `report`:
//! files per output folder and collection, inputs and their completeness,
//! failures, the MPP origin of each slide, the build log, and bounded samples
//! of recorded files.
//!
//! Sized for the corpus (~150 M outputs, nearly all WSI tiles): no query here
//! reads a row per tile. WSI folders are counted from `units.outputs`
//! (a row per grid cell × writing step), ROI folders from the `outputs`
//! index (a row per ROI image or QC picture); samples read a bounded number of
//! rows per slide or folder.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::state::{blob_hex, State, StateError};

/// Files recorded in one output folder for one collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderCount {
    pub collection: String,
    /// Relative to the output folder: `M/BreaKHis_100x`, `qc/CAM16`.
    pub path: String,
    pub files: u64,
}

/// Inputs of a collection recorded complete under one plan fingerprint
/// (`fingerprint` None: not complete).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputCount {
    pub collection: String,
    pub fingerprint: Option<String>,
    pub inputs: u64,
}

/// One recorded failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRow {
    pub collection: String,
    /// The source file, relative to its root.
    pub input: String,
    /// `""` (the input as a whole), `"i,j"` (a WSI cell) or `"qc"`.
    pub unit: String,
    pub error: String,
    /// Seconds since the epoch.
    pub at: i64,
}

/// The MPP a slide was last built with, and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct SlideRead {
    pub collection: String,
    /// The slide file, relative to its root.
    pub slide: String,
    /// `openslide`, `tiff-resolution`, `override` or `default`.
    pub origin: String,
    pub mpp: f64,
}

/// A row of the build log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRow {
    pub id: i64,
    pub started: i64,
    /// None: the build was killed or stopped by an internal error.
    pub finished: Option<i64>,
    pub built: u64,
    pub up_to_date: u64,
    pub removed: u64,
    pub failed: u64,
    pub command: String,
}

/// A slide (WSI input) of a collection and its QC picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlideRow {
    pub input: i64,
    /// Relative to the source root.
    pub rel: String,
    /// The QC picture, relative to the output folder, if one is recorded.
    pub qc: Option<String>,
}

/// What the grid of one slide holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlideCells {
    /// Grid cells with a recorded decision or unit.
    pub cells: u64,
    /// Cells kept as tissue.
    pub kept: u64,
    /// Tiles written, all scales.
    pub tiles: u64,
}

impl State {
    /// Files per (collection, output folder): ROI outputs and QC pictures
    /// counted from the `outputs` index, WSI tiles summed from `units`.
    /// A folder that one collection owns costs no join; one shared by several
    /// (or not attributed) is counted per collection with a join.
    pub fn folder_counts(&self) -> Result<Vec<FolderCount>, StateError> {
        let what = "counting outputs per folder";
        let mut per_dir: HashMap<i64, u64> = HashMap::new();
        for (dir, n) in self.rows(
            "SELECT out_dir, count(*) FROM outputs GROUP BY out_dir",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            what,
        )? {
            *per_dir.entry(dir).or_default() += n as u64;
        }
        // One pass over the table in storage order, summed here: grouping
        // through `units_by_dir` would visit every row once per folder's
        // index range (random reads of a table of tens of millions of rows),
        // and SQLite's GROUP BY without it sorts them all.
        {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT out_dir, outputs FROM units NOT INDEXED")
                .map_err(self.err(what))?;
            let mut rows = stmt.query([]).map_err(self.err(what))?;
            let mut last: Option<(i64, u64)> = None;
            while let Some(r) = rows.next().map_err(self.err(what))? {
                let dir: i64 = r.get(0).map_err(self.err(what))?;
                let n = r.get::<_, i64>(1).map_err(self.err(what))? as u64;
                match &mut last {
                    Some((d, sum)) if *d == dir => *sum += n,
                    _ => {
                        if let Some((d, sum)) = last.take() {
                            *per_dir.entry(d).or_default() += sum;
                        }
                        last = Some((dir, n));
                    }
                }
            }
            if let Some((d, sum)) = last {
                *per_dir.entry(d).or_default() += sum;
            }
        }
        let mut owners: HashMap<i64, (String, Vec<String>)> = HashMap::new();
        for (dir, path, owner) in self.rows(
            "SELECT d.id, d.path, c.name FROM out_dirs d
               LEFT JOIN collection_dirs cd ON cd.out_dir = d.id
               LEFT JOIN collections c ON c.id = cd.collection",
            [],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            },
            what,
        )? {
            let e = owners.entry(dir).or_insert_with(|| (path, Vec::new()));
            e.1.extend(owner);
        }
        let mut out = Vec::new();
        for (dir, files) in per_dir {
            let Some((path, names)) = owners.remove(&dir) else {
                continue;
            };
            if files == 0 {
                continue;
            }
            if let [only] = names.as_slice() {
                out.push(FolderCount {
                    collection: only.clone(),
                    path,
                    files,
                });
                continue;
            }
            let mut exact: HashMap<String, u64> = HashMap::new();
            for (name, n) in self.rows(
                "SELECT c.name, count(*) FROM outputs o JOIN inputs i ON i.id = o.input
                   JOIN collections c ON c.id = i.collection WHERE o.out_dir = ?1 GROUP BY c.name
                 UNION ALL
                 SELECT c.name, sum(u.outputs) FROM units u JOIN inputs i ON i.id = u.input
                   JOIN collections c ON c.id = i.collection WHERE u.out_dir = ?1 GROUP BY c.name",
                params![dir],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
                what,
            )? {
                *exact.entry(name).or_default() += n as u64;
            }
            for (collection, files) in exact.into_iter().filter(|(_, n)| *n > 0) {
                out.push(FolderCount {
                    collection,
                    path: path.clone(),
                    files,
                });
            }
        }
        out.sort_by(|a, b| (&a.collection, &a.path).cmp(&(&b.collection, &b.path)));
        Ok(out)
    }

    /// Outputs made with library versions other than `current` (the sets
    /// this cpia records, one per kind of collection): (collection, the
    /// recorded versions — empty when not recorded —, outputs). Reads the
    /// small `provenance` table first, and rows of `outputs` and `units` (a
    /// row per ROI output or WSI unit, never per tile) only when some
    /// provenance names other versions.
    pub fn outputs_by_other_libraries(
        &self,
        current: &[&str],
    ) -> Result<Vec<(String, String, u64)>, StateError> {
        let what = "counting outputs by library versions";
        let other: HashMap<i64, String> = self
            .rows(
                "SELECT pv.id, coalesce(l.versions, '') FROM provenance pv
                   LEFT JOIN libraries l ON l.id = pv.libraries",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                what,
            )?
            .into_iter()
            .filter(|(_, v)| !current.contains(&v.as_str()))
            .collect();
        if other.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = other.keys().map(i64::to_string).collect();
        let ids = ids.join(",");
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        for (collection, prov, n) in self.rows(
            &format!(
                "SELECT c.name, o.prov, count(*) FROM outputs o JOIN inputs i ON i.id = o.input
                   JOIN collections c ON c.id = i.collection WHERE o.prov IN ({ids})
                  GROUP BY c.name, o.prov
                 UNION ALL
                 SELECT c.name, u.prov, sum(u.outputs) FROM units u JOIN inputs i ON i.id = u.input
                   JOIN collections c ON c.id = i.collection WHERE u.prov IN ({ids})
                  GROUP BY c.name, u.prov"
            ),
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
            what,
        )? {
            let libraries = other.get(&prov).cloned().unwrap_or_default();
            *counts.entry((collection, libraries)).or_default() += n as u64;
        }
        let mut out: Vec<(String, String, u64)> = counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((c, l), n)| (c, l, n))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Inputs per collection and plan fingerprint (hex; None: incomplete).
    pub fn input_counts(&self) -> Result<Vec<InputCount>, StateError> {
        self.rows(
            "SELECT c.name, f.fp, n FROM
               (SELECT collection, fp, count(*) AS n FROM inputs GROUP BY collection, fp) i
               JOIN collections c ON c.id = i.collection
               LEFT JOIN fingerprints f ON f.id = i.fp
              ORDER BY c.name",
            [],
            |r| {
                Ok(InputCount {
                    collection: r.get(0)?,
                    fingerprint: r.get::<_, Option<Vec<u8>>>(1)?.map(|b| blob_hex(&b)),
                    inputs: r.get::<_, i64>(2)? as u64,
                })
            },
            "counting inputs",
        )
    }

    /// Per collection: (inputs with a recorded failure, failure rows).
    pub fn failure_counts(&self) -> Result<Vec<(String, u64, u64)>, StateError> {
        self.rows(
            "SELECT c.name, count(DISTINCT f.input), count(*) FROM failures f
               JOIN inputs i ON i.id = f.input JOIN collections c ON c.id = i.collection
              GROUP BY c.name ORDER BY c.name",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
            "counting failures",
        )
    }

    /// The first `limit` failures of each collection, by source path and unit.
    pub fn failures_listed(&self, limit: u64) -> Result<Vec<FailureRow>, StateError> {
        self.rows(
            "SELECT collection, rel, unit, error, at FROM (
               SELECT c.name AS collection,
                      CASE d.path WHEN '' THEN fl.name ELSE d.path || '/' || fl.name END AS rel,
                      f.unit AS unit, f.error AS error, f.at AS at,
                      row_number() OVER (PARTITION BY i.collection
                                         ORDER BY d.path, fl.name, f.unit) AS k
                 FROM failures f JOIN inputs i ON i.id = f.input
                 JOIN collections c ON c.id = i.collection
                 JOIN files fl ON fl.id = i.file JOIN src_dirs d ON d.id = fl.src_dir)
              WHERE k <= ?1 ORDER BY collection, k",
            params![limit as i64],
            |r| {
                Ok(FailureRow {
                    collection: r.get(0)?,
                    input: r.get(1)?,
                    unit: r.get(2)?,
                    error: r.get(3)?,
                    at: r.get(4)?,
                })
            },
            "listing failures",
        )
    }

    /// The MPP and its origin of every slide of `collections` that has a
    /// built unit or QC picture (indexed look-ups per slide: the read of its
    /// first unit, else of its QC picture — a slide smaller than one cell has
    /// no unit).
    pub fn slide_reads(&self, collections: &[String]) -> Result<Vec<SlideRead>, StateError> {
        let mut out = Vec::new();
        for name in collections {
            out.extend(self.rows(
                "SELECT c.name, CASE d.path WHEN '' THEN f.name ELSE d.path || '/' || f.name END,
                        r.mpp_origin, r.mpp
                   FROM collections c JOIN inputs i ON i.collection = c.id
                   JOIN files f ON f.id = i.file JOIN src_dirs d ON d.id = f.src_dir
                   JOIN reads r ON r.id = coalesce(
                        (SELECT u.read FROM units u WHERE u.input = i.id LIMIT 1),
                        (SELECT o.read FROM outputs o WHERE o.input = i.id AND o.read IS NOT NULL LIMIT 1))
                  WHERE c.name = ?1 ORDER BY 2",
                params![name],
                |r| {
                    Ok(SlideRead {
                        collection: r.get(0)?,
                        slide: r.get(1)?,
                        origin: r.get(2)?,
                        mpp: r.get(3)?,
                    })
                },
                "reading the MPP of slides",
            )?);
        }
        Ok(out)
    }

    /// The latest build started, if any.
    pub fn last_build(&self) -> Result<Option<BuildRow>, StateError> {
        self.conn
            .query_row(
                "SELECT id, started, finished, built, up_to_date, removed, failed, command
                   FROM builds ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    let n = |i: usize| -> rusqlite::Result<u64> {
                        Ok(r.get::<_, Option<i64>>(i)?.unwrap_or(0) as u64)
                    };
                    Ok(BuildRow {
                        id: r.get(0)?,
                        started: r.get(1)?,
                        finished: r.get(2)?,
                        built: n(3)?,
                        up_to_date: n(4)?,
                        removed: n(5)?,
                        failed: n(6)?,
                        command: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(self.err("reading the build log"))
    }

    /// The slides (inputs) of a collection, by path, with their QC pictures.
    pub fn slides_of(&self, collection: &str) -> Result<Vec<SlideRow>, StateError> {
        self.rows(
            "SELECT i.id, CASE d.path WHEN '' THEN f.name ELSE d.path || '/' || f.name END,
                    (SELECT od.path || '/' || o.name FROM outputs o JOIN out_dirs od ON od.id = o.out_dir
                      WHERE o.input = i.id AND o.sink = 'qc' LIMIT 1)
               FROM collections c JOIN inputs i ON i.collection = c.id
               JOIN files f ON f.id = i.file JOIN src_dirs d ON d.id = f.src_dir
              WHERE c.name = ?1 ORDER BY 2",
            params![collection],
            |r| {
                Ok(SlideRow {
                    input: r.get(0)?,
                    rel: r.get(1)?,
                    qc: r.get(2)?,
                })
            },
            "listing slides",
        )
    }

    /// Cells, kept cells and tiles of one slide (its units only).
    pub fn slide_cells(&self, input: i64) -> Result<SlideCells, StateError> {
        self.conn
            .query_row(
                "SELECT count(DISTINCT i || ',' || j),
                        count(DISTINCT CASE WHEN kept = 1 THEN i || ',' || j END),
                        coalesce(sum(outputs), 0)
                   FROM units WHERE input = ?1",
                params![input],
                |r| {
                    Ok(SlideCells {
                        cells: r.get::<_, i64>(0)? as u64,
                        kept: r.get::<_, i64>(1)? as u64,
                        tiles: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .map_err(self.err("reading a slide's cells"))
    }

    /// Up to `limit` tiles a slide has in output folder `folder`, as paths
    /// relative to the output folder, spread over its cells (a bounded read of
    /// the slide's units and at most `limit` tile rows per unit).
    pub fn tiles_of_slide(
        &self,
        input: i64,
        folder: &str,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        let units = self.rows(
            "SELECT u.id, u.size, u.outputs, f.name FROM units u JOIN out_dirs d ON d.id = u.out_dir
               JOIN inputs i ON i.id = u.input JOIN files f ON f.id = i.file
              WHERE u.input = ?1 AND d.path = ?2 AND u.outputs > 0 ORDER BY u.j, u.i",
            params![input, folder],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
            "sampling tiles",
        )?;
        let mut out = Vec::new();
        for (id, size, outputs, file) in spread(&units, limit) {
            let slide = file.split('.').next().unwrap_or(file);
            // The unit's middle tile: at most `outputs` (≤ a few hundred) rows.
            let tile = self.rows(
                "SELECT x, y FROM tiles WHERE unit = ?1 LIMIT 1 OFFSET ?2",
                params![id, outputs / 2],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                "sampling tiles",
            )?;
            if let Some((x, y)) = tile.first() {
                out.push(format!("{folder}/{slide}-{size}-{x}-{y}.jpg"));
            }
        }
        Ok(out)
    }

    /// Up to `limit` files of a folder that holds ROI outputs, spread evenly
    /// over its `files` recorded names (one pass over the folder's index
    /// entries: a row per ROI image, never per tile).
    pub fn outputs_in_folder(
        &self,
        folder: &str,
        files: u64,
        limit: usize,
    ) -> Result<Vec<String>, StateError> {
        if limit == 0 || files == 0 {
            return Ok(Vec::new());
        }
        let step = (files / limit as u64).max(1);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT o.name FROM outputs o JOIN out_dirs d ON d.id = o.out_dir
                  WHERE d.path = ?1 ORDER BY o.name",
            )
            .map_err(self.err("sampling outputs"))?;
        let mut rows = stmt
            .query(params![folder])
            .map_err(self.err("sampling outputs"))?;
        let mut out = Vec::new();
        let mut k = 0u64;
        while let Some(r) = rows.next().map_err(self.err("sampling outputs"))? {
            if k % step == step / 2 {
                let name: String = r.get(0).map_err(self.err("sampling outputs"))?;
                out.push(format!("{folder}/{name}"));
                if out.len() == limit {
                    break;
                }
            }
            k += 1;
        }
        Ok(out)
    }
}

/// At most `limit` items of `items`, evenly spaced, in order.
pub fn spread<T>(items: &[T], limit: usize) -> impl Iterator<Item = &T> {
    let n = items.len();
    let take = n.min(limit);
    // The closure runs only when `take` > 0.
    (0..take).map(move |k| &items[k * n / take + n / take / 2])
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_picks_evenly_and_stays_in_bounds() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&v, 3).copied().collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(spread(&v, 20).count(), 10);
        assert_eq!(spread(&v, 0).count(), 0);
        let e: Vec<u32> = Vec::new();
        assert_eq!(spread(&e, 4).count(), 0);
        for n in 1..40 {
            let v: Vec<usize> = (0..n).collect();
            for l in 1..45 {
                let got: Vec<usize> = spread(&v, l).copied().collect();
                assert_eq!(got.len(), n.min(l));
                assert!(got.windows(2).all(|w| w[0] < w[1]), "{n} {l} {got:?}");
            }
        }
    }
}
