//! Opening the build state for a command, and which workspace it is.
//!
//! Writing commands (`build`, `plan`, `watch`, `demo`, the Slurm merge job)
//! open it with [`State::open`]: an older state is migrated or set aside
//! (said here), a newer one refused unchanged. Reading commands open it
//! with [`State::open_read_only`], which never writes it.
//!
//! A state records the workspace it belongs to (`meta.workspace`, its
//! folder resolved). Two workspaces whose `cache` is one folder would each
//! rebuild what the other built and report the other's files as damaged:
//! a state that is still the cache of the workspace it records is refused
//! by every other workspace (exit 2, naming both). A state whose workspace
//! is gone or now uses another cache (a workspace moved or copied) is
//! taken over by a writing command, and said.

use std::path::{Path, PathBuf};

use crate::store::{Opened, State};
use crate::workspace::Workspace;

/// The `meta` key of the workspace a state belongs to.
const META_WORKSPACE: &str = "workspace";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Opens the state for a command that writes it; says what opening did.
pub(super) fn for_writing(ws: &Workspace) -> Result<State> {
    let path = ws.state_path();
    let mut state = State::open(&path)?;
    match state.opened() {
        Opened::Migrated { from } => eprintln!(
            "note: build state {} migrated from schema {from} to {}",
            path.display(),
            crate::store::schema::SCHEMA_VERSION
        ),
        Opened::SetAside { from, backup } => eprintln!(
            "note: build state {} had schema {from}, which this cpia cannot migrate: it was moved to {} \
             and a new state started (every output is rebuilt once; files the old state recorded are not removed)",
            path.display(),
            backup.display()
        ),
        Opened::Existing | Opened::Created => {}
    }
    let me = root_of(ws);
    match owner(ws, &state)? {
        Owner::This => {}
        Owner::Shared(other) => return Err(shared(ws, &other).into()),
        Owner::Nobody => state.set_meta(META_WORKSPACE, &me)?,
        Owner::Left(other) => {
            eprintln!(
                "note: build state {} belonged to the workspace {}, which no longer uses it; it is this workspace's now",
                path.display(),
                other.display()
            );
            state.set_meta(META_WORKSPACE, &me)?;
        }
    }
    Ok(state)
}

/// Opens the state for a command that only reads it; an error (exit 2)
/// when there is none yet, rather than creating an empty one.
pub(super) fn read_only(ws: &Workspace) -> Result<State> {
    let path = ws.state_path();
    let Some(state) = State::open_read_only(&path)? else {
        return Err(format!(
            "no build state at {}: nothing has been built in this workspace yet (`cpia build`)",
            path.display()
        )
        .into());
    };
    refuse_shared(ws, &state)?;
    Ok(state)
}

/// The ownership check of [`read_only`], for commands that open the state
/// elsewhere (`status`, `list`, `report`): nothing when there is no state.
pub(super) fn check_read_only(ws: &Workspace) -> Result<()> {
    match State::open_read_only(&ws.state_path())? {
        Some(state) => refuse_shared(ws, &state),
        None => Ok(()),
    }
}

/// A read-only command's check: a state that cannot even say whose it is
/// (damaged) is left to the command (`verify --state` examines it).
fn refuse_shared(ws: &Workspace, state: &State) -> Result<()> {
    match owner(ws, state) {
        Ok(Owner::Shared(other)) => Err(shared(ws, &other).into()),
        _ => Ok(()),
    }
}

/// Whose a state is, seen from workspace `ws`.
enum Owner {
    /// This workspace's.
    This,
    /// Nobody's yet (a new state, or one from before states recorded it).
    Nobody,
    /// Another workspace's, which no longer exists or uses another cache.
    Left(PathBuf),
    /// Another workspace's, whose cache it still is.
    Shared(PathBuf),
}

fn owner(ws: &Workspace, state: &State) -> Result<Owner> {
    let Some(recorded) = state.meta(META_WORKSPACE)? else {
        return Ok(Owner::Nobody);
    };
    if recorded == root_of(ws) {
        return Ok(Owner::This);
    }
    let other = PathBuf::from(&recorded);
    let still_its =
        Workspace::open(&other).is_ok_and(|o| same_file(&o.state_path(), &ws.state_path()));
    Ok(if still_its {
        Owner::Shared(other)
    } else {
        Owner::Left(other)
    })
}

/// The workspace folder as a state records it (resolved).
fn root_of(ws: &Workspace) -> String {
    ws.root
        .canonicalize()
        .unwrap_or_else(|_| ws.root.clone())
        .to_string_lossy()
        .into_owned()
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn shared(ws: &Workspace, other: &Path) -> String {
    format!(
        "the build state {} belongs to the workspace {}, whose cache folder it still is: two workspaces \
         cannot share one cache (each would rebuild the other's outputs and report its files as damaged); \
         nothing was changed. Give this workspace its own `cache` in {}",
        ws.state_path().display(),
        other.display(),
        ws.root.join(crate::workspace::CONFIG_FILE).display()
    )
}
