//! `cpia log`: every build — when, which tool, the recipe versions it used,
//! its counts and failures — and the archived text of a recipe version.

use std::io::Write;

use serde_json::{json, Value};

use super::Error;
use crate::store::audit::history::RecipeVersion;
use crate::store::{State, StateError};

/// One build as `cpia log --json` prints it (one object per line).
pub fn build_json(
    state: &State,
    b: &crate::store::audit::history::BuildRow,
) -> Result<Value, StateError> {
    let recipes: Vec<Value> = state
        .build_recipes(b.id)?
        .into_iter()
        .map(|(collection, hash, file)| json!({"collection": collection, "hash": hash, "file": file}))
        .collect();
    let failures: Vec<Value> = state
        .build_failures(b.id)?
        .into_iter()
        .map(|(input, error)| json!({"input": input, "error": error}))
        .collect();
    let counts = b
        .counts
        .map(|c| json!({"built": c[0], "up_to_date": c[1], "removed": c[2], "failed": c[3]}));
    Ok(json!({
        "id": b.id,
        "started": b.started,
        "started_utc": utc(b.started),
        "finished": b.finished,
        "finished_utc": b.finished.map(utc),
        "tool_version": b.tool_version,
        "command": b.command,
        "recipes": recipes,
        "counts": counts,
        "failures": failures,
    }))
}

/// Writes every build to `out`, oldest first: one JSON object per line, or
/// readable paragraphs. Returns how many builds were written.
pub fn write_log(state: &State, json: bool, out: &mut dyn Write) -> Result<u64, Error> {
    let mut n = 0;
    let mut err = None;
    state.for_each_build(&mut super::stop_at_error(&mut err, |b| {
        let v = build_json(state, &b)?;
        if json {
            writeln!(out, "{v}")?;
        } else {
            write!(out, "{}", render(&v))?;
        }
        n += 1;
        Ok(())
    }))?;
    err.map_or(Ok(n), Err)
}

fn render(v: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = format!(
        "build {}  {} .. {}  {}\n  command: {}\n",
        v["id"],
        s(&v["started_utc"]),
        if v["finished"].is_null() {
            "(did not finish)".to_string()
        } else {
            s(&v["finished_utc"])
        },
        s(&v["tool_version"]),
        s(&v["command"])
    );
    if let Some(c) = v["counts"].as_object() {
        out.push_str(&format!(
            "  built {}, up to date {}, removed {}, failed {}\n",
            c["built"], c["up_to_date"], c["removed"], c["failed"]
        ));
    }
    for r in v["recipes"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  recipe {} {} ({})\n",
            s(&r["hash"]),
            s(&r["collection"]),
            s(&r["file"])
        ));
    }
    for f in v["failures"].as_array().into_iter().flatten() {
        let first = s(&f["error"]).lines().next().unwrap_or("").to_string();
        out.push_str(&format!("  failed {}: {first}\n", s(&f["input"])));
    }
    out.push('\n');
    out
}

/// The archived recipe version, readable: its hash, canonical text (whose
/// blake3 is the hash) and the files it was read from.
pub fn render_recipe(v: &RecipeVersion) -> String {
    let mut out = format!(
        "# recipe version {} of collection {} (first used by build {})\n",
        v.recipe_hash, v.collection, v.first_build
    );
    for (f, text) in &v.files {
        out.push_str(&format!(
            "\n# ---- {} (blake3 {}) ----\n{text}",
            f.path, f.blake3
        ));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "\n# ---- canonical form (blake3 = the recipe hash) ----\n{}",
        v.canonical
    ));
    out
}

/// `--json` form of [`render_recipe`].
pub fn recipe_json(v: &RecipeVersion) -> Value {
    let files: Vec<Value> = v
        .files
        .iter()
        .map(|(f, text)| json!({"path": f.path, "blake3": f.blake3, "text": text}))
        .collect();
    json!({
        "hash": v.recipe_hash,
        "collection": v.collection,
        "first_build": v.first_build,
        "canonical": v.canonical,
        "files": files,
    })
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(secs: i64) -> String {
    let (y, m, d, h, min, s) = crate::civil_time::utc(secs);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
