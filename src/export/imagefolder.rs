//! ImageFolder exports: `export/<name>/<label>/<file>.jpg`, the layout
//! torchvision's `ImageFolder` and Hugging Face's `imagefolder` read (the
//! label is the folder holding the file).
//!
//! The label is the sample's class, else its sub-dataset. The file name is
//! its key with `/` written as `.` (`L.BreaKHis_40x.SOB_B_A-14-22549AB-40-001.jpg`):
//! keys hold no dot (they are escaped, [`super::key`]), so names never
//! collide, whatever the scales and sub-datasets sharing a label.
//!
//! Each file is a hard link to the output (no bytes copied; the dataset's
//! file is opened without following links and its bytes checked against
//! their record before it is linked), or a copy where the filesystem
//! cannot link. A link shares its inode with the output: when a build
//! replaces the output (a new file, renamed into place), the export's link
//! keeps the old bytes until the export is brought up to date, which
//! links the new file.

use std::collections::HashMap;

use super::Error;
use crate::engine::atomic::OutputDir;
use crate::provenance::facts;
use crate::store::audit::OutputFacts;
use crate::store::exports::{Item, SampleRow};
use crate::store::State;

/// The file of sample `f` (key `key`) in ImageFolder export `name`,
/// relative to the output folder.
pub fn path(name: &str, f: &OutputFacts, key: &str) -> String {
    let (_, sub) = facts::scale_and_sub(&f.dir);
    let label = f.class.as_deref().unwrap_or(sub);
    format!(
        "{}/{label}/{}.jpg",
        super::folder(name),
        key.replace('/', ".")
    )
}

/// Places the files of a pair's samples that are new or changed and
/// removes those it no longer has: (placed, removed).
pub fn apply(
    state: &State,
    out: &OutputDir,
    old: &[SampleRow],
    new: &[SampleRow],
) -> Result<(u64, u64), Error> {
    let before: HashMap<Item, &SampleRow> = old.iter().map(|r| (r.item, r)).collect();
    let now: HashMap<&str, ()> = new
        .iter()
        .filter_map(|r| r.path.as_deref())
        .map(|p| (p, ()))
        .collect();
    let (mut placed, mut removed) = (0, 0);
    for r in new {
        let unchanged = before
            .get(&r.item)
            .is_some_and(|o| o.digest == r.digest && o.path == r.path);
        let Some(to) = r.path.as_deref() else {
            continue;
        };
        if unchanged {
            continue;
        }
        let facts = match r.item {
            Item::Output(id) => state.output_facts_by_id(id)?,
            Item::Tile { unit, x, y } => state.tile_facts_at(unit, x, y, &facts::tile_name)?,
        };
        let Some(f) = facts else { continue };
        place(out, &f.path(), to, &f.file.content_hash)?;
        placed += 1;
    }
    for o in old {
        if let Some(p) = o.path.as_deref().filter(|p| !now.contains_key(p)) {
            out.remove(p)?;
            removed += 1;
        }
    }
    Ok((placed, removed))
}

/// Links (or copies) output `from` to `to`, its bytes checked first.
fn place(out: &OutputDir, from: &str, to: &str, blake3: &str) -> Result<(), Error> {
    let mut file = out.open_read(from)?;
    let bytes = OutputDir::read_all(&mut file)?;
    let found = blake3::hash(&bytes).to_hex();
    if found.as_str() != blake3 {
        return Err(Error::Other(format!(
            "{from}: its bytes (blake3 {found}) are not the ones recorded ({blake3}): it changed since it was built; \
             `cpia build --check-outputs` rebuilds it"
        )));
    }
    if !out.link_file(&file, to)? {
        out.write(to, &bytes)?;
    }
    Ok(())
}
