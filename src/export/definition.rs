//! Export definitions: `[export.NAME]` in `cpia.toml`, or the options of
//! `cpia export --format F` (an export made without one).
//!
//! ```toml
//! [export.pretrain]
//! format = "webdataset"          # webdataset | imagefolder | parquet
//! select = { scales = ["L", "M"], sub_datasets = ["..."], collections = ["..."], organs = ["..."] }
//! shard_samples = 10000          # or shard_bytes = "1G": a target, not a hard cut
//! sample = { by = "sub_dataset", cap = 1000, ratios = { XL = 1, L = 16, M = 32, S = 32 }, seed = 0 }
//! ```
//!
//! A definition is checked whole when it is read: an unknown key, a format
//! or scale that does not exist, a name that is not one safe path
//! component, both shard targets — each is an error naming `cpia.toml`, the
//! export and the key.

use std::collections::BTreeMap;

use serde::Serialize;

use super::sample::SampleRule;
use super::Error;

/// The shard target used when a definition gives none.
pub const DEFAULT_SHARD_SAMPLES: u64 = 10_000;

/// What an export writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tar shards of `<key>.jpg` + `<key>.json`, a `wids` index.
    WebDataset,
    /// `<class or sub-dataset>/<file>.jpg`, hard links or copies.
    ImageFolder,
    /// Parquet image shards (`data/<name>-<NNNNNN>.parquet`).
    Parquet,
}

impl Format {
    /// The name used in `cpia.toml` and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::WebDataset => "webdataset",
            Format::ImageFolder => "imagefolder",
            Format::Parquet => "parquet",
        }
    }

    /// Parses a format name.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "webdataset" => Some(Format::WebDataset),
            "imagefolder" => Some(Format::ImageFolder),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// Whether samples are grouped into shard files.
    pub fn sharded(self) -> bool {
        self != Format::ImageFolder
    }
}

/// Which outputs an export takes; every non-empty list must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Select {
    pub scales: Vec<String>,
    pub sub_datasets: Vec<String>,
    pub collections: Vec<String>,
    pub organs: Vec<String>,
}

/// A shard's target size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Samples(u64),
    Bytes(u64),
}

/// One export's definition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Definition {
    pub name: String,
    pub format: Format,
    pub select: Select,
    pub target: Target,
    pub sample: Option<SampleRule>,
    /// Written in `cpia.toml` (false: made by `cpia export --format`).
    #[serde(skip)]
    pub declared: bool,
}

impl Definition {
    /// The canonical JSON recorded in the state (keys in a fixed order).
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An export of everything, made on the command line.
    pub fn ad_hoc(name: &str, format: Format, target: Target) -> Result<Definition, Error> {
        check_name(name).map_err(|e| Error::Definition(format!("--name {name}: {e}")))?;
        Ok(Definition {
            name: name.to_string(),
            format,
            select: Select::default(),
            target,
            sample: None,
            declared: false,
        })
    }

    /// Reads a definition back from its canonical JSON (an export made on
    /// the command line, brought up to date again).
    pub fn from_canonical(json: &str, declared: bool) -> Result<Definition, Error> {
        let mut v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::Definition(format!("a recorded definition: {e}")))?;
        // TOML has no null: an absent rule is an absent key.
        if let Some(o) = v.as_object_mut() {
            o.retain(|_, x| !x.is_null());
        }
        let toml_value: toml::Value = serde_json::from_value(v.clone())
            .map_err(|e| Error::Definition(format!("a recorded definition: {e}")))?;
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let mut t = toml_value
            .as_table()
            .cloned()
            .ok_or_else(|| Error::Definition("a recorded definition: not an object".into()))?;
        t.remove("name");
        match t.remove("target") {
            Some(toml::Value::Table(tt)) => {
                for (k, v) in tt {
                    t.insert(format!("shard_{k}"), v);
                }
            }
            _ => return Err(Error::Definition("a recorded definition: no target".into())),
        }
        let mut d = parse(&name, &toml::Value::Table(t), "the build state")?;
        d.declared = declared;
        Ok(d)
    }
}

/// Every `[export.NAME]` of the workspace, checked.
pub fn declared(
    tables: &BTreeMap<String, toml::Value>,
    config: &str,
) -> Result<Vec<Definition>, Error> {
    tables.iter().map(|(n, v)| parse(n, v, config)).collect()
}

/// An export's name: one safe path component of letters, digits, `-`, `_`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("an export's name is 1 to 64 letters, digits, `-` or `_` (it names a folder and its files)".into())
    }
}

