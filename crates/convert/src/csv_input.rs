//! The conversation CSV: one row per turn (conversation id, time the user sent the message, the
//! user message, the assistant's answer, optionally the system prompt). Columns are found by
//! header name (case-insensitive, any order, extra columns ignored); every name can be mapped
//! with a flag. Rows of one conversation are its turns in file order; conversations may
//! interleave. Bad rows stop the read with `file:line: reason`.

use std::path::{Path, PathBuf};

use crate::error::{ConvertError, ConvertResult};
use crate::timestamp::{parse_stamp, Stamp};

/// Default header names (docs/convert.md, "The CSV schema").
pub const DEFAULT_CONVERSATION: &str = "conversation_id";
pub const DEFAULT_TIMESTAMP: &str = "timestamp";
pub const DEFAULT_USER: &str = "user_message";
pub const DEFAULT_ASSISTANT: &str = "assistant_response";
pub const DEFAULT_SYSTEM: &str = "system_prompt";

/// Header names to use; `None` = the default name. A column named explicitly must exist; the
/// optional columns (timestamp, system prompt) may be absent under their default names.
#[derive(Debug, Clone, Default)]
pub struct ColumnNames {
    pub conversation: Option<String>,
    pub timestamp: Option<String>,
    pub user: Option<String>,
    pub assistant: Option<String>,
    pub system: Option<String>,
}

/// One turn: what the user sent and what the assistant answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// 1-based line of the row in the CSV (its first line, for multi-line cells).
    pub line: usize,
    pub timestamp: Option<Stamp>,
    pub user: String,
    pub assistant: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// The CSV's conversation id.
    pub key: String,
    /// From the conversation's first row (later rows may leave the cell empty).
    pub system: Option<String>,
    pub turns: Vec<Turn>,
}

/// All conversations of a CSV, in order of first appearance.
#[derive(Debug, Clone)]
pub struct ConversationSet {
    pub source: PathBuf,
    pub conversations: Vec<Conversation>,
    /// Whether the turns carry times (the timestamp column exists).
    pub has_timestamps: bool,
}

impl ConversationSet {
    pub fn turns(&self) -> usize {
        self.conversations.iter().map(|c| c.turns.len()).sum()
    }
}

struct Resolved {
    conversation: usize,
    timestamp: Option<usize>,
    user: usize,
    assistant: usize,
    system: Option<usize>,
}

