//! Small formatting helpers shared by the renderers: counts with thousands
//! separators, signed differences, UTC dates, HTML escaping and relative
//! links.

use std::path::{Component, Path};

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `-1234` → `−1,234`, `5` → `+5`, `0` → `0` (a real minus sign).
pub fn signed(n: i64) -> String {
    match n.signum() {
        0 => "0".into(),
        1 => format!("+{}", count(n as u64)),
        _ => format!("\u{2212}{}", count(n.unsigned_abs())),
    }
}

/// `part` as a percentage of `whole` with one decimal (`—` for 0 of 0).
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "\u{2014}".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 0.1 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

/// Seconds since the epoch as `2026-01-31 14:05 UTC`.
pub fn utc(secs: i64) -> String {
    let (year, month, day, hour, minute, _) = crate::civil_time::utc(secs);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// `#3 started 2026-01-31 14:05 UTC, finished …: built 12, up to date 3, removed 0, failed 1`.
pub fn build(b: &super::model::Build) -> String {
    format!(
        "#{} started {}{}: built {}, up to date {}, removed {}, failed {}",
        b.id,
        utc(b.started),
        b.finished.map_or(", did not finish".into(), |f| format!(
            ", finished {}",
            utc(f)
        )),
        count(b.built),
        count(b.up_to_date),
        count(b.removed),
        count(b.failed)
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a relative path for an `href`/`src` (each component's
/// bytes outside the unreserved set, so `#`, `?`, `%` and spaces in
/// sub-dataset names stay part of the path).
pub fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The path from folder `from` to `to` (both absolute, compared
/// lexically), `/`-separated, ending in `/` when not empty: the prefix that
/// turns a path relative to `to` into one relative to `from`.
pub fn relative_prefix(from: &Path, to: &Path) -> String {
    let parts = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => v.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    v.pop();
                }
                _ => {}
            }
        }
        v
    };
    let (a, b) = (parts(from), parts(to));
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = String::new();
    for _ in common..a.len() {
        out.push_str("../");
    }
    for part in &b[common..] {
        out.push_str(part);
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_differences() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(148_962_586), "148,962,586");
        assert_eq!(signed(-1234), "\u{2212}1,234");
        assert_eq!(signed(5), "+5");
        assert_eq!(signed(0), "0");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(percent(1, 1_000_000), "<0.1%");
        assert_eq!(percent(0, 0), "\u{2014}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc(-86_400), "1969-12-31 00:00 UTC");
    }

    #[test]
    fn escaping_and_links() {
        assert_eq!(
            html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(
            url_path("M/Monuseg_train&test/a b#1.jpg"),
            "M/Monuseg_train%26test/a%20b%231.jpg"
        );
        assert_eq!(url_path("S/P_vivax（x）"), "S/P_vivax%EF%BC%88x%EF%BC%89");
        let p = |a: &str, b: &str| relative_prefix(Path::new(a), Path::new(b));
        assert_eq!(p("/w/dataset", "/w/dataset"), "");
        assert_eq!(p("/w", "/w/dataset"), "dataset/");
        assert_eq!(p("/w/reports", "/w/dataset"), "../dataset/");
        assert_eq!(p("/w/a/../reports", "/data/out"), "../../data/out/");
    }
}
