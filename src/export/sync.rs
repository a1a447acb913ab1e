//! A workspace's exports brought up to date together: what `cpia build`
//! does after its images and `cpia export` does alone. Every declared
//! export (`[export.NAME]`) is updated; a recorded export that was declared
//! and no longer is has its files removed (through the confined writer:
//! nothing outside `export/<name>/`, no link followed) and is forgotten;
//! exports made with `cpia export --format` are left as they are unless
//! named.

use std::collections::HashMap;
use std::sync::Arc;

use super::definition::{self, Definition};
use super::update::{self, Options, Outcome};
use super::Error;
use crate::engine::atomic::OutputDir;
use crate::recipe::CollectionMeta;
use crate::store::State;
use crate::workspace::{Workspace, CONFIG_FILE};

/// What happened to one export.
#[derive(Debug)]
pub enum Done {
    Updated(Outcome),
    /// Its definition is gone from `cpia.toml`: (name, shards, other files) removed.
    Removed(String, u64, u64),
    Failed(String, Error),
}

/// The collections' metadata of the workspace's recipes, by name.
pub fn collection_meta(ws: &Workspace) -> HashMap<String, Arc<CollectionMeta>> {
    crate::report::collections::collections(ws)
        .list
        .into_iter()
        .map(|c| (c.meta.name.clone(), Arc::new(c.meta)))
        .collect()
}

/// The declared definitions of `ws`, checked.
pub fn declared(ws: &Workspace) -> Result<Vec<Definition>, Error> {
    definition::declared(
        &ws.exports,
        &ws.root.join(CONFIG_FILE).display().to_string(),
    )
}

/// The definition of export `name`: declared, else the recorded one of an
/// export made on the command line.
pub fn named(ws: &Workspace, state: &State, name: &str) -> Result<Definition, Error> {
    if let Some(d) = declared(ws)?.into_iter().find(|d| d.name == name) {
        return Ok(d);
    }
    match state.export(name)? {
        Some(row) => Definition::from_canonical(&row.definition, false),
        None => Err(Error::Definition(format!(
            "no export named {name}: declare it as [export.{name}] in {CONFIG_FILE}, or make one with `cpia export --format F --name {name}`"
        ))),
    }
}

/// Updates every declared export and removes the declared ones that
/// vanished; one [`Done`] per export. A bad definition is one failure;
/// the others go on.
pub fn all_declared(
    ws: &Workspace,
    state: &mut State,
    out: &OutputDir,
    opts: &Options,
) -> Result<Vec<Done>, Error> {
    let defs = match declared(ws) {
        Ok(d) => d,
        Err(e) => return Ok(vec![Done::Failed(CONFIG_FILE.into(), e)]),
    };
    let meta = collection_meta(ws);
    let mut done = Vec::new();
    for row in state.exports()? {
        if row.declared && !defs.iter().any(|d| d.name == row.name) {
            match update::remove(state, out, &row) {
                Ok((s, f)) => done.push(Done::Removed(row.name.clone(), s, f)),
                Err(e) => done.push(Done::Failed(row.name.clone(), e)),
            }
        }
    }
    for d in &defs {
        done.push(one(state, out, d, &meta, opts));
    }
    Ok(done)
}

/// Updates one export.
pub fn one(
    state: &mut State,
    out: &OutputDir,
    def: &Definition,
    meta: &HashMap<String, Arc<CollectionMeta>>,
    opts: &Options,
) -> Done {
    match update::update(state, out, def, meta, opts) {
        Ok(o) => Done::Updated(o),
        Err(e) => Done::Failed(def.name.clone(), e),
    }
}

/// One line per export for the user.
pub fn describe(d: &Done) -> String {
    match d {
        Done::Updated(o) => {
            let what = if o.format == "imagefolder" {
                format!(
                    "{} file(s) placed, {} removed",
                    o.files_placed, o.files_removed
                )
            } else {
                format!(
                    "{} of {} shard(s) written, {} removed",
                    o.shards_written, o.shards, o.shards_removed
                )
            };
            format!(
                "export {} ({}): {} sample(s); {what}{}",
                o.name,
                o.format,
                o.samples,
                if o.created {
                    " (new)"
                } else if o.whole {
                    " (re-evaluated whole)"
                } else {
                    ""
                }
            )
        }
        Done::Removed(n, s, f) => format!(
            "export {n}: no longer in {CONFIG_FILE}: removed ({s} shard(s), {f} other file(s))"
        ),
        Done::Failed(n, e) => format!("export {n}: {e}"),
    }
}
