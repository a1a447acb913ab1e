//! The report as one self-contained HTML page: styles inline, charts as
//! inline SVG, thumbnails as `data:` URIs; links to full-size files are
//! relative to the report. No script, no fonts or images fetched, so it
//! opens offline and anywhere it is copied.
//!
//! Elements carry `id`s and `data-*` attributes with the raw numbers
//! (`#sheet-M[data-built]`, `tr[data-sub-dataset]`), for tests and for
//! anyone scraping the page.

use std::fmt::Write;

use super::format::{self, count, html, percent, signed, url_path, utc};
use super::model::*;
use super::svg;

const STYLE: &str = include_str!("style.css");

/// Renders `r`; `link` is the prefix from the report's folder to the output
/// folder (`""` when the report is in it).
pub fn render(r: &Report, link: &str) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let title = format!("CPIA dataset report \u{2014} {}", r.workspace);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        html(&title)
    );
    header(&mut s, r);
    s.push_str(
        "<nav><a href=\"#summary\">Summary</a><a href=\"#totals\">Scales</a>\
         <a href=\"#breakdowns\">Breakdowns</a><a href=\"#status\">Build status</a>\
         <a href=\"#comparison\">Sub-datasets</a><a href=\"#collections\">Collections</a></nav>\n<main>\n",
    );
    summary(&mut s, r);
    totals(&mut s, r);
    breakdowns(&mut s, r);
    status(&mut s, r);
    comparison(&mut s, r);
    collections(&mut s, r, link);
    exports(&mut s, r);
    s.push_str("</main>\n");
    let _ = write!(
        s,
        "<footer>Written by {} on {}. Published counts: the CPIA paper's tables (sheet L lists the \
         3840-px WSI sub-datasets, which cpia writes to XL/). Images are the dataset's files; \
         QC pictures are counted apart.</footer>\n</body></html>\n",
        html(&r.tool_version),
        utc(r.generated_at)
    );
    s
}

fn exports(s: &mut String, r: &Report) {
    if r.exports.is_empty() {
        return;
    }
    s.push_str(
        "<section id=\"exports\"><h2>Exports</h2><table><thead><tr><th>export</th><th>format</th>\
         <th class=\"num\">samples</th><th class=\"num\">shards</th><th class=\"num\">bytes</th>\
         <th class=\"num\">not written yet</th></tr></thead><tbody>",
    );
    for e in &r.exports {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            html(&e.name),
            html(&e.format),
            e.samples,
            e.shards,
            e.bytes,
            e.pending
        );
    }
    s.push_str("</tbody></table></section>\n");
}

fn header(s: &mut String, r: &Report) {
    let _ = write!(
        s,
        "<header><h1>CPIA dataset report</h1><p class=\"meta\">workspace <code>{}</code> \u{b7} \
         output <code>{}</code></p><p class=\"meta\">generated {} by {}",
        html(&r.workspace),
        html(&r.output),
        utc(r.generated_at),
        html(&r.tool_version)
    );
    match &r.last_build {
        Some(b) => {
            let _ = write!(s, " \u{b7} last build {}", html(&format::build(b)));
        }
        None => s.push_str(" \u{b7} nothing built yet"),
    }
    s.push_str("</p></header>\n");
}

fn card(s: &mut String, id: &str, value: u64, label: &str, class: &str) {
    let _ = write!(
        s,
        "<div class=\"card {class}\" id=\"{id}\" data-value=\"{value}\"><div class=\"v\">{}</div>\
         <div class=\"k\">{label}</div></div>",
        count(value)
    );
}

