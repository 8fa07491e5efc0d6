//! A user's labelled texts from a CSV file: one column of text, one of labels, named by the
//! caller (`--text-column`, `--label-column`); the first line is the header.
//!
//! Labels are either all integer class ids 0 … C−1 (decided by the first row: if its label
//! is an integer, every label must be one) or all names, which get ids in alphabetical order.
//! The texts are split into training and validation sets by a seeded shuffle, the vocabulary
//! is built from the *training* texts only (so validation words the model never saw count as
//! unknown, as they would for new data), and every text is encoded and padded/truncated to T.
//!
//! Every problem with the file is one error line naming the file and, where there is one, the
//! line number: an empty file, a missing column (listing the columns there are), a row with
//! the wrong number of fields, an empty or non-integer label, invalid UTF-8, too few rows.

use super::tokenizer::{Vocabulary, tokenize};
use super::{Dataset, Side, pad_to, shuffled};
use anyhow::{Context, Result, anyhow, bail};
use ndarray::{Array1, Array2};
use std::collections::BTreeSet;
use std::path::Path;

/// How to read and encode the file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CsvOptions {
    /// Header name of the text column.
    pub text_column: String,
    /// Header name of the label column.
    pub label_column: String,
    /// Vocabulary size V (ids 0 … V−1, 0 = padding, 1 = unknown).
    pub vocab: usize,
    /// Length T every text is padded or truncated to.
    pub seq_len: usize,
    pub padding: Side,
    pub truncating: Side,
    /// Share of the rows held out for validation.
    pub validation_split: f64,
    /// Seed of the train/validation shuffle.
    pub seed: u64,
}

/// The raw rows of a file: texts and labels as written, with their line numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    pub texts: Vec<String>,
    pub labels: Vec<String>,
    /// Line of each row in the file (1 = the header).
    pub lines: Vec<u64>,
}

/// Reads the two columns of `path`.
pub fn read_rows(path: &Path, text_column: &str, label_column: &str) -> Result<Rows> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {shown}"))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        bail!(
            "{shown} is empty: expected a header line naming the columns `{text_column}` and `{label_column}`, then one row per text"
        );
    }
    let mut reader = csv::ReaderBuilder::new().from_reader(bytes.as_slice());
    let header = reader
        .headers()
        .map_err(|e| anyhow!("{shown}: line 1: {}", csv_problem(&e)))?
        .clone();
    let column = |name: &str, flag: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            anyhow!(
                "{shown}: line 1: no column `{name}` (given by {flag}); the header has {}",
                header
                    .iter()
                    .map(|h| format!("`{h}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    };
    let text_col = column(text_column, "--text-column")?;
    let label_col = column(label_column, "--label-column")?;
    let mut rows = Rows {
        texts: Vec::new(),
        labels: Vec::new(),
        lines: Vec::new(),
    };
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e
                .position()
                .map_or(String::new(), |p| format!("line {}: ", p.line()));
            anyhow!("{shown}: {line}{}", csv_problem(&e))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        rows.texts.push(record[text_col].to_string());
        rows.labels.push(record[label_col].trim().to_string());
        rows.lines.push(line);
    }
    if rows.texts.is_empty() {
        bail!("{shown} has a header but no rows: expected one row per text");
    }
    Ok(rows)
}

/// The part of a csv error a user needs.
fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "this row has {len} field(s) but the header has {expected_len} (a comma inside a text needs the text in double quotes)"
        ),
        csv::ErrorKind::Utf8 { .. } => "the text is not valid UTF-8".to_string(),
        _ => e.to_string(),
    }
}

/// Class ids for the labels and the class names (index = id). Integer labels are ids
/// (names "0" … "C−1"); other labels are names, numbered alphabetically.
pub fn class_ids(rows: &Rows, path: &Path) -> Result<(Vec<i64>, Vec<String>)> {
    let shown = path.display();
    if let Some(k) = rows.labels.iter().position(String::is_empty) {
        bail!("{shown}: line {}: the label is empty", rows.lines[k]);
    }
    let integer = rows.labels[0].parse::<i64>().is_ok();
    if integer {
        let mut ids = Vec::with_capacity(rows.labels.len());
        for (label, line) in rows.labels.iter().zip(&rows.lines) {
            match label.parse::<i64>() {
                Ok(id) if (0..1_000_000).contains(&id) => ids.push(id),
                _ => bail!(
                    "{shown}: line {line}: label `{label}` is not a class id: the labels of this file are integers (the first row's is `{}`), so every label must be an integer 0, 1, 2, …",
                    rows.labels[0]
                ),
            }
        }
        let classes = *ids.iter().max().expect("at least one row") as usize + 1;
        if classes < 2 {
            bail!("{shown}: every label is 0: a classifier needs at least two classes");
        }
        Ok((ids, (0..classes).map(|c| c.to_string()).collect()))
    } else {
        let names: Vec<String> = rows
            .labels
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if names.len() < 2 {
            bail!(
                "{shown}: every label is `{}`: a classifier needs at least two classes",
                names[0]
            );
        }
        let ids = rows
            .labels
            .iter()
            .map(|l| names.binary_search(l).expect("collected from the labels") as i64)
            .collect();
        Ok((ids, names))
    }
}

