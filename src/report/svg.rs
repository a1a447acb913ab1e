//! Inline SVG charts: a horizontal bar chart of built and published images
//! per value of a metadata field. Plain SVG (no script, no fonts to fetch),
//! so the page draws the same offline.

use std::fmt::Write;

use super::format::{count, html};
use super::model::Breakdown;

const WIDTH: f64 = 560.0;
const LABEL: f64 = 170.0;
const VALUES: f64 = 92.0;
const ROW: f64 = 30.0;
const BAR: f64 = 10.0;
const TOP: f64 = 22.0;

/// A grouped bar chart of `b`: per value a published bar (grey) above a
/// built bar (blue), both on one linear scale, with their counts.
pub fn bars(b: &Breakdown) -> String {
    let max = b
        .bars
        .iter()
        .map(|x| x.published.max(x.built))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let span = WIDTH - LABEL - VALUES;
    let height = TOP + ROW * b.bars.len() as f64 + 6.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" aria-label="images by {by}"><title>Images by {by}: built and published</title>"#,
        by = html(&b.by),
    );
    let _ = write!(
        s,
        r#"<g class="legend"><rect x="{LABEL}" y="4" width="10" height="10" class="pub"/><text x="{}" y="13">published</text><rect x="{}" y="4" width="10" height="10" class="built"/><text x="{}" y="13">built</text></g>"#,
        LABEL + 14.0,
        LABEL + 90.0,
        LABEL + 104.0
    );
    for (i, bar) in b.bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let w = |n: u64| {
            let w = n as f64 / max * span;
            if n > 0 {
                w.max(1.0)
            } else {
                0.0
            }
        };
        let label = truncate(&bar.label, 26);
        let _ = write!(
            s,
            r#"<g class="row"><title>{title}: {colls} collection(s), {built} built, {published} published</title><text class="label" x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect class="pub" x="{LABEL}" y="{y1}" width="{pw:.1}" height="{BAR}"/><rect class="built" x="{LABEL}" y="{y2}" width="{bw:.1}" height="{BAR}"/><text class="value" x="{px:.1}" y="{ty1}">{published}</text><text class="value" x="{bx:.1}" y="{ty2}">{built}</text></g>"#,
            title = html(&bar.label),
            colls = bar.collections,
            built = count(bar.built),
            published = count(bar.published),
            lx = LABEL - 6.0,
            ty = y + BAR + 4.0,
            label = html(&label),
            y1 = y + 2.0,
            y2 = y + 2.0 + BAR,
            pw = w(bar.published),
            bw = w(bar.built),
            px = LABEL + w(bar.published) + 4.0,
            bx = LABEL + w(bar.built) + 4.0,
            ty1 = y + 2.0 + BAR - 1.0,
            ty2 = y + 2.0 + 2.0 * BAR - 1.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// At most `n` characters, with an ellipsis when cut.
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('\u{2026}');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model::Bar;

    #[test]
    fn bars_scale_to_the_largest_value_and_escape_labels() {
        let b = Breakdown {
            by: "organ".into(),
            bars: vec![
                Bar {
                    label: "breast & <lymph>".into(),
                    collections: 2,
                    built: 50_000,
                    published: 100_000,
                },
                Bar {
                    label: "a very long organ name that goes on".into(),
                    collections: 1,
                    built: 0,
                    published: 1,
                },
            ],
        };
        let svg = bars(&b);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("breast &amp; &lt;lymph&gt;"));
        assert!(!svg.contains("<lymph>"));
        let span = WIDTH - LABEL - VALUES;
        assert!(
            svg.contains(&format!(r#"width="{span:.1}" height="10""#)),
            "{svg}"
        );
        assert!(svg.contains(&format!(r#"width="{:.1}" height="10""#, span / 2.0)));
        // Non-zero but tiny values stay visible; zero stays zero.
        assert!(svg.contains(r#"width="1.0" height="10""#));
        assert!(svg.contains(r#"width="0.0" height="10""#));
        assert!(svg.contains("a very long organ name th\u{2026}"));
        // Well-formed enough for an XML parser: balanced tags.
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    }
}