fn summary(s: &mut String, r: &Report) {
    let m = &r.summary;
    s.push_str("<section id=\"summary\"><div class=\"cards\">");
    card(
        s,
        "summary-images",
        m.images,
        "images built (all scales)",
        "",
    );
    card(
        s,
        "summary-published",
        m.published_images,
        "images in the published CPIA",
        "",
    );
    card(s, "summary-qc", m.qc_pictures, "QC pictures", "");
    card(
        s,
        "summary-built",
        m.collections_built,
        &format!(
            "collections built, of {} ({} ROI, {} WSI)",
            m.collections, m.roi_collections, m.wsi_collections
        ),
        "",
    );
    card(
        s,
        "summary-available",
        m.sources_available,
        "sources available",
        "",
    );
    card(
        s,
        "summary-not-available",
        m.sources_not_available,
        "sources not available",
        "",
    );
    card(
        s,
        "summary-inputs",
        m.inputs,
        &format!("inputs recorded, {} complete", count(m.inputs_complete)),
        "",
    );
    card(s, "summary-slides", m.slides, "slides", "");
    card(
        s,
        "summary-failed",
        m.failed_inputs,
        &format!(
            "inputs failed, in {} collection(s)",
            m.collections_with_failures
        ),
        if m.failed_inputs > 0 { "alert" } else { "" },
    );
    card(
        s,
        "summary-mpp-fallback",
        m.mpp_fallback_slides,
        "slides with an MPP not from the scanner",
        if m.mpp_fallback_slides > 0 {
            "warn"
        } else {
            ""
        },
    );
    s.push_str("</div>");
    if !r.problems.is_empty() {
        let _ = write!(
            s,
            "<h3 class=\"short\">{} recipe(s) could not be used</h3><table><tr><th>recipe</th><th>error</th></tr>",
            r.problems.len()
        );
        for p in &r.problems {
            let _ = write!(
                s,
                "<tr><td>{}</td><td><pre class=\"error\">{}</pre></td></tr>",
                html(&p.recipe),
                html(&p.error)
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</section>\n");
}

/// A difference cell: coloured by sign (muted while nothing is built), `—`
/// when nothing is published.
fn diff_cell(built: u64, published: Option<u64>) -> String {
    match published {
        None => "<td class=\"n none\">\u{2014}</td>".into(),
        Some(p) => {
            let d = built as i64 - p as i64;
            let class = match d.signum() {
                _ if built == 0 => "none",
                0 => "eq",
                -1 => "short",
                _ => "over",
            };
            format!("<td class=\"n {class}\">{}</td>", signed(d))
        }
    }
}

fn totals(s: &mut String, r: &Report) {
    s.push_str(
        "<section id=\"totals\"><h2>Images per scale</h2>\
         <p class=\"note\">As the published tables count them: sheet L holds the 960-px tiles and \
         ROI images of scale L, and the 3840-px WSI tiles, which cpia writes to <code>XL/</code>.</p>\
         <table><tr><th>published sheet</th><th>scale folders</th><th class=\"n\">built</th>\
         <th class=\"n\">published</th><th class=\"n\">difference</th><th class=\"n\">built / published</th></tr>",
    );
    let (mut built, mut published) = (0, 0);
    for t in &r.sheets {
        built += t.built;
        published += t.published;
        let _ = write!(
            s,
            "<tr id=\"sheet-{sheet}\" data-built=\"{b}\" data-published=\"{p}\"><td>{sheet}</td><td>{scales}</td>\
             <td class=\"n\">{bc}</td><td class=\"n\">{pc}</td>{d}<td class=\"n\">{pct}</td></tr>",
            sheet = html(&t.sheet),
            scales = html(&t.scales.join(" + ")),
            b = t.built,
            p = t.published,
            bc = count(t.built),
            pc = count(t.published),
            d = diff_cell(t.built, Some(t.published)),
            pct = percent(t.built, t.published),
        );
    }
    let _ = write!(
        s,
        "<tr class=\"total\" id=\"sheet-total\" data-built=\"{built}\" data-published=\"{published}\">\
         <td>total</td><td></td><td class=\"n\">{}</td><td class=\"n\">{}</td>{}<td class=\"n\">{}</td></tr></table>",
        count(built),
        count(published),
        diff_cell(built, Some(published)),
        percent(built, published)
    );
    s.push_str(
        "<table><tr><th>scale folder</th><th class=\"n\">images</th><th class=\"n\">sub-datasets</th></tr>",
    );
    for t in &r.scales {
        let _ = write!(
            s,
            "<tr id=\"scale-{sc}\" data-images=\"{n}\"><td><code>{sc}/</code></td><td class=\"n\">{nc}</td>\
             <td class=\"n\">{sd}</td></tr>",
            sc = html(&t.scale),
            n = t.images,
            nc = count(t.images),
            sd = t.sub_datasets
        );
    }
    s.push_str("</table></section>\n");
}

fn breakdowns(s: &mut String, r: &Report) {
    s.push_str(
        "<section id=\"breakdowns\"><h2>Organ, disease, stain and field</h2>\
         <p class=\"note\">Images per value of the recipes' metadata, built beside published; a \
         collection with several organs or diseases counts in each.</p><div class=\"charts\">",
    );
    for b in &r.breakdowns {
        let _ = write!(
            s,
            "<figure id=\"chart-{by}\"><h3>By {by}</h3>{}</figure>",
            svg::bars(b),
            by = html(&b.by)
        );
    }
    s.push_str("</div></section>\n");
}

fn status_badge(status: &str) -> String {
    format!(
        "<span class=\"status status-{}\">{}</span>",
        status.replace(' ', "-"),
        html(status)
    )
}

fn status(s: &mut String, r: &Report) {
    s.push_str("<section id=\"status\"><h2>Build status</h2>");
    let (shown, hidden): (Vec<&CollectionReport>, Vec<&CollectionReport>) = r
        .collections
        .iter()
        .partition(|c| c.status != "not available");
    if shown.is_empty() {
        s.push_str("<p>No collection has its source available and nothing is built.</p>");
    } else {
        s.push_str(
            "<table><tr><th>collection</th><th>kind</th><th>status</th><th class=\"n\">inputs</th>\
             <th class=\"n\">complete</th><th class=\"n\">images</th><th class=\"n\">published</th>\
             <th class=\"n\">difference</th><th class=\"n\">failed inputs</th><th class=\"n\">MPP fallback</th></tr>",
        );
        for c in &shown {
            let fallback: u64 = c
                .mpp
                .iter()
                .filter(|o| o.origin != "openslide")
                .map(|o| o.slides)
                .sum();
            let _ = write!(
                s,
                "<tr data-collection=\"{name}\" data-images=\"{images}\" data-status=\"{st}\">\
                 <td><a href=\"#c-{anchor}\">{name}</a></td><td>{kind}</td><td>{badge}</td>\
                 <td class=\"n\">{inputs}</td><td class=\"n\">{complete}</td><td class=\"n\">{ic}</td>\
                 <td class=\"n\">{published}</td>{diff}<td class=\"n{fclass}\">{failed}</td>\
                 <td class=\"n{mclass}\">{fallback}</td></tr>",
                name = html(&c.name),
                anchor = url_path(&c.name),
                images = c.images,
                st = html(&c.status),
                kind = c.kind.to_uppercase(),
                badge = status_badge(&c.status),
                inputs = count(c.inputs),
                complete = count(c.complete),
                ic = count(c.images),
                published = c.published.map_or("\u{2014}".into(), count),
                diff = diff_cell(c.images, c.published),
                fclass = if c.failures.inputs > 0 { " short" } else { "" },
                failed = count(c.failures.inputs),
                mclass = if fallback > 0 { " over" } else { "" },
                fallback = count(fallback),
            );
        }
        s.push_str("</table>");
    }
    if !hidden.is_empty() {
        let _ = write!(
            s,
            "<details id=\"not-available\"><summary>{} collection(s) with no source available \
             (not built; not an error)</summary><table><tr><th>collection</th><th>kind</th>\
             <th>source root</th><th>why</th></tr>",
            hidden.len()
        );
        for c in &hidden {
            let _ = write!(
                s,
                "<tr data-collection=\"{}\" data-status=\"not available\"><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                html(&c.name),
                html(&c.name),
                c.kind.to_uppercase(),
                html(&c.source.root),
                html(c.source.reason.as_deref().unwrap_or(""))
            );
        }
        s.push_str("</table></details>");
    }
    if !r.orphans.is_empty() {
        s.push_str("<h3>Collections in the state without a recipe</h3><table><tr><th>collection</th><th class=\"n\">images</th></tr>");
        for o in &r.orphans {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                html(&o.collection),
                count(o.images)
            );
        }
        s.push_str("</table><p class=\"note\">The next <code>cpia build</code> of all recipes removes their outputs.</p>");
    }
    failures(s, r);
    mpp(s, r);
    s.push_str("</section>\n");
}

fn failures(s: &mut String, r: &Report) {
    let failing: Vec<&CollectionReport> = r
        .collections
        .iter()
        .filter(|c| c.failures.inputs > 0)
        .collect();
    let _ = write!(
        s,
        "<h3 id=\"failures\">Failures</h3>{}",
        if failing.is_empty() {
            "<p>None recorded.</p>"
        } else {
            "<p class=\"note\">As recorded by the last build of each input; <code>cpia plan --explain</code> \
             shows them too, and the next build retries them.</p>"
        }
    );
    for c in failing {
        let _ = write!(
            s,
            "<details open><summary>{}: {} input(s), {} failure record(s)</summary><table>\
             <tr><th>input</th><th>unit</th><th>error</th></tr>",
            html(&c.name),
            count(c.failures.inputs),
            count(c.failures.records)
        );
        for f in &c.failures.shown {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td><pre class=\"error\">{}</pre></td></tr>",
                html(&f.input),
                html(match f.unit.as_str() {
                    "" => "input",
                    "qc" => "QC picture",
                    u => u,
                }),
                html(&f.error)
            );
        }
        s.push_str("</table>");
        if c.failures.records > c.failures.shown.len() as u64 {
            let _ = write!(
                s,
                "<p class=\"note\">\u{2026} and {} more.</p>",
                count(c.failures.records - c.failures.shown.len() as u64)
            );
        }
        s.push_str("</details>");
    }
}

fn mpp(s: &mut String, r: &Report) {
    let wsi: Vec<&CollectionReport> = r.collections.iter().filter(|c| !c.mpp.is_empty()).collect();
    s.push_str("<h3 id=\"mpp\">Microns per pixel</h3>");
    if wsi.is_empty() {
        s.push_str("<p>No slide built yet.</p>");
        return;
    }
    s.push_str(
        "<p class=\"note\">Where each slide's resolution came from: <code>openslide</code> is the \
         scanner's metadata; <code>tiff-resolution</code>, <code>override</code> and <code>default</code> \
         are the recipe's fallbacks ([mpp] in docs/recipes.md).</p><table><tr><th>collection</th>\
         <th>origin</th><th class=\"n\">slides</th></tr>",
    );
    for c in &wsi {
        for o in &c.mpp {
            let _ = write!(
                s,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td></tr>",
                html(&c.name),
                if o.origin == "openslide" { "" } else { "over" },
                html(&o.origin),
                count(o.slides)
            );
        }
    }
    s.push_str("</table>");
    for c in wsi.iter().filter(|c| !c.mpp_fallbacks.is_empty()) {
        let _ = write!(
            s,
            "<details><summary>{}: slides with a fallback MPP</summary><table><tr><th>slide</th>\
             <th>origin</th><th class=\"n\">\u{b5}m/px</th></tr>",
            html(&c.name)
        );
        for f in &c.mpp_fallbacks {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                html(&f.slide),
                html(&f.origin),
                f.mpp
            );
        }
        s.push_str("</table></details>");
    }
}

