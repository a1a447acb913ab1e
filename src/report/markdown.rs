//! The report as Markdown (GitHub-flavoured tables): the same sections as
//! the HTML page, pictures as relative links instead of embedded thumbnails.

use std::fmt::Write;

use super::format::{self, count, percent, signed, url_path, utc};
use super::model::*;

/// Escapes the characters that would end a table cell or start markup.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn diff(built: u64, published: Option<u64>) -> String {
    published.map_or("\u{2014}".into(), |p| signed(built as i64 - p as i64))
}

/// Renders `r`; `link` is the prefix from the report's folder to the output
/// folder. The sections are those of the HTML page, in its order.
pub fn render(r: &Report, link: &str) -> String {
    let mut s = String::new();
    header(&mut s, r);
    summary(&mut s, r);
    images_per_scale(&mut s, r);
    breakdowns(&mut s, r);
    build_status(&mut s, r);
    failures(&mut s, r);
    mpp_origins(&mut s, r);
    sub_datasets(&mut s, r);
    unclaimed(&mut s, r);
    samples(&mut s, r, link);
    exports(&mut s, r);
    s
}

/// The exports recorded in the state.
fn exports(s: &mut String, r: &Report) {
    if r.exports.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## Exports\n\n| export | format | samples | shards | bytes | not written yet |\n|---|---|---:|---:|---:|---:|"
    );
    for e in &r.exports {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&e.name),
            e.format,
            e.samples,
            e.shards,
            e.bytes,
            e.pending
        );
    }
}

/// The title, the workspace, when and by what the report was made, and the
/// last build.
fn header(s: &mut String, r: &Report) {
    let _ = writeln!(s, "# CPIA dataset report\n");
    let _ = writeln!(
        s,
        "Workspace `{}`, output `{}`; generated {} by {}.",
        r.workspace,
        r.output,
        utc(r.generated_at),
        r.tool_version
    );
    if let Some(b) = &r.last_build {
        let _ = writeln!(s, "Last build {}.", format::build(b));
    }
}

/// The headline counts, and the recipes that could not be used.
fn summary(s: &mut String, r: &Report) {
    let m = &r.summary;
    let _ = writeln!(s, "\n## Summary\n\n| | |\n|---|---:|");
    for (k, v) in [
        ("images built (all scales)", m.images),
        ("images in the published CPIA", m.published_images),
        ("QC pictures", m.qc_pictures),
        ("collections", m.collections),
        ("collections built", m.collections_built),
        ("sources available", m.sources_available),
        ("sources not available", m.sources_not_available),
        ("sources unusable", m.sources_unusable),
        ("inputs recorded", m.inputs),
        ("inputs complete", m.inputs_complete),
        ("slides", m.slides),
        ("inputs failed", m.failed_inputs),
        (
            "slides with an MPP not from the scanner",
            m.mpp_fallback_slides,
        ),
    ] {
        let _ = writeln!(s, "| {k} | {} |", count(v));
    }
    for p in &r.problems {
        let _ = writeln!(
            s,
            "\n**Recipe not used:** `{}`: {}",
            p.recipe,
            cell(&p.error)
        );
    }
}

/// Images per published sheet beside the published counts (with the
/// total), then per scale folder.
fn images_per_scale(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Images per scale\n\nSheet L of the published tables holds the 3840-px WSI tiles, which cpia writes to `XL/`.\n\n\
         | sheet | scale folders | built | published | difference | built / published |\n|---|---|---:|---:|---:|---:|"
    );
    let (mut built, mut published) = (0, 0);
    for t in &r.sheets {
        built += t.built;
        published += t.published;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            t.sheet,
            t.scales.join(" + "),
            count(t.built),
            count(t.published),
            signed(t.difference),
            percent(t.built, t.published)
        );
    }
    let _ = writeln!(
        s,
        "| **total** | | **{}** | **{}** | **{}** | {} |",
        count(built),
        count(published),
        signed(built as i64 - published as i64),
        percent(built, published)
    );
    let _ = writeln!(
        s,
        "\n| scale folder | images | sub-datasets |\n|---|---:|---:|"
    );
    for t in &r.scales {
        let _ = writeln!(
            s,
            "| `{}/` | {} | {} |",
            t.scale,
            count(t.images),
            t.sub_datasets
        );
    }
}

/// One table per breakdown (organ, staining, …): collections, built, published.
fn breakdowns(s: &mut String, r: &Report) {
    for b in &r.breakdowns {
        let _ = writeln!(
            s,
            "\n## By {}\n\n| {} | collections | built | published |\n|---|---:|---:|---:|",
            b.by, b.by
        );
        for bar in &b.bars {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&bar.label),
                bar.collections,
                count(bar.built),
                count(bar.published)
            );
        }
    }
}

