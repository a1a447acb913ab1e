//! `cpia why`: everything recorded about how one output file was made —
//! its bytes, source, recipe version, steps, tool, build and, for a WSI
//! tile, the slide region it covers and the tile it was cut from.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::facts::{self, Pipelines};
use crate::store::audit::OutputFacts;
use crate::store::{State, StateError};

/// The output path (relative to the output folder, `/`-separated) that
/// `arg` names: a path relative to the current folder or absolute that lies
/// inside the output folder, else a path relative to the output folder.
pub fn resolve(output: &Path, cwd: &Path, arg: &str) -> String {
    let given = cwd.join(arg);
    let inside = |p: &Path| -> Option<String> {
        let root = output.canonicalize().ok()?;
        // The file itself may be gone: resolve its folder.
        let dir = p.parent()?.canonicalize().ok()?;
        let rel = dir
            .join(p.file_name()?)
            .strip_prefix(&root)
            .ok()?
            .to_path_buf();
        Some(
            rel.iter()
                .map(|c| c.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
        )
    };
    if Path::new(arg).is_absolute() || given.exists() {
        if let Some(rel) = inside(&given) {
            return rel;
        }
    }
    arg.trim_start_matches("./").to_string()
}

/// The record of the output at `path` (relative to the output folder).
pub fn find(state: &State, path: &str) -> Result<Option<OutputFacts>, StateError> {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return Ok(None);
    };
    if let Some(f) = state.output_facts(dir, name)? {
        return Ok(Some(f));
    }
    // A tile: `<slide>-<size>-<x>-<y>.jpg`.
    let Some(stem) = name.strip_suffix(".jpg") else {
        return Ok(None);
    };
    let mut parts = stem.rsplitn(4, '-');
    let (Some(y), Some(x), Some(size), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let (Ok(x), Ok(y), Ok(size)) = (x.parse(), y.parse(), size.parse()) else {
        return Ok(None);
    };
    Ok(state
        .tile_facts(dir, size, x, y, &facts::tile_name)?
        .into_iter()
        .find(|f| f.name == name))
}

/// The library versions that made `f`'s pixels, those this cpia runs with
/// (for the kind of output it is), and what differs.
fn libraries(f: &OutputFacts) -> Value {
    // Slide reads are recorded for WSI tiles and QC pictures only.
    let kind = if f.read.is_some() {
        crate::recipe::Kind::Wsi
    } else {
        crate::recipe::Kind::Roi
    };
    let now = crate::plan::libraries::of_kind(kind);
    let recorded = (!f.maker.libraries.is_empty()).then_some(f.maker.libraries.as_str());
    json!({
        "recorded": recorded,
        "now": now,
        "differences": crate::plan::libraries::differences(recorded.unwrap_or(""), now),
    })
}

/// The `--json` object for output `f` (the keys of docs/cli.md `cpia why`).
pub fn explain(state: &State, f: &OutputFacts) -> Result<Value, StateError> {
    let mut pipelines = Pipelines::default();
    let pipeline = pipelines.get(state, &f.pipeline_hash)?;
    let (scale, sub) = facts::scale_and_sub(&f.dir);
    let current = state.source_of_input(f.input)?;
    let source_bytes = current
        .as_ref()
        .filter(|(_, h)| *h == f.source_hash)
        .map(|(b, _)| *b);
    let build = state.build_row(f.build)?;
    let recipe_file = state.recipe_file_of(f.build, &f.collection)?;
    let archived = state.recipe_version(&f.maker.recipe_hash)?.is_some();
    let steps: Vec<Value> = pipeline
        .as_ref()
        .map(|p| {
            p.steps
                .iter()
                .map(|s| {
                    let params: Map<String, Value> = s
                        .params
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    json!({"id": s.id, "op": s.op, "version": s.version, "params": params})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut v = json!({
        "output": facts::output_json(f),
        "collection": f.collection,
        "sub_dataset": sub,
        "scale": scale,
        "class": f.class,
        "source": {
            "root": f.source_root,
            "path": f.source_rel,
            "blake3": f.source_hash,
            "bytes": source_bytes,
            "changed_since": current.as_ref().is_some_and(|(_, h)| *h != f.source_hash),
        },
        "recipe": {
            "file": recipe_file,
            "hash": f.maker.recipe_hash,
            "archived": archived,
        },
        "steps": steps,
        "encoder": pipeline.as_ref().map(|p| p.encoder.clone()),
        "pipeline_hash": f.pipeline_hash,
        "sink": f.sink,
        "tool_version": f.maker.tool_version,
        "libraries": libraries(f),
        "build": {
            "id": f.build,
            "started": build.as_ref().map(|b| b.started),
            "started_utc": build.as_ref().map(|b| super::log::utc(b.started)),
        },
        "built_at": f.built_at,
    });
    if let Some(r) = &f.read {
        let mut w = json!({
            "level": Value::Null,
            "region": Value::Null,
            "cell": Value::Null,
            "parent": Value::Null,
            "mpp": r.mpp,
            "mpp_source": r.mpp_origin,
            "reader": r.reader,
            "read_size": r.read_size,
        });
        if let (Some(t), Some(p)) = (&f.tile, &pipeline) {
            let meta = state.slide_meta(&r.source_hash)?;
            if let Some(place) = facts::placement(f, p, meta.as_deref()) {
                facts::add_placement(&mut w, t, &place);
                w["complete"] = json!(t.complete);
                w["encoding"] = json!(t.encoding);
                if let Some((edge, px, py)) = place.parent {
                    w["parent"] = parent(state, f, t.cell, edge, px, py)?;
                }
            }
        }
        v["wsi"] = w;
    }
    Ok(v)
}

/// The tile a tile was cut from: its path where a unit of the same cell
/// writes tiles of that edge, and whether that tile is recorded (a parent
/// judged background is cut but not written).
fn parent(
    state: &State,
    f: &OutputFacts,
    cell: (u32, u32),
    edge: u32,
    x: u32,
    y: u32,
) -> Result<Value, StateError> {
    let units = state.units_at(f.input, cell, edge, x, y)?;
    let name = facts::tile_name(&f.source_rel, edge, x, y);
    let (path, recorded) = match units.first() {
        Some((dir, _, recorded)) => (Some(format!("{dir}/{name}")), *recorded),
        None => (None, false),
    };
    Ok(json!({"path": path, "name": name, "size": edge, "x": x, "y": y, "recorded": recorded}))
}

/// The readable form of [`explain`]'s object.
pub fn render(v: &Value) -> String {
    let mut out = Lines(String::new());
    render_output(&mut out, v);
    render_recipe(&mut out, v);
    render_makers(&mut out, v);
    if let Some(w) = v.get("wsi") {
        render_wsi(&mut out, w);
    }
    out.0
}

/// [`render`]'s text: one `key value` line at a time, keys aligned.
struct Lines(String);

impl Lines {
    fn line(&mut self, k: &str, val: String) {
        self.0.push_str(&format!("{k:<12}{val}\n"));
    }
}

/// A JSON value as [`render`] shows it: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The output, its collection and its source.
fn render_output(out: &mut Lines, v: &Value) {
    let o = &v["output"];
    out.line("output", text(&o["path"]));
    out.line("  blake3", text(&o["blake3"]));
    out.line("  bytes", text(&o["bytes"]));
    out.line("  key", text(&o["key"]));
    out.line(
        "collection",
        format!(
            "{} (scale {}, sub-dataset {}, class {})",
            text(&v["collection"]),
            text(&v["scale"]),
            text(&v["sub_dataset"]),
            text(&v["class"])
        ),
    );
    let src = &v["source"];
    out.line(
        "source",
        format!("{}:{}", text(&src["root"]), text(&src["path"])),
    );
    out.line("  blake3", text(&src["blake3"]));
    if src["changed_since"] == Value::Bool(true) {
        out.line(
            "  note",
            "the source file has changed since (this output is stale)".into(),
        );
    } else {
        out.line("  bytes", text(&src["bytes"]));
    }
}

/// The recipe (and where its text is archived) and the steps it ran.
fn render_recipe(out: &mut Lines, v: &Value) {
    let r = &v["recipe"];
    out.line("recipe", text(&r["file"]));
    out.line("  hash", text(&r["hash"]));
    if r["archived"] == Value::Bool(true) {
        let hash = text(&r["hash"]);
        out.line(
            "  text",
            format!("cpia log --recipe {}", &hash[..16.min(hash.len())]),
        );
    }
    if let Some(steps) = v["steps"].as_array() {
        for (n, st) in steps.iter().enumerate() {
            let params: Vec<String> = st["params"]
                .as_object()
                .map(|m| m.iter().map(|(k, x)| format!("{k}={}", text(x))).collect())
                .unwrap_or_default();
            out.line(
                if n == 0 { "steps" } else { "" },
                format!(
                    "{} ({}@{}) {}",
                    text(&st["id"]),
                    text(&st["op"]),
                    text(&st["version"]),
                    params.join(" ")
                ),
            );
        }
    }
}

/// The encoder, the library versions (and how this cpia's differ) and the
/// build that made the output.
fn render_makers(out: &mut Lines, v: &Value) {
    out.line("encoder", text(&v["encoder"]));
    let libs = &v["libraries"];
    out.line(
        "libraries",
        libs["recorded"]
            .as_str()
            .unwrap_or("not recorded (built before cpia recorded library versions)")
            .to_string(),
    );
    if let Some(d) = libs["differences"].as_array().filter(|d| !d.is_empty()) {
        let d: Vec<String> = d.iter().map(text).collect();
        out.line(
            "  now",
            format!("this cpia runs with other versions: {}", d.join(", ")),
        );
    }
    let b = &v["build"];
    out.line(
        "made by",
        format!(
            "{}, build {} (started {})",
            text(&v["tool_version"]),
            text(&b["id"]),
            text(&b["started_utc"])
        ),
    );
}

/// A WSI output's region, cell, tile, encoding and parent (tiles only),
/// and its MPP and reader.
fn render_wsi(out: &mut Lines, w: &Value) {
    if !w["region"].is_null() {
        render_tile(out, w);
    }
    out.line(
        if w["region"].is_null() {
            "wsi"
        } else {
            "  mpp"
        },
        format!(
            "{} from {}, reader {}",
            text(&w["mpp"]),
            text(&w["mpp_source"]),
            text(&w["reader"])
        ),
    );
}

/// Where a tile comes from: its region, cell, encoding and parent.
fn render_tile(out: &mut Lines, w: &Value) {
    out.line(
        "wsi region",
        format!(
            "{} at level {} (level-0 pixels: x, y, w, h)",
            text(&w["region"]),
            text(&w["level"])
        ),
    );
    out.line(
        "  cell",
        format!(
            "{} ({} px read, edge {})",
            text(&w["cell"]),
            text(&w["read_size"]),
            text(&w["cell_edge"])
        ),
    );
    out.line("  tile", text(&w["tile"]));
    out.line(
        "  encoded",
        if w["encoding"] == "crop" {
            "as a lossless crop of the cell's whole-tile JPEG (the bytes encoding its \
             pixels gives)"
                .into()
        } else {
            "from its pixels".to_string()
        },
    );
    let p = &w["parent"];
    out.line(
        "  parent",
        if p.is_null() {
            "- (a whole cell)".into()
        } else {
            format!(
                "{}{}",
                text(&p["path"]),
                if p["recorded"] == Value::Bool(true) {
                    ""
                } else {
                    " (not written)"
                }
            )
        },
    );
}