fn comparison(s: &mut String, r: &Report) {
    s.push_str(
        "<section id=\"comparison\"><h2>Sub-datasets: built and published</h2>\
         <p class=\"note\">Every sub-dataset of every recipe, and every published one, matched by \
         name. <span class=\"eq\">Equal</span>, <span class=\"short\">fewer</span> or \
         <span class=\"over\">more</span> images than published.</p><table><tr><th>collection</th>\
         <th>sub-dataset</th><th>scale</th><th>sheet</th><th class=\"n\">built</th>\
         <th class=\"n\">published</th><th class=\"n\">difference</th></tr>",
    );
    for c in &r.collections {
        for (i, sd) in c.sub_datasets.iter().enumerate() {
            let first = i == 0;
            let _ = write!(
                s,
                "<tr{} data-collection=\"{cn}\" data-sub-dataset=\"{sn}\" data-scale=\"{sc}\" data-built=\"{b}\"{pd}>\
                 <td>{cname}</td><td>{sname}</td><td>{sc}</td><td>{sheet}</td><td class=\"n\">{bc}</td>\
                 <td class=\"n\">{pc}</td>{diff}</tr>",
                if first { " class=\"group-start\"" } else { "" },
                cn = html(&c.name),
                sn = html(&sd.name),
                sc = html(&sd.scale),
                b = sd.built,
                pd = sd
                    .published
                    .map_or(String::new(), |p| format!(" data-published=\"{p}\"")),
                cname = if first { html(&c.name) } else { String::new() },
                sname = if sd.exact {
                    html(&sd.name)
                } else {
                    format!("<i>{}</i> (depends on the inputs)", html(&sd.name))
                },
                sheet = match &sd.published_sheet {
                    Some(p) => format!("{} <span class=\"over\">(published on {})</span>", html(&sd.sheet), html(p)),
                    None => html(&sd.sheet),
                },
                bc = count(sd.built),
                pc = sd.published.map_or("\u{2014}".into(), count),
                diff = diff_cell(sd.built, sd.published),
            );
        }
    }
    s.push_str("</table>");
    if !r.unclaimed.is_empty() {
        let _ = write!(
            s,
            "<details id=\"unclaimed\"><summary>{} published sub-dataset(s) that no recipe of this workspace \
             writes ({} images; <code>cpia init</code> writes the whole catalog)</summary><table><tr>\
             <th>published collection</th><th>sub-dataset</th><th>sheet</th><th class=\"n\">published</th></tr>",
            r.unclaimed.len(),
            count(r.unclaimed.iter().map(|u| u.images).sum())
        );
        for u in &r.unclaimed {
            let _ = write!(
                s,
                "<tr data-sub-dataset=\"{sn}\" data-built=\"0\" data-published=\"{p}\"><td>{on}</td><td>{sn}</td>\
                 <td>{sheet}</td><td class=\"n\">{pc}</td></tr>",
                sn = html(&u.sub_dataset),
                p = u.images,
                on = html(&u.original_name),
                sheet = html(&u.sheet),
                pc = count(u.images),
            );
        }
        s.push_str("</table></details>");
    }
    s.push_str("</section>\n");
}

