//! The published CPIA counts: images per sub-dataset in the paper's tables
//! (three sheets, L, M and S; 273 rows), shipped with cpia so a report can
//! put every built sub-dataset beside its published count without the
//! paper at hand. `published.csv` is the reference's
//! `catalog-counts.csv`, byte for byte (a test keeps them equal).
//!
//! The sheets list the 3840-px WSI sub-datasets under L; cpia writes them to
//! `XL/` (docs/recipes.md, "WSI scales"), so the sheet of a built scale is
//! [`sheet_of`] it: XL and L on sheet L, M and S on their own.

use crate::recipe::Scale;

/// The shipped table.
pub const CSV: &str = include_str!("published.csv");

/// The sheets, in the paper's order.
pub const SHEETS: [&str; 3] = ["L", "M", "S"];

/// One published sub-dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `L`, `M` or `S`.
    pub sheet: String,
    /// `WSIs` or `ROIs`.
    pub data_type: String,
    /// The folder name (`BreaKHis_40x`, `CAM16-3840`): unique across sheets.
    pub sub_dataset: String,
    /// The collection's name in the paper (`Camelyon16`), not always the
    /// catalog's collection name.
    pub original_name: String,
    pub images: u64,
}

/// The sheet on which the paper lists images of scale `scale`.
pub fn sheet_of(scale: Scale) -> &'static str {
    match scale {
        Scale::XL | Scale::L => "L",
        Scale::M => "M",
        Scale::S => "S",
    }
}

/// The rows of the shipped table, in its order.
pub fn rows() -> Vec<Row> {
    parse(CSV).unwrap_or_else(|e| panic!("src/report/published.csv: {e}"))
}

/// Parses the table (RFC 4180: quoted fields may hold commas, `""` is a
/// quote; CRLF or LF line ends). The header must be the reference's.
pub fn parse(text: &str) -> Result<Vec<Row>, String> {
    let mut records = records(text)?.into_iter();
    let header = records.next().ok_or("empty table")?;
    const HEADER: [&str; 5] = [
        "scale_sheet",
        "data_type",
        "sub_dataset",
        "original_name",
        "images",
    ];
    if header != HEADER {
        return Err(format!("header is {header:?}, expected {HEADER:?}"));
    }
    records
        .enumerate()
        .map(|(i, f)| {
            let line = i + 2;
            let [sheet, data_type, sub_dataset, original_name, images] = <[String; 5]>::try_from(f)
                .map_err(|f| format!("line {line}: {} fields, expected 5", f.len()))?;
            let images = images
                .parse()
                .map_err(|_| format!("line {line}: images `{images}` is not a count"))?;
            Ok(Row {
                sheet,
                data_type,
                sub_dataset,
                original_name,
                images,
            })
        })
        .collect()
}

/// Splits CSV text into records of fields.
fn records(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The shipped copy is the reference's table (the published tables: a
    /// need of the tests).
    #[test]
    fn shipped_table_equals_the_reference() {
        let Some(dir) = crate::need::tables() else {
            return;
        };
        let reference = dir.join("catalog-counts.csv");
        let text = std::fs::read_to_string(&reference)
            .unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
        assert!(
            text == CSV,
            "src/report/published.csv differs from {}",
            reference.display()
        );
    }

    #[test]
    fn the_shipped_table_parses_into_unique_sub_datasets() {
        let rows = rows();
        assert_eq!(rows.len(), 273);
        let names: BTreeSet<&str> = rows.iter().map(|r| r.sub_dataset.as_str()).collect();
        assert_eq!(names.len(), rows.len(), "sub-dataset names repeat");
        assert!(rows.iter().all(|r| SHEETS.contains(&r.sheet.as_str())));
        // Quoted names with commas survive, and so does the non-ASCII one.
        let naylor = rows
            .iter()
            .find(|r| r.sub_dataset == "Naylor et al, IEEE TMI 2019")
            .expect("a quoted row");
        assert_eq!(naylor.images, 50);
        assert!(rows.iter().any(|r| r.original_name.contains('（')));
        // 3840-px tiles are on sheet L.
        let cam = rows.iter().find(|r| r.sub_dataset == "CAM16-3840").unwrap();
        assert_eq!((cam.sheet.as_str(), cam.images), ("L", 3122));
        let total: u64 = rows.iter().map(|r| r.images).sum();
        assert!(total > 148_000_000, "{total}");
    }

    #[test]
    fn parse_errors_name_the_line() {
        let h = "scale_sheet,data_type,sub_dataset,original_name,images\n";
        assert!(parse(&format!("{h}M,ROIs,a,b,x\n"))
            .unwrap_err()
            .contains("line 2"));
        assert!(parse(&format!("{h}M,ROIs,a,b\n"))
            .unwrap_err()
            .contains("4 fields"));
        assert!(parse("a,b\n").unwrap_err().contains("header"));
        assert!(parse(&format!("{h}M,ROIs,\"a")).is_err());
        let ok = parse(&format!("{h}M,ROIs,\"a, \"\"b\"\"\",c,7")).unwrap();
        assert_eq!(ok[0].sub_dataset, "a, \"b\"");
        assert_eq!(ok[0].images, 7);
    }
}
