//! A task's results as journal records, and the [`Recorder`] that appends
//! them (`JournalRecorder`).
//!
//! One record per job result: its events ([`crate::store::journal::codec`])
//! and what the summary counts of it, so the merge gives the same summary as
//! a local build. Layout (kind 1):
//!
//! ```text
//! kind u8 = 1 | events: n, n × event | built, removed, failed, skipped
//! | failure: 0 or 1, input, error | incomplete: 0 or 1, input id
//! | dirty folders: n, n × text
//! ```

use std::collections::HashMap;

use crate::engine::record::Decisions;
use crate::engine::record::{JobResult, Recorder};
use crate::engine::summary::Failure;
use crate::engine::EngineError;
use crate::store::journal::codec::{Dec, DecodeError, Enc};
use crate::store::journal::JournalWriter;
use crate::store::Event;

/// The kind byte of a job result record.
const RESULT: u8 = 1;

/// Appends `r` as one record's payload to `e`.
pub fn encode_result(e: &mut Enc, r: &JobResult) {
    e.u8(RESULT);
    e.u64(r.events.len() as u64);
    for ev in &r.events {
        e.event(ev);
    }
    for n in [r.built, r.removed, r.failed, r.skipped] {
        e.u64(n);
    }
    match &r.failure {
        None => e.u8(0),
        Some(f) => {
            e.u8(1);
            e.str(&f.input);
            e.str(&f.error);
        }
    }
    match r.incomplete {
        None => e.u8(0),
        Some(id) => {
            e.u8(1);
            e.i64(id);
        }
    }
    e.u64(r.dirty_dirs.len() as u64);
    for d in &r.dirty_dirs {
        e.str(d);
    }
}

/// A record's payload back as a job result.
pub fn decode_result(payload: &[u8]) -> Result<JobResult, DecodeError> {
    let mut d = Dec::new(payload);
    if d.u8()? != RESULT {
        return Err(DecodeError {
            at: 0,
            what: "not a job result record",
        });
    }
    let n = d.len(2)?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(d.event()?);
    }
    let mut r = JobResult {
        events,
        built: d.u64()?,
        removed: d.u64()?,
        failed: d.u64()?,
        skipped: d.u64()?,
        ..JobResult::default()
    };
    if d.bool()? {
        r.failure = Some(Failure {
            input: d.str()?,
            error: d.str()?,
        });
    }
    if d.bool()? {
        r.incomplete = Some(d.i64()?);
    }
    let n = d.len(1)?;
    for _ in 0..n {
        r.dirty_dirs.push(d.str()?);
    }
    if !d.is_empty() {
        return Err(DecodeError {
            at: payload.len(),
            what: "bytes after the record's end",
        });
    }
    Ok(r)
}

/// Records a task's results in its journal: each batch appended, then
/// synced (the engine hands over results only once their files and folders
/// are durable, so the order place → sync → append → sync holds).
pub struct JournalRecorder {
    writer: JournalWriter,
    enc: Enc,
    /// Decisions of the slides whose QC picture this task draws: recorded
    /// before the build (from the plan), updated by this task's own units.
    decisions: HashMap<i64, Decisions>,
}

impl JournalRecorder {
    /// Records into `writer`.
    pub fn new(writer: JournalWriter) -> JournalRecorder {
        JournalRecorder {
            writer,
            enc: Enc::new(),
            decisions: HashMap::new(),
        }
    }

    /// The decisions recorded for `input` before this build (its QC picture
    /// is drawn by this task).
    pub fn seed_decisions(&mut self, input: i64, decisions: Decisions) {
        self.decisions.insert(input, decisions);
    }

    /// The journal.
    pub fn writer(&self) -> &JournalWriter {
        &self.writer
    }
}

impl Recorder for JournalRecorder {
    fn record(&mut self, results: &mut [JobResult]) -> Result<(), EngineError> {
        let fail = |e: std::io::Error| EngineError(format!("writing the task's journal: {e}"));
        for r in results.iter() {
            for ev in &r.events {
                if let Event::Unit(u) = ev {
                    if let (Some(kept), Some(d)) = (u.kept, self.decisions.get_mut(&u.input)) {
                        d.insert(u.cell, kept);
                    }
                }
            }
            self.enc.buf.clear();
            encode_result(&mut self.enc, r);
            self.writer.append(&self.enc.buf).map_err(fail)?;
        }
        self.writer.sync().map_err(fail)
    }

    fn decisions(&mut self, input: i64) -> Result<Decisions, EngineError> {
        Ok(self.decisions.get(&input).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal::{merge, Cursor};
    use crate::store::{FailureRecord, Maker, ReadFacts, UnitRecord};

    fn unit(input: i64, cell: (u32, u32), kept: Option<bool>) -> Event {
        Event::Unit(Box::new(UnitRecord {
            input,
            sink: "write_M".into(),
            cell,
            dir: "M/W-384".into(),
            size: 384,
            pipeline_hash: "p".into(),
            read: ReadFacts {
                source_hash: "s".into(),
                read_size: 3840,
                mpp: 0.5,
                mpp_origin: "openslide".into(),
                reader: "direct".into(),
            },
            encoding: "pixels".into(),
            maker: Maker {
                recipe_hash: "r".into(),
                tool_version: "t".into(),
                libraries: "l".into(),
            },
            kept,
            complete: true,
            tiles: vec![],
            removed_tiles: vec![],
            built_at: 1,
            build: 2,
        }))
    }

    #[test]
    fn results_round_trip_through_a_journal_and_update_the_tasks_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let w = JournalWriter::create(dir.path(), "task-0").unwrap();
        let mut rec = JournalRecorder::new(w);
        rec.seed_decisions(7, HashMap::from([((0, 0), true), ((1, 0), true)]));
        let mut results = vec![
            JobResult {
                events: vec![unit(7, (1, 0), Some(false)), unit(8, (0, 0), Some(true))],
                built: 3,
                removed: 1,
                dirty_dirs: vec!["M/W-384".into()],
                ..JobResult::default()
            },
            JobResult {
                events: vec![Event::Failed(FailureRecord {
                    input: 9,
                    unit: String::new(),
                    source_hash: None,
                    error: "bad".into(),
                    at: 5,
                })],
                failed: 2,
                skipped: 4,
                failure: Some(Failure {
                    input: "/src/x.png".into(),
                    error: "bad".into(),
                }),
                incomplete: Some(9),
                ..JobResult::default()
            },
        ];
        let expected = results.clone();
        rec.record(&mut results).unwrap();
        // The task's own unit replaced the seeded decision; other slides'
        // units are not tracked.
        assert_eq!(
            rec.decisions(7).unwrap(),
            HashMap::from([((0, 0), true), ((1, 0), false)])
        );
        assert!(rec.decisions(8).unwrap().is_empty());
        let mut got = Vec::new();
        let report = merge(
            dir.path(),
            &mut Cursor::default(),
            10,
            |b| decode_result(b).map_err(|e| e.to_string()),
            |b| {
                got.extend(b.records);
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(got, expected);
    }

    #[test]
    fn a_record_of_another_kind_or_with_trailing_bytes_is_refused() {
        let mut e = Enc::new();
        encode_result(&mut e, &JobResult::default());
        assert!(decode_result(&e.buf).is_ok());
        let mut longer = e.buf.clone();
        longer.push(0);
        assert!(decode_result(&longer).is_err());
        let mut other = e.buf.clone();
        other[0] = 2;
        assert!(decode_result(&other).is_err());
        assert!(decode_result(&[]).is_err());
    }
}