/// Parses `[export.NAME]` (`where`: the file, for messages).
pub fn parse(name: &str, v: &toml::Value, place: &str) -> Result<Definition, Error> {
    let err = |key: &str, msg: String| {
        Error::Definition(format!("{place}: [export.{name}] `{key}`: {msg}"))
    };
    check_name(name).map_err(|e| Error::Definition(format!("{place}: [export.{name}]: {e}")))?;
    let t = v
        .as_table()
        .ok_or_else(|| err("", "expected a table".into()))?;
    const KEYS: [&str; 5] = ["format", "select", "shard_samples", "shard_bytes", "sample"];
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(err(k, format!("unknown key (known: {})", KEYS.join(", "))));
    }
    let format = match t.get("format") {
        Some(toml::Value::String(f)) => Format::parse(f).ok_or_else(|| {
            err(
                "format",
                format!("`{f}` is not a format (webdataset, imagefolder or parquet)"),
            )
        })?,
        Some(_) => return Err(err("format", "expected a string".into())),
        None => {
            return Err(err(
                "format",
                "missing (webdataset, imagefolder or parquet)".into(),
            ))
        }
    };
    let select = match t.get("select") {
        None => Select::default(),
        Some(v) => parse_select(v).map_err(|(k, m)| err(&format!("select.{k}"), m))?,
    };
    let target = match (t.get("shard_samples"), t.get("shard_bytes")) {
        (Some(_), Some(_)) => {
            return Err(err(
                "shard_bytes",
                "give shard_samples or shard_bytes, not both".into(),
            ))
        }
        (Some(toml::Value::Integer(n)), None) if *n >= 1 => Target::Samples(*n as u64),
        (Some(_), None) => return Err(err("shard_samples", "expected a whole number ≥ 1".into())),
        (None, Some(v)) => Target::Bytes(parse_bytes(v).map_err(|m| err("shard_bytes", m))?),
        (None, None) => Target::Samples(DEFAULT_SHARD_SAMPLES),
    };
    let sample = match t.get("sample") {
        None => None,
        Some(v) => Some(SampleRule::parse(v).map_err(|(k, m)| err(&format!("sample.{k}"), m))?),
    };
    Ok(Definition {
        name: name.to_string(),
        format,
        select,
        target,
        sample,
        declared: true,
    })
}

/// A size such as `"1G"` or a number of bytes (at least 1 MiB).
pub fn parse_bytes(v: &toml::Value) -> Result<u64, String> {
    match v {
        toml::Value::String(s) => crate::workspace::parse_size(s),
        toml::Value::Integer(n) if *n >= 1 << 20 => Ok(*n as u64),
        toml::Value::Integer(_) => Err("at least 1M".into()),
        _ => Err("a size such as \"1G\" or \"512M\"".into()),
    }
}

fn parse_select(v: &toml::Value) -> Result<Select, (String, String)> {
    let t = v
        .as_table()
        .ok_or_else(|| (String::new(), "expected a table".to_string()))?;
    let mut s = Select::default();
    for (k, v) in t {
        let list: Vec<String> = v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| (k.clone(), "expected a list of strings".to_string()))?;
        match k.as_str() {
            "scales" => {
                for sc in &list {
                    match crate::recipe::Scale::parse(sc) {
                        Some(scale) => s.scales.push(scale.dir().to_string()),
                        None => {
                            return Err((k.clone(), format!("`{sc}` is not a scale (XL, L, M, S)")))
                        }
                    }
                }
            }
            "sub_datasets" => s.sub_datasets = list,
            "collections" => s.collections = list,
            "organs" => s.organs = list,
            _ => {
                return Err((
                    k.clone(),
                    "unknown key (known: scales, sub_datasets, collections, organs)".into(),
                ))
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> Result<Definition, Error> {
        let v: toml::Table = toml::from_str(text).unwrap();
        parse("pretrain", &toml::Value::Table(v), "cpia.toml")
    }

    #[test]
    fn a_full_definition_reads_back_from_its_canonical_form() {
        let d = def(r#"format = "webdataset"
               select = { scales = ["L", "M"], collections = ["BreakHis"] }
               shard_bytes = "1G"
               sample = { by = "sub_dataset", cap = 10 }"#)
        .unwrap();
        assert_eq!(d.format, Format::WebDataset);
        assert_eq!(d.target, Target::Bytes(1 << 30));
        assert_eq!(d.select.scales, ["L", "M"]);
        let back = Definition::from_canonical(&d.canonical(), true).unwrap();
        assert_eq!(back, d);
        let adhoc =
            Definition::ad_hoc("webdataset", Format::WebDataset, Target::Samples(5)).unwrap();
        let back = Definition::from_canonical(&adhoc.canonical(), false).unwrap();
        assert_eq!(back, adhoc);
    }

    #[test]
    fn bad_definitions_name_the_export_and_the_key() {
        for (text, want) in [
            (r#"format = "zip""#, "`format`: `zip` is not a format"),
            (r#"select = {}"#, "`format`: missing"),
            (
                r#"format = "webdataset"
                shard_samples = 5
                shard_bytes = "1G""#,
                "not both",
            ),
            (
                r#"format = "webdataset"
                select = { scales = ["XXL"] }"#,
                "`select.scales`: `XXL` is not a scale",
            ),
            (
                r#"format = "webdataset"
                shards = 3"#,
                "`shards`: unknown key",
            ),
            (
                r#"format = "webdataset"
                shard_samples = 0"#,
                "`shard_samples`",
            ),
        ] {
            let e = def(text).expect_err(text).to_string();
            assert!(e.contains("cpia.toml: [export.pretrain]"), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
        let v = toml::Value::Table(toml::from_str(r#"format = "webdataset""#).unwrap());
        let e = parse("../x", &v, "cpia.toml").err().unwrap().to_string();
        assert!(e.contains("1 to 64 letters"), "{e}");
    }
}
