//! Schema versions: what this cpia does with a state database written by
//! another one.
//!
//! | the state's `user_version` | read-write open (`build`, `plan`, `watch`, `demo`) | read-only open (`why`, `log`, `query`, `lineage`, `verify`, `status`, `list`, `report`) |
//! |---|---|---|
//! | 0 (a new file) | the schema is created | "nothing has been built" |
//! | [`SCHEMA_VERSION`] | used as it is | used as it is |
//! | [`OLDEST_MIGRATABLE`] ..< [`SCHEMA_VERSION`] | migrated in one transaction ([`MIGRATIONS`]; all or nothing) | refused, naming both versions: "`cpia build` migrates it" |
//! | 1 ..< [`OLDEST_MIGRATABLE`] | set aside as `state.sqlite.schema-N.bak` (never deleted) and a new state started; said | refused, naming both versions |
//! | > [`SCHEMA_VERSION`] (a newer cpia) | **refused, unchanged** (exit 2), naming both versions | **refused, unchanged** |
//!
//! Why a newer state is never touched: one old binary on one cluster node
//! must not destroy the provenance record every other node relies on.
//! Why read-only commands never migrate: they may run on a read-only
//! workspace, or beside a build of another version.
//!
//! Every change to a table, index, view or trigger bumps [`SCHEMA_VERSION`]
//! and appends a step to [`MIGRATIONS`] (additive changes are steps too, so
//! a read-only open never meets a state without the objects it queries).

use super::schema::{EXPORT_SCHEMA, SCHEMA_VERSION};

/// The oldest schema a migration path starts from. Older states (schemas 1
/// and 2, from before the state recorded folders by id) cannot be mapped
/// onto this one: they are set aside.
pub const OLDEST_MIGRATABLE: i64 = 3;

/// One step of migration: from `from` to `from + 1`.
pub struct Migration {
    /// The version this step starts from.
    pub from: i64,
    /// What it changes, for the note a build prints.
    pub what: &'static str,
    /// The statements (run in the open transaction of the migration).
    pub sql: &'static str,
}

/// The steps from [`OLDEST_MIGRATABLE`] to [`SCHEMA_VERSION`], in order:
/// `MIGRATIONS[k].from == OLDEST_MIGRATABLE + k` (checked by a test).
pub const MIGRATIONS: &[Migration] = &[Migration {
    from: 3,
    what: "the exports' tables and triggers (export/)",
    sql: EXPORT_SCHEMA,
}];

/// What opening a state of `version` means for this cpia.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compat {
    /// A new, empty file: the schema is to be created.
    Empty,
    /// This cpia's schema.
    Current,
    /// An older schema with a migration path.
    Migrate { from: i64 },
    /// An older schema without one: to be set aside.
    SetAside { from: i64 },
    /// A schema written by a newer cpia (or not cpia's): never changed.
    Newer { found: i64 },
}

/// Classifies a state's `user_version`.
pub fn compat(version: i64) -> Compat {
    match version {
        0 => Compat::Empty,
        v if v == SCHEMA_VERSION => Compat::Current,
        v if !(0..=SCHEMA_VERSION).contains(&v) => Compat::Newer { found: v },
        v if v >= OLDEST_MIGRATABLE => Compat::Migrate { from: v },
        v => Compat::SetAside { from: v },
    }
}

/// The migration steps from `from` up to [`SCHEMA_VERSION`].
pub fn steps_from(from: i64) -> &'static [Migration] {
    let skip = (from - OLDEST_MIGRATABLE).max(0) as usize;
    MIGRATIONS.get(skip..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_chain_from_the_oldest_to_the_current_schema() {
        for (k, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.from, OLDEST_MIGRATABLE + k as i64, "{}", m.what);
        }
        assert_eq!(
            OLDEST_MIGRATABLE + MIGRATIONS.len() as i64,
            SCHEMA_VERSION,
            "SCHEMA_VERSION was bumped without a step in MIGRATIONS (or the other way round)"
        );
    }

    #[test]
    fn every_version_has_one_meaning() {
        assert_eq!(compat(0), Compat::Empty);
        assert_eq!(compat(SCHEMA_VERSION), Compat::Current);
        assert_eq!(
            compat(SCHEMA_VERSION + 1),
            Compat::Newer {
                found: SCHEMA_VERSION + 1
            }
        );
        assert_eq!(compat(-7), Compat::Newer { found: -7 });
        assert_eq!(compat(1), Compat::SetAside { from: 1 });
        assert_eq!(steps_from(SCHEMA_VERSION).len(), 0);
        assert_eq!(
            steps_from(OLDEST_MIGRATABLE).len(),
            (SCHEMA_VERSION - OLDEST_MIGRATABLE) as usize
        );
    }
}
