//! Cluster builds in flight: plans submitted as Slurm job arrays whose
//! journals are not merged yet (`submitted`), and what a task left undone.
//!
//! A plan stays here from just before its array is submitted until its
//! journals are merged, whoever merges them (the waiting coordinator, the
//! dependent merge job, or the next `cpia` invocation after a coordinator
//! was killed). Closing it deletes its row and its journals' cursors in one
//! transaction: its journals are never read again, so an old journal cannot
//! put old rows back after a newer build.

use std::path::Path;

use rusqlite::{params, OptionalExtension};

use super::{State, StateError};

/// A submitted plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// The plan's id: its folder under `cache/plans/` and `cache/journal/`.
    pub plan: String,
    /// The build (row of `builds`) its records belong to.
    pub build: i64,
    /// The job array, once `sbatch` answered.
    pub job: Option<u64>,
    /// The dependent merge job, when the coordinator did not wait.
    pub merge_job: Option<u64>,
    /// Array tasks (shards).
    pub tasks: u32,
    /// When it was submitted (seconds since the epoch).
    pub at: i64,
}

impl State {
    /// Every plan submitted and not merged yet, oldest first.
    pub fn submitted(&self) -> Result<Vec<Submitted>, StateError> {
        self.rows(
            "SELECT plan, build, job, merge_job, tasks, at FROM submitted ORDER BY at, plan",
            [],
            |r| {
                Ok(Submitted {
                    plan: r.get(0)?,
                    build: r.get(1)?,
                    job: r.get::<_, Option<i64>>(2)?.map(|j| j as u64),
                    merge_job: r.get::<_, Option<i64>>(3)?.map(|j| j as u64),
                    tasks: r.get(4)?,
                    at: r.get(5)?,
                })
            },
            "reading submitted plans",
        )
    }

    /// The submitted plan `plan`, if it is not merged yet.
    pub fn submitted_plan(&self, plan: &str) -> Result<Option<Submitted>, StateError> {
        Ok(self.submitted()?.into_iter().find(|s| s.plan == plan))
    }

    /// Registers a plan about to be submitted.
    pub fn add_submitted(&mut self, s: &Submitted) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO submitted (plan, build, job, merge_job, tasks, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.plan,
                    s.build,
                    s.job.map(|j| j as i64),
                    s.merge_job.map(|j| j as i64),
                    s.tasks,
                    s.at
                ],
            )
            .map_err(self.err("registering a submitted plan"))?;
        Ok(())
    }

    /// Notes the job ids Slurm gave a plan's array and merge job.
    pub fn set_submitted_jobs(
        &mut self,
        plan: &str,
        job: u64,
        merge_job: Option<u64>,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE submitted SET job = ?2, merge_job = coalesce(?3, merge_job) WHERE plan = ?1",
                params![plan, job as i64, merge_job.map(|j| j as i64)],
            )
            .map_err(self.err("recording a submitted job"))?;
        Ok(())
    }

    /// Closes a merged plan: its row, and the cursors of the journals under
    /// `journals` (its journal folder), go in one transaction.
    pub fn close_submitted(&mut self, plan: &str, journals: &Path) -> Result<(), StateError> {
        let prefix = dir_prefix(journals);
        self.transaction("closing a merged plan", |tx| {
            tx.execute("DELETE FROM submitted WHERE plan = ?1", [plan])?;
            tx.execute(
                "DELETE FROM journal_cursors WHERE substr(path, 1, length(?1)) = ?1",
                [&prefix],
            )?;
            Ok(())
        })
    }

    /// Whether any journal under `journals` (a plan's journal folder) has
    /// been merged from, by any process.
    pub fn merge_started(&self, journals: &Path) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM journal_cursors WHERE substr(path, 1, length(?1)) = ?1)",
                [dir_prefix(journals)],
                |r| r.get(0),
            )
            .map_err(self.err("reading journal cursors"))
    }

    /// Of `inputs`, those neither complete nor failed: work a task was given
    /// and never reported (it was killed, cancelled, or timed out first).
    pub fn unfinished_inputs(&self, inputs: &[i64]) -> Result<Vec<i64>, StateError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT i.fp IS NULL AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.input = i.id)
                   FROM inputs i WHERE i.id = ?1",
            )
            .map_err(self.err("reading inputs"))?;
        let mut out = Vec::new();
        for &id in inputs {
            let open: Option<bool> = stmt
                .query_row([id], |r| r.get(0))
                .optional()
                .map_err(self.err("reading inputs"))?;
            // An input whose row is gone was removed since: nothing to do.
            if open == Some(true) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

/// `dir` as the prefix of the paths inside it.
fn dir_prefix(dir: &Path) -> String {
    let mut prefix = dir.to_string_lossy().into_owned();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal::{JournalId, CURSOR_SCHEMA};
    use crate::store::schema::SCHEMA;

    #[test]
    fn the_schema_has_the_journal_cursor_table_word_for_word() {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(norm(SCHEMA).contains(&norm(CURSOR_SCHEMA)));
    }

    #[test]
    fn a_closed_plan_forgets_its_row_and_its_journals_cursors_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("state.sqlite")).unwrap();
        let plan = |p: &str, at| Submitted {
            plan: p.into(),
            build: 1,
            job: None,
            merge_job: None,
            tasks: 4,
            at,
        };
        s.add_submitted(&plan("a", 1)).unwrap();
        s.add_submitted(&plan("b", 2)).unwrap();
        s.set_submitted_jobs("a", 77, Some(78)).unwrap();
        let open = s.submitted().unwrap();
        assert_eq!(open.len(), 2);
        assert_eq!((open[0].job, open[0].merge_job), (Some(77), Some(78)));
        let j = dir.path().join("cache/journal");
        let id = |b: u8| JournalId([b; 16]);
        s.record_merged(&[], id(1), &j.join("a/task-0-0.journal"), 100)
            .unwrap();
        s.record_merged(&[], id(2), &j.join("ab/task-0-0.journal"), 200)
            .unwrap();
        s.record_merged(&[], id(3), &j.join("b/task-0-0.journal"), 300)
            .unwrap();
        assert!(s.merge_started(&j.join("a")).unwrap());
        s.close_submitted("a", &j.join("a")).unwrap();
        assert!(!s.merge_started(&j.join("a")).unwrap());
        assert!(s.merge_started(&j.join("ab")).unwrap());
        let c = s.merge_cursor().unwrap();
        assert_eq!(
            (c.get(id(1)), c.get(id(2)), c.get(id(3))),
            (None, Some(200), Some(300))
        );
        assert_eq!(s.submitted().unwrap().len(), 1);
        assert!(s.submitted_plan("a").unwrap().is_none());
    }
}