/// `1 image`, `2 images`.
fn plural(n: u64, what: &str) -> String {
    format!("{} {what}{}", count(n), if n == 1 { "" } else { "s" })
}

/// A thumbnail linking to its file; a placeholder when it could not be made.
fn thumb(t: &Thumb, link: &str, class: &str, alt: &str) -> String {
    let href = format!("{link}{}", url_path(&t.path));
    match &t.data {
        Some(data) => format!(
            "<a href=\"{}\" title=\"{}\"><img class=\"{class}\" src=\"{data}\" alt=\"{}\"></a>",
            html(&href),
            html(&t.path),
            html(alt)
        ),
        None => format!(
            "<a class=\"missing\" href=\"{}\" title=\"{}\">no preview</a>",
            html(&href),
            html(&t.path)
        ),
    }
}

fn collections(s: &mut String, r: &Report, link: &str) {
    s.push_str("<section id=\"collections\"><h2>Collections</h2>");
    let shown: Vec<&CollectionReport> = r
        .collections
        .iter()
        .filter(|c| c.status != "not available")
        .collect();
    if shown.is_empty() {
        s.push_str("<p>Nothing to show: no source is available and nothing is built.</p>");
    }
    for c in shown {
        let _ = write!(
            s,
            "<article class=\"collection\" id=\"c-{}\"><h3>{} <small>{} \u{b7} {}</small> {}</h3>",
            url_path(&c.name),
            html(&c.name),
            c.kind.to_uppercase(),
            html(&c.recipe),
            status_badge(&c.status)
        );
        metadata(s, c);
        for sd in c.sub_datasets.iter().filter(|sd| sd.built > 0) {
            let _ = write!(
                s,
                "<h4>{}/{} \u{b7} {}</h4><div class=\"mosaic\">",
                html(&sd.scale),
                html(&sd.name),
                plural(sd.built, "image")
            );
            for t in &sd.samples {
                s.push_str(&thumb(t, link, "tile", &format!("a tile of {}", sd.name)));
            }
            s.push_str("</div>");
        }
        if let Some(g) = &c.slides {
            let _ = write!(
                s,
                "<h4>Slides: {} of {} shown, with the grid of each (<a href=\"{}\">all QC pictures</a>)</h4>\
                 <p class=\"legend note\">cells:<span style=\"background:#00aa00\"></span>kept as tissue\
                 <span style=\"background:#c80000\"></span>rejected<span style=\"background:#285adc\"></span>\
                 outer ring (skipped)<span style=\"background:#8c8c8c\"></span>no decision</p><div class=\"gallery\">",
                g.shown.len(),
                count(g.total),
                html(&format!("{link}{}/", url_path(&g.folder)))
            );
            for v in &g.shown {
                s.push_str("<figure>");
                match &v.qc {
                    Some(t) => {
                        s.push_str(&thumb(t, link, "qc", &format!("QC picture of {}", v.slide)))
                    }
                    None => s.push_str("<span class=\"missing\">no QC picture</span>"),
                }
                let _ = write!(
                    s,
                    "<figcaption>{} \u{b7} {} of {} inner cells kept \u{b7} {}</figcaption></figure>",
                    html(&v.slide),
                    count(v.kept),
                    count(v.cells),
                    plural(v.tiles, "tile")
                );
            }
            s.push_str("</div>");
        }
        s.push_str("</article>\n");
    }
    s.push_str("</section>\n");
}

