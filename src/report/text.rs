//! The report for a terminal: `cpia status` (the summary, the scales beside
//! the published sheets, the collections that have something to say) and
//! `cpia list` (the catalog, two lines per collection).

use std::fmt::Write;

use super::format::{self, count, percent, signed};
use super::model::*;

/// Right-aligned columns of text, padded to the widest cell.
fn table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let mut line = String::from(" ");
        for (i, c) in r.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            line.push(' ');
            if right.get(i).copied().unwrap_or(false) {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            }
            line.push(' ');
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `cpia status`.
pub fn status(r: &Report) -> String {
    let mut s = String::new();
    status_lines(&mut s, r);
    s.push_str("\nimages per published sheet\n");
    s.push_str(&sheets_table(r));
    s.push_str(&collections_table(r));
    collection_notes(&mut s, r);
    s
}

/// The summary lines: workspace, output, last build, sources, what was
/// built, inputs, failures, MPP, recipe errors.
fn status_lines(s: &mut String, r: &Report) {
    let m = &r.summary;
    let _ = writeln!(
        s,
        "workspace  {} ({} collections: {} ROI, {} WSI)",
        r.workspace, m.collections, m.roi_collections, m.wsi_collections
    );
    let _ = writeln!(s, "output     {}", r.output);
    match &r.last_build {
        Some(b) => {
            let _ = writeln!(s, "last build {}", format::build(b));
        }
        None => s.push_str("last build none\n"),
    }
    let _ = write!(
        s,
        "sources    {} available, {} not available",
        m.sources_available, m.sources_not_available
    );
    if m.sources_unusable > 0 {
        let _ = write!(s, ", {} unusable", m.sources_unusable);
    }
    let _ = writeln!(
        s,
        "\nbuilt      {} collection(s): {} images, {} QC pictures",
        m.collections_built,
        count(m.images),
        count(m.qc_pictures)
    );
    let _ = writeln!(
        s,
        "inputs     {} recorded ({} slides), {} complete under the current recipes",
        count(m.inputs),
        count(m.slides),
        count(m.inputs_complete)
    );
    if m.failed_inputs > 0 {
        let _ = writeln!(
            s,
            "failures   {} input(s) in {} collection(s) (`cpia plan --explain` says why; the next build retries them)",
            count(m.failed_inputs),
            m.collections_with_failures
        );
    } else {
        s.push_str("failures   none\n");
    }
    if m.mpp_fallback_slides > 0 {
        let _ = writeln!(
            s,
            "MPP        {} slide(s) with an MPP not from the scanner's metadata",
            count(m.mpp_fallback_slides)
        );
    }
    for p in &r.problems {
        let first = p.error.lines().next().unwrap_or("");
        let _ = writeln!(s, "error: {}: {first}", p.recipe);
    }
    for e in &r.exports {
        let state = if e.pending == 0 {
            "up to date".to_string()
        } else {
            format!("{} change(s) not written yet", e.pending)
        };
        let _ = writeln!(
            s,
            "export     {} ({}{}): {} samples in {} shard(s), {state}",
            e.name,
            e.format,
            if e.declared {
                ""
            } else {
                ", made by `cpia export --format`"
            },
            count(e.samples),
            e.shards
        );
    }
}

/// Images per published sheet beside the published counts, with the total.
fn sheets_table(r: &Report) -> String {
    let mut rows = vec![vec![
        "sheet".to_string(),
        "built".into(),
        "published".into(),
        "difference".into(),
        "".into(),
    ]];
    let (mut built, mut published) = (0, 0);
    for t in &r.sheets {
        built += t.built;
        published += t.published;
        rows.push(vec![
            if t.scales.len() > 1 {
                format!("{} ({})", t.sheet, t.scales.join(" + "))
            } else {
                t.sheet.clone()
            },
            count(t.built),
            count(t.published),
            signed(t.difference),
            percent(t.built, t.published),
        ]);
    }
    rows.push(vec![
        "total".into(),
        count(built),
        count(published),
        signed(built as i64 - published as i64),
        percent(built, published),
    ]);
    table(&rows, &[false, true, true, true, true])
}

