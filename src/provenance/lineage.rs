//! `cpia lineage --format prov-json`: the W3C PROV-JSON document of the
//! recorded dataset, written as a stream.
//!
//! Entities: every output (`out:`), every source file version it was made
//! from (`src:`), every recipe version (`recipe:`, with its canonical text).
//! Activities: every build (`build:`) and, per output, the run of its steps
//! that made it (`run:`). Agents: cpia, per version (`agent:`). Relations:
//! `used` (run → source, run → recipe), `wasGeneratedBy` (output → run),
//! `wasDerivedFrom` (output → source), `wasAssociatedWith` (run, build →
//! cpia), `wasInformedBy` (run → its build).
//!
//! PROV-JSON groups records by kind, so the outputs are streamed from the
//! state once per kind of record that names them (seven cursors); memory
//! holds the small sets of builds, recipe versions and tool versions.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::{json, Map, Value};

use super::facts::{self, Pipelines};
use super::Error;
use crate::store::audit::{OutputFacts, OutputFilter};
use crate::store::State;

const PREFIXES: &[(&str, &str)] = &[
    ("cpia", "https://cpia.invalid/ns#"),
    ("out", "https://cpia.invalid/output/"),
    ("src", "https://cpia.invalid/source/"),
    ("recipe", "https://cpia.invalid/recipe/"),
    ("build", "https://cpia.invalid/build/"),
    ("run", "https://cpia.invalid/run/"),
    ("agent", "https://cpia.invalid/agent/"),
];

/// Percent-encodes what a PROV qualified name's local part cannot hold.
fn local(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"_-./".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn out_id(f: &OutputFacts) -> String {
    format!("out:{}", local(&f.path()))
}
fn run_id(f: &OutputFacts) -> String {
    format!("run:{}", local(&f.path()))
}
fn src_id(root: &str, rel: &str, hash: &str) -> String {
    format!(
        "src:{}/{}/{}",
        local(root),
        local(rel),
        &hash[..16.min(hash.len())]
    )
}
fn agent_id(tool: &str) -> String {
    format!("agent:{}", local(&tool.replace(' ', "-")))
}

/// A JSON object section written member by member.
struct Section<'w> {
    out: &'w mut dyn Write,
    first: bool,
}

impl<'w> Section<'w> {
    fn open(out: &'w mut dyn Write, name: &str, first_section: bool) -> std::io::Result<Self> {
        write!(
            out,
            "{}\n  {}: {{",
            if first_section { "" } else { "," },
            json!(name)
        )?;
        Ok(Section { out, first: true })
    }
    fn member(&mut self, id: &str, v: &Value) -> std::io::Result<()> {
        let sep = if self.first { "" } else { "," };
        self.first = false;
        write!(self.out, "{sep}\n    {}: {v}", json!(id))
    }
    fn close(self) -> std::io::Result<()> {
        write!(self.out, "\n  }}")
    }
}