fn resolve(
    path: &Path,
    header: &csv::StringRecord,
    names: &ColumnNames,
) -> ConvertResult<Resolved> {
    let have: Vec<String> = header.iter().map(|h| h.trim().to_lowercase()).collect();
    let find = |given: &Option<String>, default: &str, flag: &str, required: bool| {
        let want = given.as_deref().unwrap_or(default);
        match have.iter().position(|h| *h == want.trim().to_lowercase()) {
            Some(i) => Ok(Some(i)),
            None if !required && given.is_none() => Ok(None),
            None => Err(ConvertError::csv(
                path,
                1,
                format!(
                    "no column {want:?} in the header (columns: {}); name yours with {flag} NAME",
                    header
                        .iter()
                        .map(|h| format!("{h:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    };
    Ok(Resolved {
        conversation: find(
            &names.conversation,
            DEFAULT_CONVERSATION,
            "--column-conversation",
            true,
        )?
        .unwrap_or_default(),
        timestamp: find(
            &names.timestamp,
            DEFAULT_TIMESTAMP,
            "--column-timestamp",
            false,
        )?,
        user: find(&names.user, DEFAULT_USER, "--column-user", true)?.unwrap_or_default(),
        assistant: find(
            &names.assistant,
            DEFAULT_ASSISTANT,
            "--column-assistant",
            true,
        )?
        .unwrap_or_default(),
        system: find(&names.system, DEFAULT_SYSTEM, "--column-system", false)?,
    })
}

/// Read a conversation CSV file.
pub fn read_csv(path: &Path, names: &ColumnNames) -> ConvertResult<ConversationSet> {
    let bytes =
        inferencelab_trace::fsutil::read_input(path).map_err(|e| ConvertError::io(path, e))?;
    parse_csv(path, &bytes, names)
}

/// RFC 4180 quoting: inside a quoted field a quote is doubled (`""`) or ends the field. The csv
/// crate reads `"say "hi" now"` as `say hi" now"` without a word; a conversation's text must not
/// change silently, so such a quote is an error at its line.
fn check_quotes(bytes: &[u8]) -> Result<(), (usize, String)> {
    let (mut line, mut at_field_start, mut quoted) = (1usize, true, false);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            if b == b'"' {
                match bytes.get(i + 1) {
                    Some(b'"') => i += 1,
                    None | Some(b',' | b'\r' | b'\n') => quoted = false,
                    Some(_) => {
                        return Err((
                            line,
                            "a stray quote inside a quoted field: write it twice (\"\") to \
                             keep it, or close the field with a quote before the comma"
                                .into(),
                        ))
                    }
                }
            } else if b == b'\n' {
                line += 1;
            }
            at_field_start = false;
        } else {
            match b {
                b'"' if at_field_start => quoted = true,
                b',' => {
                    at_field_start = true;
                    i += 1;
                    continue;
                }
                b'\n' => {
                    line += 1;
                    at_field_start = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            at_field_start = false;
        }
        i += 1;
    }
    if quoted {
        return Err((
            line,
            "a quoted field is never closed (a quote is missing)".into(),
        ));
    }
    Ok(())
}

/// Parse CSV bytes; `path` only labels errors.
pub fn parse_csv(path: &Path, bytes: &[u8], names: &ColumnNames) -> ConvertResult<ConversationSet> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes); // Excel's UTF-8 BOM
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConvertError::csv(path, 0, "the file is empty"));
    }
    check_quotes(bytes).map_err(|(line, reason)| ConvertError::csv(path, line, reason))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let csv_err = |e: csv::Error| {
        let line = e.position().map_or(0, |p| p.line() as usize);
        let reason = match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "is not UTF-8 text (save the CSV as UTF-8)".to_string(),
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("{len} fields where the header has {expected_len}"),
            _ => e.to_string(),
        };
        ConvertError::csv(path, line, reason)
    };
    let header = reader.headers().map_err(csv_err)?.clone();
    let cols = resolve(path, &header, names)?;
    let col_name = |i: usize| header.get(i).unwrap_or("?").to_string();

    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut conversations: Vec<Conversation> = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_err(e)),
        }
        let line = record.position().map_or(0, |p| p.line() as usize);
        let cell = |i: usize| record.get(i).unwrap_or("");
        let bad = |reason: String| ConvertError::csv(path, line, reason);
        let key = cell(cols.conversation).trim();
        if key.is_empty() {
            return Err(bad(format!("empty {}", col_name(cols.conversation))));
        }
        let user = cell(cols.user);
        if user.trim().is_empty() {
            return Err(bad(format!(
                "empty {} (the user message)",
                col_name(cols.user)
            )));
        }
        let assistant = cell(cols.assistant);
        if assistant.trim().is_empty() {
            return Err(bad(format!(
                "empty {} (the assistant's answer)",
                col_name(cols.assistant)
            )));
        }
        let timestamp = match cols.timestamp {
            None => None,
            Some(i) => {
                Some(parse_stamp(cell(i)).map_err(|e| bad(format!("{}: {e}", col_name(i))))?)
            }
        };
        let system = cols
            .system
            .map(cell)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let c = *index.entry(key.to_string()).or_insert_with(|| {
            conversations.push(Conversation {
                key: key.to_string(),
                system,
                turns: Vec::new(),
            });
            conversations.len() - 1
        });
        let conv = &mut conversations[c];
        if let (Some(t), Some(prev)) = (timestamp, conv.turns.last()) {
            let p = prev
                .timestamp
                .expect("every row has a time when the column exists");
            if std::mem::discriminant(&t) != std::mem::discriminant(&p) {
                return Err(bad(format!(
                    "{} mixes a date-time and plain seconds within conversation {key:?} \
                     (line {})",
                    col_name(cols.timestamp.unwrap_or_default()),
                    prev.line
                )));
            }
            if t < p {
                return Err(bad(format!(
                    "{} is earlier than the previous turn of conversation {key:?} (line {}): \
                     rows of a conversation must be in time order",
                    col_name(cols.timestamp.unwrap_or_default()),
                    prev.line
                )));
            }
        }
        conv.turns.push(Turn {
            line,
            timestamp,
            user: user.to_string(),
            assistant: assistant.to_string(),
        });
    }
    if conversations.is_empty() {
        return Err(ConvertError::csv(path, 0, "no rows after the header"));
    }
    Ok(ConversationSet {
        source: path.to_path_buf(),
        conversations,
        has_timestamps: cols.timestamp.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stray_quotes_are_errors_doubled_quotes_are_text() {
        assert!(check_quotes(b"a,b\n\"x \"\"y\"\" z\",2\n").is_ok());
        assert!(check_quotes(b"a,b\n\"multi\nline\",2\r\n").is_ok());
        assert!(check_quotes(b"a,b\nunquoted \" is text,2\n").is_ok());
        assert_eq!(
            check_quotes(b"a,b\n1,\"say \"hi\" now\"\n").unwrap_err().0,
            2
        );
        assert_eq!(check_quotes(b"a,b\n1,2\n\"open,3\n").unwrap_err().0, 4);
    }

    fn parse(text: &str) -> ConvertResult<ConversationSet> {
        parse_csv(Path::new("t.csv"), text.as_bytes(), &ColumnNames::default())
    }

    #[test]
    fn rows_group_into_conversations_in_file_order() {
        let set = parse(
            "conversation_id,timestamp,system_prompt,user_message,assistant_response\n\
             a,2025-01-01 00:00:00,Be brief.,hi,hello\n\
             b,2025-01-01 00:00:01,,\"multi\nline\",ok\n\
             a,2025-01-01 00:00:30,,\"say \"\"x\"\"\",x\n",
        )
        .unwrap();
        assert!(set.has_timestamps);
        assert_eq!(set.conversations.len(), 2);
        let a = &set.conversations[0];
        assert_eq!(a.system.as_deref(), Some("Be brief."));
        assert_eq!(a.turns.len(), 2);
        assert_eq!(a.turns[1].user, "say \"x\"");
        assert_eq!(a.turns[1].line, 5, "line numbers count the multi-line cell");
        assert_eq!(set.conversations[1].system, None);
        assert_eq!(set.conversations[1].turns[0].user, "multi\nline");
    }

    #[test]
    fn optional_columns_may_be_missing_and_names_are_mappable() {
        let set = parse("conversation_id,user_message,assistant_response\n1,a,b\n").unwrap();
        assert!(!set.has_timestamps);
        let names = ColumnNames {
            conversation: Some("Session".into()),
            user: Some("Q".into()),
            assistant: Some("A".into()),
            timestamp: Some("When".into()),
            ..Default::default()
        };
        let set = parse_csv(
            Path::new("t.csv"),
            b"A,Q,When,session\nyes,why,5,s1\n",
            &names,
        )
        .unwrap();
        assert_eq!(set.conversations[0].turns[0].assistant, "yes");
        assert_eq!(
            set.conversations[0].turns[0].timestamp,
            Some(Stamp::Seconds(5_000_000_000))
        );
    }

    #[test]
    fn errors_name_file_line_and_fix() {
        let e = parse("conversation,user_message,assistant_response\n1,a,b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.csv:1: no column \"conversation_id\""),
            "{e}"
        );
        assert!(e.contains("--column-conversation"), "{e}");
        let names = ColumnNames {
            timestamp: Some("ts".into()),
            ..Default::default()
        };
        let e = parse_csv(
            Path::new("t.csv"),
            b"conversation_id,user_message,assistant_response\n1,a,b\n",
            &names,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no column \"ts\"") && e.contains("--column-timestamp"),
            "{e}"
        );
        let head = "conversation_id,timestamp,user_message,assistant_response\n";
        let cases = [
            (
                "1,0,hi,ok\n1,soon,a,b\n",
                "t.csv:3: timestamp: \"soon\" is not a time",
            ),
            ("1,0,hi,ok\n1,1,  ,b\n", "t.csv:3: empty user_message"),
            ("1,0,hi,\n", "t.csv:2: empty assistant_response"),
            ("1,5,hi,ok\n1,4,a,b\n", "t.csv:3: timestamp is earlier"),
            (
                "1,5,hi,ok\n1,2025-01-01 00:00:00,a,b\n",
                "t.csv:3: timestamp mixes",
            ),
            ("1,0,hi\n", "t.csv:2: 3 fields where the header has 4"),
            (",0,hi,ok\n", "t.csv:2: empty conversation_id"),
            ("", "t.csv: no rows"),
        ];
        for (rows, want) in cases {
            let e = parse(&format!("{head}{rows}")).unwrap_err().to_string();
            assert!(e.starts_with(want), "{rows:?}: {e}");
        }
        let e = parse_csv(
            Path::new("t.csv"),
            b"a,b\n\xff\xfe,1\n",
            &ColumnNames::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.csv:"), "{e}");
    }
}
