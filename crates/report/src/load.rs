//! Reading result files: the summary JSON of `simulate`/`batch` (a `results` array of rows), a
//! bare JSON array of rows, or JSONL with one row per line (`batch`'s `results.jsonl`).

use std::path::Path;

use serde_json::Value;

use crate::error::ReportError;

/// Read the result rows of `path`.
///
/// Accepted shapes: `{"results": [row, ...], ...}` (the summary of `simulate` and `batch`),
/// `[row, ...]`, and JSONL (one row object per line; blank lines are skipped). A JSONL file
/// whose last line is cut off without a newline (a `batch` run killed mid-write) loses that
/// line, as `batch` itself does on resume; any other bad line is an error naming `path:line`.
///
/// `simulate`'s summary keeps the trace once at the top (`input.path`); its rows get it as
/// `trace` so that reports can say which trace a row is about.
pub fn load_results(path: &Path) -> Result<Vec<Value>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let rows = parse_results(&text, path)?;
    if rows.is_empty() {
        return Err(ReportError::Format {
            path: path.into(),
            reason: "no result rows in this file (expected a `results` array or JSONL rows)".into(),
        });
    }
    Ok(rows)
}

fn parse_results(text: &str, path: &Path) -> Result<Vec<Value>, ReportError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut doc)) => match doc.remove("results") {
            Some(Value::Array(rows)) => {
                // `simulate` writes `"input": {"path": ..., "format": ..., ...}`
                let input = doc
                    .get("input")
                    .and_then(|i| i.as_str().or_else(|| i.get("path")?.as_str()))
                    .map(String::from);
                let mut rows = check_objects(rows, path, "results")?;
                if let Some(input) = input {
                    for row in &mut rows {
                        if let Value::Object(m) = row {
                            m.entry("trace")
                                .or_insert_with(|| Value::String(input.clone()));
                        }
                    }
                }
                Ok(rows)
            }
            Some(_) => Err(ReportError::Format {
                path: path.into(),
                reason: "`results` is not an array of rows".into(),
            }),
            // a JSONL file with a single row
            None if doc.contains_key("policy") => Ok(vec![Value::Object(doc)]),
            None => Err(ReportError::Format {
                path: path.into(),
                reason: "not a result file: no `results` array (give the summary JSON that \
                         `simulate --output` or `batch` writes, or a results.jsonl)"
                    .into(),
            }),
        },
        Ok(Value::Array(rows)) => check_objects(rows, path, "the top-level array"),
        Ok(_) => Err(ReportError::Format {
            path: path.into(),
            reason: "not a result file: expected a JSON object with `results`, or JSONL rows"
                .into(),
        }),
        Err(whole) => {
            // One JSON document failed: JSONL if the first non-blank line is a row on its own.
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if matches!(serde_json::from_str::<Value>(first), Ok(Value::Object(_))) {
                parse_jsonl(text, path)
            } else {
                Err(ReportError::Parse {
                    path: path.into(),
                    line: whole.line(),
                    reason: format!("not valid JSON ({whole})"),
                })
            }
        }
    }
}

fn check_objects(rows: Vec<Value>, path: &Path, what: &str) -> Result<Vec<Value>, ReportError> {
    if let Some(i) = rows.iter().position(|r| !r.is_object()) {
        return Err(ReportError::Format {
            path: path.into(),
            reason: format!("row {i} of {what} is not a JSON object"),
        });
    }
    Ok(rows)
}

fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<Value>, ReportError> {
    let lines: Vec<&str> = text.lines().collect();
    let torn_tail = !text.ends_with('\n');
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => rows.push(v),
            Ok(_) => {
                return Err(ReportError::Parse {
                    path: path.into(),
                    line: i + 1,
                    reason: "not a result row (expected a JSON object)".into(),
                })
            }
            Err(_) if torn_tail && i + 1 == lines.len() => {}
            Err(e) => {
                return Err(ReportError::Parse {
                    path: path.into(),
                    line: i + 1,
                    reason: format!("not a result row ({e})"),
                })
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Value>, ReportError> {
        parse_results(text, Path::new("r.jsonl"))
    }

    #[test]
    fn summary_rows_get_the_input_as_trace() {
        let rows = parse(r#"{"input": "t.jsonl", "results": [{"policy": "lru"}, {"policy": "ideal", "trace": "x"}]}"#)
            .unwrap();
        assert_eq!(rows[0]["trace"], "t.jsonl");
        assert_eq!(rows[1]["trace"], "x");
        let rows = parse(
            r#"{"input": {"path": "data/t.jsonl", "format": "mooncake"}, "results": [{"policy": "lru"}]}"#,
        )
        .unwrap();
        assert_eq!(rows[0]["trace"], "data/t.jsonl");
    }

    #[test]
    fn jsonl_bad_line_names_the_line_and_a_torn_tail_is_dropped() {
        let rows = parse("{\"policy\": \"lru\"}\n\n{\"policy\": \"fifo\"}\n{\"pol").unwrap();
        assert_eq!(rows.len(), 2);
        let err = parse("{\"policy\": \"lru\"}\n{\"policy\" 1}\n{\"policy\": \"fifo\"}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.jsonl:2: not a result row"), "{err}");
        let err = parse("{\"policy\": \"lru\"}\n[1]\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.jsonl:2:"), "{err}");
    }

    #[test]
    fn broken_json_document_names_the_line() {
        let err = parse("{\n \"results\": [\n  {\"policy\": }\n ]\n}")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.jsonl:3: not valid JSON"), "{err}");
        let err = parse(r#"{"name": "x"}"#).unwrap_err().to_string();
        assert!(err.contains("no `results` array"), "{err}");
    }
}