/// Writes the PROV-JSON document of the outputs of `collections` (all when
/// empty) to `out`; returns the number of outputs.
pub fn write_prov_json(
    state: &State,
    collections: &[String],
    out: &mut dyn Write,
) -> Result<u64, Error> {
    let filter = OutputFilter {
        collections: collections.to_vec(),
        ..OutputFilter::default()
    };
    let each = |f: &mut dyn FnMut(OutputFacts) -> Result<(), Error>| -> Result<(), Error> {
        let mut err = None;
        state.for_each_output(
            &filter,
            &facts::tile_name,
            &mut super::stop_at_error(&mut err, f),
        )?;
        err.map_or(Ok(()), Err)
    };
    write!(out, "{{")?;
    let prefix: Map<String, Value> = PREFIXES
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    write!(out, "\n  \"prefix\": {}", Value::Object(prefix))?;

    // Entities: outputs, then the source versions and recipe versions.
    let mut recipes = BTreeSet::new();
    let mut builds = BTreeSet::new();
    let mut tools = BTreeSet::new();
    let mut n = 0u64;
    let mut pipelines = Pipelines::default();
    {
        let mut s = Section::open(out, "entity", false)?;
        each(&mut |f| {
            n += 1;
            recipes.insert(f.maker.recipe_hash.clone());
            builds.insert(f.build);
            tools.insert(f.maker.tool_version.clone());
            let (scale, sub) = facts::scale_and_sub(&f.dir);
            let mut v = json!({
                "prov:type": "cpia:Output",
                "prov:label": f.path(),
                "cpia:blake3": f.file.content_hash,
                "cpia:bytes": f.file.size,
                "cpia:key": facts::key(&f),
                "cpia:collection": f.collection,
                "cpia:scale": scale,
                "cpia:subDataset": sub,
            });
            if let Some(c) = &f.class {
                v["cpia:class"] = json!(c);
            }
            if let Some(r) = &f.read {
                v["cpia:mpp"] = json!(r.mpp);
                v["cpia:mppSource"] = json!(r.mpp_origin);
            }
            if f.tile.is_some() {
                if let Some(p) = pipelines.get(state, &f.pipeline_hash)? {
                    if let Some(place) = facts::placement(&f, &p, None) {
                        v["cpia:region"] = json!(format!("{:?}", place.region));
                    }
                }
            }
            s.member(&out_id(&f), &v)?;
            Ok(())
        })?;
        let mut err: Option<Error> = None;
        state.for_each_source_version(collections, &mut |root, rel, hash| {
            let v = json!({
                "prov:type": "cpia:SourceFile",
                "prov:label": format!("{root}:{rel}"),
                "cpia:root": root,
                "cpia:path": rel,
                "cpia:blake3": hash,
            });
            match s.member(&src_id(root, rel, &hash), &v) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(e) => {
                    err = Some(e.into());
                    std::ops::ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        for h in &recipes {
            let mut v = json!({"prov:type": "cpia:Recipe", "cpia:hash": h});
            if let Some(r) = state.recipe_version(h)? {
                v["prov:label"] = json!(r.collection);
                v["cpia:canonical"] = json!(r.canonical);
                let files: Vec<String> = r.files.iter().map(|(f, _)| f.path.clone()).collect();
                v["cpia:files"] = json!(files.join(" "));
            }
            s.member(&format!("recipe:{h}"), &v)?;
        }
        s.close()?;
    }

    // Activities: builds, and the run of steps that made each output.
    {
        let mut s = Section::open(out, "activity", false)?;
        for &b in &builds {
            let mut v = json!({"prov:type": "cpia:Build"});
            if let Some(row) = state.build_row(b)? {
                v["prov:startTime"] = json!(super::log::utc(row.started));
                if let Some(end) = row.finished {
                    v["prov:endTime"] = json!(super::log::utc(end));
                }
                v["cpia:command"] = json!(row.command);
                tools.insert(row.tool_version);
            }
            s.member(&format!("build:{b}"), &v)?;
        }
        each(&mut |f| {
            let v = json!({
                "prov:type": "cpia:StepRun",
                "cpia:step": f.sink,
                "cpia:pipeline": f.pipeline_hash,
                "cpia:build": f.build,
            });
            s.member(&run_id(&f), &v)?;
            Ok(())
        })?;
        s.close()?;
    }
    {
        let mut s = Section::open(out, "agent", false)?;
        for t in &tools {
            s.member(
                &agent_id(t),
                &json!({"prov:type": "prov:SoftwareAgent", "prov:label": t}),
            )?;
        }
        s.close()?;
    }

    // Relations, one kind per section.
    let mut k = 0u64;
    let mut next = || {
        k += 1;
        format!("_:r{k}")
    };
    {
        let mut s = Section::open(out, "used", false)?;
        each(&mut |f| {
            let run = run_id(&f);
            s.member(
                &next(),
                &json!({"prov:activity": run, "prov:entity": src_id(&f.source_root, &f.source_rel, &f.source_hash)}),
            )?;
            s.member(
                &next(),
                &json!({"prov:activity": run, "prov:entity": format!("recipe:{}", f.maker.recipe_hash)}),
            )?;
            Ok(())
        })?;
        s.close()?;
    }
    {
        let mut s = Section::open(out, "wasGeneratedBy", false)?;
        each(&mut |f| {
            s.member(
                &next(),
                &json!({"prov:entity": out_id(&f), "prov:activity": run_id(&f), "prov:time": super::log::utc(f.built_at)}),
            )?;
            Ok(())
        })?;
        s.close()?;
    }
    {
        let mut s = Section::open(out, "wasDerivedFrom", false)?;
        each(&mut |f| {
            s.member(
                &next(),
                &json!({"prov:generatedEntity": out_id(&f), "prov:usedEntity": src_id(&f.source_root, &f.source_rel, &f.source_hash), "prov:activity": run_id(&f)}),
            )?;
            Ok(())
        })?;
        s.close()?;
    }
    {
        let mut s = Section::open(out, "wasAssociatedWith", false)?;
        let tool_of_build = |b: i64| -> Result<Option<String>, Error> {
            Ok(state.build_row(b)?.map(|r| r.tool_version))
        };
        for &b in &builds {
            if let Some(t) = tool_of_build(b)? {
                s.member(
                    &next(),
                    &json!({"prov:activity": format!("build:{b}"), "prov:agent": agent_id(&t)}),
                )?;
            }
        }
        each(&mut |f| {
            s.member(
                &next(),
                &json!({"prov:activity": run_id(&f), "prov:agent": agent_id(&f.maker.tool_version)}),
            )?;
            Ok(())
        })?;
        s.close()?;
    }
    {
        let mut s = Section::open(out, "wasInformedBy", false)?;
        each(&mut |f| {
            s.member(
                &next(),
                &json!({"prov:informed": run_id(&f), "prov:informant": format!("build:{}", f.build)}),
            )?;
            Ok(())
        })?;
        s.close()?;
    }
    writeln!(out, "\n}}")?;
    Ok(n)
}
