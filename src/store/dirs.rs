//! Output folders: their last verified identity, and the recorded files of
//! one folder, streamed for verification against a `readdir`.

use rusqlite::params;

use super::records::{DirEntryRecord, DirIdentity, OutDir, Owner};
use super::state::{blob_hex, State, StateError};

impl State {
    /// The output folders that hold outputs of any of `collections`.
    pub fn out_dirs_of(&self, collections: &[i64]) -> Result<Vec<OutDir>, StateError> {
        let mut all = Vec::new();
        for &c in collections {
            all.extend(self.rows(
                "SELECT d.id, d.path, d.dev, d.ino, d.mtime_ns, d.ctime_ns
                   FROM collection_dirs cd JOIN out_dirs d ON d.id = cd.out_dir
                  WHERE cd.collection = ?1",
                params![c],
                |r| {
                    let dev: Option<i64> = r.get(2)?;
                    Ok(OutDir {
                        id: r.get(0)?,
                        path: r.get(1)?,
                        identity: match dev {
                            Some(dev) => Some(DirIdentity {
                                dev: dev as u64,
                                ino: r.get::<_, i64>(3)? as u64,
                                mtime_ns: r.get(4)?,
                                ctime_ns: r.get(5)?,
                            }),
                            None => None,
                        },
                    })
                },
                "reading output folders",
            )?);
        }
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.dedup_by(|a, b| a.id == b.id);
        Ok(all)
    }

    /// Output folders with no recorded identity: (id, path).
    pub fn out_dirs_without_identity(&self) -> Result<Vec<(i64, String)>, StateError> {
        self.rows(
            "SELECT id, path FROM out_dirs WHERE dev IS NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
            "reading output folders",
        )
    }

    /// Records (or, with `None`, forgets) the verified identity of a folder.
    pub fn set_dir_identity(
        &mut self,
        out_dir: i64,
        identity: Option<DirIdentity>,
    ) -> Result<(), StateError> {
        let i = identity;
        self.conn
            .prepare_cached(
                "UPDATE out_dirs SET dev = ?2, ino = ?3, mtime_ns = ?4, ctime_ns = ?5 WHERE id = ?1",
            )
            .and_then(|mut s| {
                s.execute(params![
                    out_dir,
                    i.map(|i| i.dev as i64),
                    i.map(|i| i.ino as i64),
                    i.map(|i| i.mtime_ns),
                    i.map(|i| i.ctime_ns)
                ])
            })
            .map_err(self.err("recording an output folder"))?;
        Ok(())
    }

    /// Calls `f` for every file recorded in output folder `out_dir`: named
    /// outputs, then WSI tiles, whose names `tile_name(slide file name, size,
    /// x, y)` gives (the naming rule belongs to the planner).
    pub fn for_each_in_dir(
        &self,
        out_dir: i64,
        tile_name: impl Fn(&str, u32, u32, u32) -> String,
        mut f: impl FnMut(DirEntryRecord),
    ) -> Result<(), StateError> {
        let what = "reading the records of an output folder";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, name, input, ino, size, mtime_ns, content_hash FROM outputs WHERE out_dir = ?1",
            )
            .map_err(self.err(what))?;
        let mut rows = stmt.query([out_dir]).map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            let rec = (|| -> rusqlite::Result<DirEntryRecord> {
                Ok(DirEntryRecord {
                    owner: Owner::Output(r.get(0)?),
                    name: r.get(1)?,
                    input: r.get(2)?,
                    ino: r.get::<_, i64>(3)? as u64,
                    size: r.get::<_, i64>(4)? as u64,
                    mtime_ns: r.get(5)?,
                    content_hash: blob_hex(&r.get::<_, Vec<u8>>(6)?),
                })
            })()
            .map_err(self.err(what))?;
            f(rec);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT u.id, u.input, u.size, f.name, t.x, t.y, t.ino, t.size, t.mtime_ns, t.content_hash
                   FROM units u JOIN inputs i ON i.id = u.input JOIN files f ON f.id = i.file
                   JOIN tiles t ON t.unit = u.id
                  WHERE u.out_dir = ?1",
            )
            .map_err(self.err(what))?;
        let mut rows = stmt.query([out_dir]).map_err(self.err(what))?;
        while let Some(r) = rows.next().map_err(self.err(what))? {
            let rec = (|| -> rusqlite::Result<DirEntryRecord> {
                let (x, y) = (r.get::<_, i64>(4)? as u32, r.get::<_, i64>(5)? as u32);
                let file: String = r.get(3)?;
                Ok(DirEntryRecord {
                    owner: Owner::Tile {
                        unit: r.get(0)?,
                        x,
                        y,
                    },
                    name: tile_name(&file, r.get::<_, i64>(2)? as u32, x, y),
                    input: r.get(1)?,
                    ino: r.get::<_, i64>(6)? as u64,
                    size: r.get::<_, i64>(7)? as u64,
                    mtime_ns: r.get(8)?,
                    content_hash: blob_hex(&r.get::<_, Vec<u8>>(9)?),
                })
            })()
            .map_err(self.err(what))?;
            f(rec);
        }
        Ok(())
    }
}
