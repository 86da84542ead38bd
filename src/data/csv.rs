//! A CSV table of numeric features with a label column.
//!
//! Comma-separated, one sample per line, blank lines skipped. A first line with a field that is
//! not a number is a header. The label column is the one a header names `label` (any case),
//! else the last. Features are finite numbers, used as they are (`f32`). Labels are class
//! indices (integers from 0), or else class names: when
//! any label of the training file is not an integer, every distinct label is a name, and the
//! classes are the names sorted (the test file uses the training file's classes).

use std::path::Path;

use super::{Dataset, SampleShape, Splits};
use crate::{Error, Result};

/// One parsed file: the features, the label column's text, and the feature count.
struct Table {
    features: Vec<f32>,
    labels: Vec<String>,
    width: usize,
    /// Line number (1-based) of each sample, for errors.
    lines: Vec<usize>,
}

fn is_number(s: &str) -> bool {
    s.trim().parse::<f64>().is_ok()
}

fn read_table(path: &Path) -> Result<Table> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .peekable();
    let Some(&(_, first)) = rows.peek() else {
        return Err(Error::bad_data(path, "holds no rows"));
    };
    let header: Option<Vec<String>> = if first.split(',').any(|f| !is_number(f)) {
        let h = first.split(',').map(|f| f.trim().to_string()).collect();
        rows.next();
        Some(h)
    } else {
        None
    };
    let cols = match &header {
        Some(h) => h.len(),
        None => first.split(',').count(),
    };
    if cols < 2 {
        return Err(Error::bad_data(
            path,
            "has fewer than two columns (features and a label)",
        ));
    }
    let label_col = header
        .as_ref()
        .and_then(|h| h.iter().position(|f| f.eq_ignore_ascii_case("label")))
        .unwrap_or(cols - 1);
    let mut t = Table {
        features: Vec::new(),
        labels: Vec::new(),
        width: cols - 1,
        lines: Vec::new(),
    };
    for (i, line) in rows {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols {
            return Err(Error::bad_data(
                path,
                format!(
                    "line {} has {} fields but the first row has {cols}",
                    i + 1,
                    fields.len()
                ),
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            if j == label_col {
                t.labels.push(f.to_string());
                continue;
            }
            let v = f
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    Error::bad_data(
                        path,
                        format!(
                            "line {} column {}: `{f}` is not a finite number",
                            i + 1,
                            j + 1
                        ),
                    )
                })?;
            t.features.push(v);
        }
        t.lines.push(i + 1);
    }
    if t.labels.is_empty() {
        return Err(Error::bad_data(path, "holds a header but no rows"));
    }
    Ok(t)
}

/// The class index of each label: integers as they are, or names looked up in `names`.
fn indices(t: &Table, names: &[String], path: &Path) -> Result<Vec<u32>> {
    t.labels
        .iter()
        .zip(&t.lines)
        .map(|(l, line)| {
            if names.is_empty() {
                l.parse::<u32>().map_err(|_| {
                    Error::bad_data(
                        path,
                        format!("line {line}: label `{l}` is not a class index (an integer from 0) like the training file's"),
                    )
                })
            } else {
                names.iter().position(|n| n == l).map(|k| k as u32).ok_or_else(|| {
                    Error::bad_data(
                        path,
                        format!("line {line}: label `{l}` is not one of the training file's classes"),
                    )
                })
            }
        })
        .collect()
}

/// Load a training table and, optionally, a test table with the same columns.
pub fn load(train: &Path, test: Option<&Path>) -> Result<Splits> {
    let tr = read_table(train)?;
    let names: Vec<String> = if tr.labels.iter().all(|l| l.parse::<u32>().is_ok()) {
        Vec::new()
    } else {
        let mut n = tr.labels.clone();
        n.sort();
        n.dedup();
        n
    };
    let shape = SampleShape::Flat(tr.width);
    let labels = indices(&tr, &names, train)?;
    let train_set = Dataset::from_f32(shape, &tr.features, labels)?;
    let test_set = match test {
        Some(p) => {
            let te = read_table(p)?;
            if te.width != tr.width {
                return Err(Error::bad_data(
                    p,
                    format!(
                        "has {} features a row but {} has {}",
                        te.width,
                        train.display(),
                        tr.width
                    ),
                ));
            }
            let labels = indices(&te, &names, p)?;
            Some(Dataset::from_f32(shape, &te.features, labels)?)
        }
        None => None,
    };
    Splits::new(train_set, test_set, names, train)
}