/// One row per collection whose source is available, and how many are not.
fn build_status(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Build status\n\n| collection | kind | status | inputs | complete | images | published | difference | failed inputs |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut unavailable = 0;
    for c in &r.collections {
        if c.status == "not available" {
            unavailable += 1;
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.name),
            c.kind.to_uppercase(),
            c.status,
            count(c.inputs),
            count(c.complete),
            count(c.images),
            c.published.map_or("\u{2014}".into(), count),
            diff(c.images, c.published),
            count(c.failures.inputs)
        );
    }
    let _ = writeln!(
        s,
        "\n{unavailable} collection(s) with no source available (not built; not an error)."
    );
}

/// The shown failures of each collection that has some.
fn failures(s: &mut String, r: &Report) {
    for c in r.collections.iter().filter(|c| c.failures.inputs > 0) {
        let _ = writeln!(
            s,
            "\n### Failures of {} ({} inputs, {} records)\n\n| input | unit | error |\n|---|---|---|",
            cell(&c.name),
            count(c.failures.inputs),
            count(c.failures.records)
        );
        for f in &c.failures.shown {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                cell(&f.input),
                cell(&f.unit),
                cell(&f.error)
            );
        }
    }
}

/// Where the slides' MPP came from, per collection that has slides.
fn mpp_origins(s: &mut String, r: &Report) {
    let with_mpp: Vec<&CollectionReport> =
        r.collections.iter().filter(|c| !c.mpp.is_empty()).collect();
    if !with_mpp.is_empty() {
        let _ = writeln!(
            s,
            "\n### MPP origins\n\n| collection | origin | slides |\n|---|---|---:|"
        );
        for c in with_mpp {
            for o in &c.mpp {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    cell(&c.name),
                    o.origin,
                    count(o.slides)
                );
            }
        }
    }
}

/// Every sub-dataset a recipe writes, built beside published.
fn sub_datasets(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "\n## Sub-datasets: built and published\n\n| collection | sub-dataset | scale | sheet | built | published | difference |\n|---|---|---|---|---:|---:|---:|"
    );
    for c in &r.collections {
        for sd in &c.sub_datasets {
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {} | {} | {} | {} |",
                cell(&c.name),
                cell(&sd.name),
                if sd.exact {
                    ""
                } else {
                    " (depends on the inputs)"
                },
                sd.scale,
                sd.sheet,
                count(sd.built),
                sd.published.map_or("\u{2014}".into(), count),
                diff(sd.built, sd.published)
            );
        }
    }
}

/// Published sub-datasets that no recipe writes.
fn unclaimed(s: &mut String, r: &Report) {
    if !r.unclaimed.is_empty() {
        let _ = writeln!(
            s,
            "\n### Published sub-datasets no recipe writes ({})\n\n| published collection | sub-dataset | sheet | published |\n|---|---|---|---:|",
            r.unclaimed.len()
        );
        for u in &r.unclaimed {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                cell(&u.original_name),
                cell(&u.sub_dataset),
                u.sheet,
                count(u.images)
            );
        }
    }
}

/// Links to the sampled files and to the QC pictures of the shown slides,
/// per collection that built something.
fn samples(s: &mut String, r: &Report, link: &str) {
    let mut first = true;
    for c in r.collections.iter().filter(|c| c.images > 0) {
        if first {
            let _ = writeln!(s, "\n## Samples");
            first = false;
        }
        let _ = writeln!(s, "\n### {}\n", cell(&c.name));
        for sd in c.sub_datasets.iter().filter(|sd| !sd.samples.is_empty()) {
            let links: Vec<String> = sd
                .samples
                .iter()
                .enumerate()
                .map(|(i, t)| format!("[{}]({link}{})", i + 1, url_path(&t.path)))
                .collect();
            let _ = writeln!(
                s,
                "- `{}/{}` ({} images): {}",
                sd.scale,
                sd.name,
                count(sd.built),
                links.join(" ")
            );
        }
        if let Some(g) = &c.slides {
            let _ = writeln!(
                s,
                "- slides: {} (QC pictures in [`{}/`]({link}{}/))",
                count(g.total),
                g.folder,
                url_path(&g.folder)
            );
            for v in &g.shown {
                let qc = v.qc.as_ref().map_or("no QC picture".into(), |t| {
                    format!("[QC]({link}{})", url_path(&t.path))
                });
                let _ = writeln!(
                    s,
                    "  - {}: {} of {} cells kept, {} tiles, {qc}",
                    cell(&v.slide),
                    count(v.kept),
                    count(v.cells),
                    count(v.tiles)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn cells_cannot_break_the_table() {
        assert_eq!(cell("a|b\nc"), "a\\|b c");
        assert_eq!(cell("Monuseg_train&test"), "Monuseg\\_train&test");
    }
}
