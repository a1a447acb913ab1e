//! Balanced selections: the `sample` rule of an export (CPIA-Mini).
//!
//! ```toml
//! sample = { by = "sub_dataset", cap = 4000, ratios = { XL = 1, L = 16, M = 32, S = 32 }, seed = 0 }
//! ```
//!
//! Samples are grouped into **categories** (`by`: `sub_dataset`, the
//! default; `class`, a sample's class or else its sub-dataset; `collection`;
//! `organ`, its collection's first organ) and scales. Category `c` at scale
//! `s` has a quota `q = cap × ratios[s]` (default ratios XL:L:M:S =
//! 1:16:32:32, the published CPIA-Mini's). With `n` samples in it, a sample
//! is a member when `n ≤ q`, else when `u(seed, key) < q / n`, where `u` is
//! the first 8 bytes of `blake3("cpia sample" ‖ seed ‖ key)` read as a
//! fraction of 2⁶⁴.
//!
//! So membership depends on the sample's key, the seed and its category's
//! size only: adding a collection (new categories) changes no other
//! category's members; a category that grows loses members only where
//! `u` now falls above the lower threshold. A category's count is
//! `min(n, q)` on average, and binomial around it: the documented tolerance
//! is `|count − min(n, q)| ≤ 4·√q + 1` (exceeded with probability below
//! 10⁻⁴ per category).

use std::collections::BTreeMap;

use serde::Serialize;

/// What groups samples into categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    SubDataset,
    Class,
    Collection,
    Organ,
}

impl By {
    fn parse(s: &str) -> Option<By> {
        match s {
            "sub_dataset" => Some(By::SubDataset),
            "class" => Some(By::Class),
            "collection" => Some(By::Collection),
            "organ" => Some(By::Organ),
            _ => None,
        }
    }
}

/// The default scale ratios: the published CPIA-Mini's XL:L:M:S.
pub const DEFAULT_RATIOS: [(&str, u64); 4] = [("XL", 1), ("L", 16), ("M", 32), ("S", 32)];

/// A `sample` rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SampleRule {
    pub by: By,
    /// Samples per category at ratio 1.
    pub cap: u64,
    /// Scale → multiplier of `cap`.
    pub ratios: BTreeMap<String, u64>,
    pub seed: u64,
}

/// What a sample's category is made of.
pub struct SampleFacts<'a> {
    pub scale: &'a str,
    pub sub_dataset: &'a str,
    pub class: Option<&'a str>,
    pub collection: &'a str,
    /// Its collection's first organ.
    pub organ: Option<&'a str>,
}

impl SampleRule {
    /// Parses the `sample` table; errors are (key, message).
    pub fn parse(v: &toml::Value) -> Result<SampleRule, (String, String)> {
        let t = v
            .as_table()
            .ok_or_else(|| (String::new(), "expected a table".to_string()))?;
        let mut rule = SampleRule {
            by: By::SubDataset,
            cap: 0,
            ratios: DEFAULT_RATIOS
                .iter()
                .map(|(s, r)| (s.to_string(), *r))
                .collect(),
            seed: 0,
        };
        let whole = |k: &str, v: &toml::Value| {
            v.as_integer()
                .filter(|n| *n >= 0)
                .map(|n| n as u64)
                .ok_or_else(|| (k.to_string(), "expected a whole number ≥ 0".to_string()))
        };
        for (k, v) in t {
            match k.as_str() {
                "by" => {
                    rule.by = v.as_str().and_then(By::parse).ok_or_else(|| {
                        (
                            k.clone(),
                            "one of sub_dataset, class, collection, organ".to_string(),
                        )
                    })?
                }
                "cap" => rule.cap = whole(k, v)?,
                "seed" => rule.seed = whole(k, v)?,
                "ratios" => {
                    let r = v
                        .as_table()
                        .ok_or_else(|| (k.clone(), "expected a table of scales".to_string()))?;
                    rule.ratios.clear();
                    for (s, n) in r {
                        let scale = crate::recipe::Scale::parse(s).ok_or_else(|| {
                            (
                                format!("ratios.{s}"),
                                "not a scale (XL, L, M, S)".to_string(),
                            )
                        })?;
                        rule.ratios
                            .insert(scale.dir().to_string(), whole(&format!("ratios.{s}"), n)?);
                    }
                }
                _ => {
                    return Err((
                        k.clone(),
                        "unknown key (known: by, cap, ratios, seed)".to_string(),
                    ))
                }
            }
        }
        if rule.cap == 0 {
            return Err((
                "cap".into(),
                "missing or 0: samples per category at ratio 1".into(),
            ));
        }
        Ok(rule)
    }

