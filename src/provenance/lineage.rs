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

use std::cell::Cell;
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
    let mut doc = Doc {
        state,
        collections,
        filter: OutputFilter {
            collections: collections.to_vec(),
            ..OutputFilter::default()
        },
        recipes: BTreeSet::new(),
        builds: BTreeSet::new(),
        tools: BTreeSet::new(),
        relations: Cell::new(0),
    };
    write!(out, "{{")?;
    let prefix: Map<String, Value> = PREFIXES
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    write!(out, "\n  \"prefix\": {}", Value::Object(prefix))?;
    let n = doc.entities(out)?;
    doc.activities(out)?;
    doc.agents(out)?;
    doc.used(out)?;
    doc.generated_by(out)?;
    doc.derived_from(out)?;
    doc.associated_with(out)?;
    doc.informed_by(out)?;
    writeln!(out, "\n}}")?;
    Ok(n)
}

/// The document being written: what its sections read, and what the
/// outputs' pass collected for the later ones.
struct Doc<'a> {
    state: &'a State,
    collections: &'a [String],
    filter: OutputFilter,
    /// The recipe versions, builds and tool versions the outputs name (and,
    /// for tools, the builds).
    recipes: BTreeSet<String>,
    builds: BTreeSet<i64>,
    tools: BTreeSet<String>,
    /// Relation ids (`_:rN`) given so far.
    relations: Cell<u64>,
}

impl Doc<'_> {
    /// Calls `f` with every selected output, streamed from one cursor.
    fn each(&self, f: &mut dyn FnMut(OutputFacts) -> Result<(), Error>) -> Result<(), Error> {
        let mut err = None;
        self.state.for_each_output(
            &self.filter,
            &facts::tile_name,
            &mut super::stop_at_error(&mut err, f),
        )?;
        err.map_or(Ok(()), Err)
    }

    /// The id of the next relation.
    fn relation(&self) -> String {
        self.relations.set(self.relations.get() + 1);
        format!("_:r{}", self.relations.get())
    }

    /// Entities: outputs, then the source versions and recipe versions;
    /// returns the number of outputs.
    fn entities(&mut self, out: &mut dyn Write) -> Result<u64, Error> {
        let mut s = Section::open(out, "entity", false)?;
        let n = self.output_entities(&mut s)?;
        self.source_entities(&mut s)?;
        self.recipe_entities(&mut s)?;
        s.close()?;
        Ok(n)
    }

    /// One entity per output (with its region, for a tile), noting the
    /// recipes, builds and tools they name.
    fn output_entities(&mut self, s: &mut Section<'_>) -> Result<u64, Error> {
        let (mut recipes, mut builds, mut tools) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut n = 0u64;
        let mut pipelines = Pipelines::default();
        let state = self.state;
        self.each(&mut |f| {
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
        self.recipes = recipes;
        self.builds = builds;
        self.tools = tools;
        Ok(n)
    }

    /// One entity per version of a source file the selected collections read.
    fn source_entities(&self, s: &mut Section<'_>) -> Result<(), Error> {
        let mut err: Option<Error> = None;
        self.state
            .for_each_source_version(self.collections, &mut |root, rel, hash| {
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
        err.map_or(Ok(()), Err)
    }

    /// One entity per recipe version, with its canonical text and files.
    fn recipe_entities(&self, s: &mut Section<'_>) -> Result<(), Error> {
        for h in &self.recipes {
            let mut v = json!({"prov:type": "cpia:Recipe", "cpia:hash": h});
            if let Some(r) = self.state.recipe_version(h)? {
                v["prov:label"] = json!(r.collection);
                v["cpia:canonical"] = json!(r.canonical);
                let files: Vec<String> = r.files.iter().map(|(f, _)| f.path.clone()).collect();
                v["cpia:files"] = json!(files.join(" "));
            }
            s.member(&format!("recipe:{h}"), &v)?;
        }
        Ok(())
    }

    /// Activities: builds (noting their tools), and the run of steps that
    /// made each output.
    fn activities(&mut self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "activity", false)?;
        for &b in &self.builds {
            let mut v = json!({"prov:type": "cpia:Build"});
            if let Some(row) = self.state.build_row(b)? {
                v["prov:startTime"] = json!(super::log::utc(row.started));
                if let Some(end) = row.finished {
                    v["prov:endTime"] = json!(super::log::utc(end));
                }
                v["cpia:command"] = json!(row.command);
                self.tools.insert(row.tool_version);
            }
            s.member(&format!("build:{b}"), &v)?;
        }
        self.each(&mut |f| {
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
        Ok(())
    }

    /// Agents: cpia, per version.
    fn agents(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "agent", false)?;
        for t in &self.tools {
            s.member(
                &agent_id(t),
                &json!({"prov:type": "prov:SoftwareAgent", "prov:label": t}),
            )?;
        }
        s.close()?;
        Ok(())
    }

    /// `used`: each output's run used its source and its recipe.
    fn used(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "used", false)?;
        self.each(&mut |f| {
            let run = run_id(&f);
            s.member(
                &self.relation(),
                &json!({"prov:activity": run, "prov:entity": src_id(&f.source_root, &f.source_rel, &f.source_hash)}),
            )?;
            s.member(
                &self.relation(),
                &json!({"prov:activity": run, "prov:entity": format!("recipe:{}", f.maker.recipe_hash)}),
            )?;
            Ok(())
        })?;
        s.close()?;
        Ok(())
    }

    /// `wasGeneratedBy`: each output by its run, when it was built.
    fn generated_by(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "wasGeneratedBy", false)?;
        self.each(&mut |f| {
            s.member(
                &self.relation(),
                &json!({"prov:entity": out_id(&f), "prov:activity": run_id(&f), "prov:time": super::log::utc(f.built_at)}),
            )?;
            Ok(())
        })?;
        s.close()?;
        Ok(())
    }

    /// `wasDerivedFrom`: each output from its source, by its run.
    fn derived_from(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "wasDerivedFrom", false)?;
        self.each(&mut |f| {
            s.member(
                &self.relation(),
                &json!({"prov:generatedEntity": out_id(&f), "prov:usedEntity": src_id(&f.source_root, &f.source_rel, &f.source_hash), "prov:activity": run_id(&f)}),
            )?;
            Ok(())
        })?;
        s.close()?;
        Ok(())
    }

    /// `wasAssociatedWith`: each build and each run with the cpia that ran it.
    fn associated_with(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "wasAssociatedWith", false)?;
        for &b in &self.builds {
            if let Some(t) = self.state.build_row(b)?.map(|r| r.tool_version) {
                s.member(
                    &self.relation(),
                    &json!({"prov:activity": format!("build:{b}"), "prov:agent": agent_id(&t)}),
                )?;
            }
        }
        self.each(&mut |f| {
            s.member(
                &self.relation(),
                &json!({"prov:activity": run_id(&f), "prov:agent": agent_id(&f.maker.tool_version)}),
            )?;
            Ok(())
        })?;
        s.close()?;
        Ok(())
    }

    /// `wasInformedBy`: each run by its build.
    fn informed_by(&self, out: &mut dyn Write) -> Result<(), Error> {
        let mut s = Section::open(out, "wasInformedBy", false)?;
        self.each(&mut |f| {
            s.member(
                &self.relation(),
                &json!({"prov:informed": run_id(&f), "prov:informant": format!("build:{}", f.build)}),
            )?;
            Ok(())
        })?;
        s.close()?;
        Ok(())
    }
}
