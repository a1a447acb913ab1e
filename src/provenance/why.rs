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
        "output": {
            "path": f.path(),
            "blake3": f.file.content_hash,
            "bytes": f.file.size,
            "key": facts::key(f),
        },
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
                w["level"] = json!(place.level);
                w["region"] = json!(place.region);
                w["cell"] = json!([t.cell.0, t.cell.1]);
                w["tile"] = json!({"x": t.x, "y": t.y, "size": t.size});
                w["cell_edge"] = json!(place.cell_edge);
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
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |k: &str, val: String| {
        out.push_str(&format!("{k:<12}{val}\n"));
    };
    let o = &v["output"];
    line("output", s(&o["path"]));
    line("  blake3", s(&o["blake3"]));
    line("  bytes", s(&o["bytes"]));
    line("  key", s(&o["key"]));
    line(
        "collection",
        format!(
            "{} (scale {}, sub-dataset {}, class {})",
            s(&v["collection"]),
            s(&v["scale"]),
            s(&v["sub_dataset"]),
            s(&v["class"])
        ),
    );
    let src = &v["source"];
    line("source", format!("{}:{}", s(&src["root"]), s(&src["path"])));
    line("  blake3", s(&src["blake3"]));
    if src["changed_since"] == Value::Bool(true) {
        line(
            "  note",
            "the source file has changed since (this output is stale)".into(),
        );
    } else {
        line("  bytes", s(&src["bytes"]));
    }
    let r = &v["recipe"];
    line("recipe", s(&r["file"]));
    line("  hash", s(&r["hash"]));
    if r["archived"] == Value::Bool(true) {
        line(
            "  text",
            format!(
                "cpia log --recipe {}",
                &s(&r["hash"])[..16.min(s(&r["hash"]).len())]
            ),
        );
    }
    if let Some(steps) = v["steps"].as_array() {
        for (n, st) in steps.iter().enumerate() {
            let params: Vec<String> = st["params"]
                .as_object()
                .map(|m| m.iter().map(|(k, x)| format!("{k}={}", s(x))).collect())
                .unwrap_or_default();
            line(
                if n == 0 { "steps" } else { "" },
                format!(
                    "{} ({}@{}) {}",
                    s(&st["id"]),
                    s(&st["op"]),
                    s(&st["version"]),
                    params.join(" ")
                ),
            );
        }
    }
    line("encoder", s(&v["encoder"]));
    let libs = &v["libraries"];
    line(
        "libraries",
        libs["recorded"]
            .as_str()
            .unwrap_or("not recorded (built before cpia recorded library versions)")
            .to_string(),
    );
    if let Some(d) = libs["differences"].as_array().filter(|d| !d.is_empty()) {
        let d: Vec<String> = d.iter().map(s).collect();
        line(
            "  now",
            format!("this cpia runs with other versions: {}", d.join(", ")),
        );
    }
    let b = &v["build"];
    line(
        "made by",
        format!(
            "{}, build {} (started {})",
            s(&v["tool_version"]),
            s(&b["id"]),
            s(&b["started_utc"])
        ),
    );
    if let Some(w) = v.get("wsi") {
        if !w["region"].is_null() {
            line(
                "wsi region",
                format!(
                    "{} at level {} (level-0 pixels: x, y, w, h)",
                    s(&w["region"]),
                    s(&w["level"])
                ),
            );
            line(
                "  cell",
                format!(
                    "{} ({} px read, edge {})",
                    s(&w["cell"]),
                    s(&w["read_size"]),
                    s(&w["cell_edge"])
                ),
            );
            line("  tile", s(&w["tile"]));
            line(
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
            line(
                "  parent",
                if p.is_null() {
                    "- (a whole cell)".into()
                } else {
                    format!(
                        "{}{}",
                        s(&p["path"]),
                        if p["recorded"] == Value::Bool(true) {
                            ""
                        } else {
                            " (not written)"
                        }
                    )
                },
            );
        }
        line(
            if w["region"].is_null() {
                "wsi"
            } else {
                "  mpp"
            },
            format!(
                "{} from {}, reader {}",
                s(&w["mpp"]),
                s(&w["mpp_source"]),
                s(&w["reader"])
            ),
        );
    }
    out
}