    /// The category of a sample (without its scale).
    pub fn category(&self, f: &SampleFacts<'_>) -> String {
        match self.by {
            By::SubDataset => f.sub_dataset.to_string(),
            By::Class => f.class.unwrap_or(f.sub_dataset).to_string(),
            By::Collection => f.collection.to_string(),
            By::Organ => f.organ.unwrap_or("(no organ)").to_string(),
        }
    }

    /// The quota of a category at `scale`.
    pub fn quota(&self, scale: &str) -> u64 {
        self.cap
            .saturating_mul(self.ratios.get(scale).copied().unwrap_or(0))
    }

    /// Whether the sample with `key`, in a category of `size` samples at
    /// `scale`, is a member.
    pub fn admits(&self, key: &str, scale: &str, size: u64) -> bool {
        let q = self.quota(scale);
        if size <= q {
            return true;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"cpia sample\0");
        h.update(&self.seed.to_le_bytes());
        h.update(key.as_bytes());
        let b = h.finalize();
        let mut u = [0u8; 8];
        u.copy_from_slice(&b.as_bytes()[..8]);
        // u < q / n, exactly: u·n < q·2⁶⁴.
        u128::from(u64::from_le_bytes(u)) * u128::from(size) < u128::from(q) << 64
    }

    /// The documented tolerance of a category's count around `min(n, q)`.
    pub fn tolerance(&self, scale: &str) -> f64 {
        4.0 * (self.quota(scale) as f64).sqrt() + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(cap: u64) -> SampleRule {
        let v: toml::Table = toml::from_str(&format!("cap = {cap}\nseed = 7")).unwrap();
        SampleRule::parse(&toml::Value::Table(v)).unwrap()
    }

    #[test]
    fn counts_stay_within_the_tolerance_and_small_categories_are_whole() {
        let r = rule(50);
        for (scale, n) in [("XL", 10_000u64), ("L", 20_000), ("M", 3_000), ("S", 1_000)] {
            let count = (0..n)
                .filter(|i| r.admits(&format!("{scale}/x/{i}"), scale, n))
                .count() as f64;
            let want = r.quota(scale).min(n) as f64;
            assert!(
                (count - want).abs() <= r.tolerance(scale),
                "{scale}: {count} of {n}, quota {want}"
            );
        }
        assert!((0..40).all(|i| r.admits(&format!("XL/y/{i}"), "XL", 40)));
    }

    #[test]
    fn membership_depends_on_key_seed_and_size_only() {
        let r = rule(10);
        let members = |size| {
            (0..500)
                .filter(|i| r.admits(&format!("M/z/{i}"), "M", size))
                .collect::<Vec<_>>()
        };
        assert_eq!(members(500), members(500));
        // A larger category keeps a subset of the smaller one's members.
        let small: std::collections::HashSet<_> = members(500).into_iter().collect();
        assert!(members(1000).iter().all(|m| small.contains(m)));
    }

    #[test]
    fn bad_rules_name_their_key() {
        for (text, key) in [
            ("by = 'x'\ncap = 1", "by"),
            ("seed = 1", "cap"),
            ("cap = 1\nratios = { XXL = 1 }", "ratios.XXL"),
            ("cap = 1\nfoo = 1", "foo"),
        ] {
            let v: toml::Table = toml::from_str(text).unwrap();
            let (k, _) = SampleRule::parse(&toml::Value::Table(v)).unwrap_err();
            assert_eq!(k, key, "{text}");
        }
    }
}