fn metadata(s: &mut String, c: &CollectionReport) {
    s.push_str("<dl class=\"metadata\">");
    let mut row = |k: &str, v: String| {
        if !v.is_empty() {
            let _ = write!(s, "<dt>{k}</dt><dd>{v}</dd>");
        }
    };
    row("organs", html(&c.organs.join(", ")));
    row("diseases", html(&c.diseases.join(", ")));
    row("stain", html(c.stain.as_deref().unwrap_or("")));
    row("field", html(c.field.as_deref().unwrap_or("")));
    row("year", c.year.map(|y| y.to_string()).unwrap_or_default());
    row("licence", html(c.licence.as_deref().unwrap_or("")));
    row("citation", html(c.citation.as_deref().unwrap_or("")));
    row(
        "download",
        c.url
            .as_deref()
            .map(|u| {
                // Only web links are links: a recipe is text anyone can write.
                if u.starts_with("https://") || u.starts_with("http://") {
                    format!("<a href=\"{0}\">{0}</a>", html(u))
                } else {
                    html(u)
                }
            })
            .unwrap_or_default(),
    );
    row(
        "source",
        format!(
            "<code>{}</code>{}",
            html(&c.source.root),
            c.source
                .reason
                .as_deref()
                .map(|r| format!(": {}", html(r)))
                .unwrap_or_default()
        ),
    );
    row(
        "inputs",
        format!(
            "{} recorded, {} complete under the current recipe",
            count(c.inputs),
            count(c.complete)
        ),
    );
    row(
        "images",
        match c.kind.as_str() {
            "wsi" => format!(
                "{} (+{} QC pictures)",
                count(c.images),
                count(c.qc_pictures)
            ),
            _ => count(c.images),
        },
    );
    s.push_str("</dl>");
}