/// A CSV file ready for training.
#[derive(Clone, Debug)]
pub struct TextData {
    pub train: Dataset,
    pub validation: Dataset,
    pub vocabulary: Vocabulary,
    /// Class names, index = class id.
    pub class_names: Vec<String>,
    /// Texts longer than T (truncated).
    pub truncated: usize,
    /// Share of the validation set's words that are unknown.
    pub validation_unknown: f64,
}

/// Reads, splits, builds the vocabulary on the training part and encodes `path`.
pub fn load(path: &Path, opts: &CsvOptions) -> Result<TextData> {
    if opts.vocab < 3 {
        bail!(
            "--vocab {} is invalid: it must be at least 3 (padding, unknown and one word)",
            opts.vocab
        );
    }
    if opts.seq_len == 0 {
        bail!("--seq-len 0 is invalid: it must be at least 1");
    }
    let rows = read_rows(path, &opts.text_column, &opts.label_column)?;
    let (labels, class_names) = class_ids(&rows, path)?;
    let n = rows.texts.len();
    let n_val = ((n as f64 * opts.validation_split).round() as usize).max(1);
    if !(opts.validation_split > 0.0 && opts.validation_split < 1.0) || n_val >= n {
        bail!(
            "{}: {n} rows cannot be split with --validation-split {}: it must be between 0 and 1 and leave rows on both sides",
            path.display(),
            opts.validation_split
        );
    }
    let order = shuffled(n, opts.seed);
    let (train_idx, val_idx) = order.split_at(n - n_val);
    let tokens: Vec<Vec<String>> = rows.texts.iter().map(|t| tokenize(t)).collect();
    let vocabulary = Vocabulary::build(train_idx.iter().map(|&i| tokens[i].as_slice()), opts.vocab);
    let truncated = tokens.iter().filter(|t| t.len() > opts.seq_len).count();
    let encode = |idx: &[usize]| {
        let mut ids = Array2::zeros((idx.len(), opts.seq_len));
        for (mut row, &i) in ids.rows_mut().into_iter().zip(idx) {
            let padded = pad_to(
                &vocabulary.encode(&tokens[i]),
                opts.seq_len,
                opts.padding,
                opts.truncating,
            );
            row.iter_mut().zip(padded).for_each(|(d, v)| *d = v);
        }
        Dataset {
            ids,
            labels: idx.iter().map(|&i| labels[i]).collect::<Array1<i64>>(),
            key_distance: None,
            vocab: opts.vocab,
            classes: class_names.len(),
        }
    };
    let (unknown, words) = val_idx
        .iter()
        .flat_map(|&i| vocabulary.encode(&tokens[i]))
        .fold((0usize, 0usize), |(u, n), id| {
            (u + usize::from(id == super::UNK), n + 1)
        });
    Ok(TextData {
        train: encode(train_idx),
        validation: encode(val_idx),
        vocabulary,
        class_names,
        truncated,
        validation_unknown: unknown as f64 / words.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn opts() -> CsvOptions {
        CsvOptions {
            text_column: "text".into(),
            label_column: "label".into(),
            vocab: 20,
            seq_len: 4,
            padding: Side::Pre,
            truncating: Side::Pre,
            validation_split: 0.25,
            seed: 1,
        }
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(file(text).path(), &opts()).unwrap_err())
    }

    #[test]
    fn reads_names_and_integer_labels() {
        let f = file(
            "id,text,label\n1,\"Good, very good\",pos\n2,bad bad,neg\n3,good,pos\n4,so bad,neg\n",
        );
        let d = load(f.path(), &opts()).unwrap();
        assert_eq!(d.class_names, vec!["neg", "pos"]);
        assert_eq!((d.train.len(), d.validation.len()), (3, 1));
        assert_eq!(d.train.seq_len(), 4);
        let f = file("text,label\na,0\nb,2\nc,1\nd,1\n");
        let d = load(f.path(), &opts()).unwrap();
        assert_eq!(d.class_names, vec!["0", "1", "2"]);
    }

    #[test]
    fn malformed_files_get_one_clear_line_with_the_line_number() {
        assert!(err("").contains("is empty"), "{}", err(""));
        assert!(err("text,label\n").contains("has a header but no rows"));
        let e = err("txt,label\na,0\n");
        assert!(
            e.contains("line 1: no column `text`") && e.contains("`txt`, `label`"),
            "{e}"
        );
        let e = err("text,label\na,0\nb,1\nc,x\n");
        assert!(e.contains("line 4: label `x` is not a class id"), "{e}");
        let e = err("text,label\na,0\nb,\n");
        assert!(e.contains("line 3: the label is empty"), "{e}");
        let e = err("text,label\na,0\nb,1,extra\n");
        assert!(
            e.contains("line 3: this row has 3 field(s) but the header has 2"),
            "{e}"
        );
        let e = err("text,label\na,0\nb,0\n");
        assert!(e.contains("at least two classes"), "{e}");
        for e in [err(""), err("text,label\na,0\nb,1,extra\n")] {
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