/// The collections that have a source or outputs (nothing when none has).
fn collections_table(r: &Report) -> String {
    let mut s = String::new();
    let shown: Vec<&CollectionReport> = r
        .collections
        .iter()
        .filter(|c| c.status != "not available")
        .collect();
    if !shown.is_empty() {
        s.push_str("\ncollections with a source or outputs\n");
        let mut rows = vec![vec![
            "collection".to_string(),
            "kind".into(),
            "status".into(),
            "inputs".into(),
            "complete".into(),
            "images".into(),
            "published".into(),
            "difference".into(),
            "failed".into(),
        ]];
        for c in shown {
            rows.push(vec![
                c.name.clone(),
                c.kind.to_uppercase(),
                c.status.clone(),
                count(c.inputs),
                count(c.complete),
                count(c.images),
                c.published.map_or("-".into(), count),
                c.published
                    .map_or("-".into(), |p| signed(c.images as i64 - p as i64)),
                count(c.failures.inputs),
            ]);
        }
        s.push_str(&table(
            &rows,
            &[false, false, false, true, true, true, true, true, true],
        ));
    }
    s
}

/// An error per collection whose source is unusable or missing, a note per
/// collection that has outputs but no recipe.
fn collection_notes(s: &mut String, r: &Report) {
    let unusable: Vec<&CollectionReport> = r
        .collections
        .iter()
        .filter(|c| matches!(c.status.as_str(), "source unusable" | "source missing"))
        .collect();
    for c in unusable {
        let _ = writeln!(
            s,
            "error: {}: {}",
            c.name,
            c.source.reason.as_deref().unwrap_or("")
        );
    }
    for o in &r.orphans {
        let _ = writeln!(
            s,
            "note: collection {} has {} images but no recipe (the next full build removes them)",
            o.collection,
            count(o.images)
        );
    }
}

/// `cpia list`: per collection a line (name, kind, source, images,
/// organs) and a line of sub-datasets grouped by scale.
pub fn list(r: &Report) -> String {
    let m = &r.summary;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} collections ({} ROI, {} WSI), {} with a source available, {} images built\n",
        m.collections,
        m.roi_collections,
        m.wsi_collections,
        m.sources_available,
        count(m.images)
    );
    let mut rows = vec![vec![
        "collection".to_string(),
        "kind".into(),
        "source".into(),
        "images".into(),
        "organs".into(),
    ]];
    let mut subs = vec![String::new()];
    for c in &r.collections {
        rows.push(vec![
            c.name.clone(),
            c.kind.to_uppercase(),
            if c.source.available { "yes" } else { "-" }.into(),
            count(c.images),
            c.organs.join(", "),
        ]);
        let mut by_scale: Vec<(String, Vec<String>)> = Vec::new();
        for sd in &c.sub_datasets {
            match by_scale.iter_mut().find(|(sc, _)| *sc == sd.scale) {
                Some((_, names)) => names.push(sd.name.clone()),
                None => by_scale.push((sd.scale.clone(), vec![sd.name.clone()])),
            }
        }
        let line: Vec<String> = by_scale
            .into_iter()
            .map(|(sc, names)| format!("{sc}: {}", names.join(", ")))
            .collect();
        subs.push(line.join("  \u{b7}  "));
    }
    let t = table(&rows, &[false, false, false, true, false]);
    for (line, sub) in t.lines().zip(&subs) {
        s.push_str(line);
        s.push('\n');
        if !sub.is_empty() {
            let _ = writeln!(s, "      {sub}");
        }
    }
    for p in &r.problems {
        let first = p.error.lines().next().unwrap_or("");
        let _ = writeln!(s, "error: {}: {first}", p.recipe);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn table_pads_and_aligns() {
        let rows = vec![
            vec!["a".to_string(), "1".into()],
            vec!["long".to_string(), "1,000".into()],
        ];
        assert_eq!(
            table(&rows, &[false, true]),
            "  a         1\n  long  1,000\n"
        );
    }
}
