//! Conversations of a CSV (the format `convert` reads) as a workload: each turn's answer length
//! sets its `max_tokens`, and its think time comes from the timestamps.

use std::path::Path;

use crate::workload::{think_times, ConversationSpec, TurnSpec};

/// Estimated tokens of a text (answers of the conversation CSV set `max_tokens`): characters
/// / 4.2, the rate of English with common BPE tokenizers (the demo generator's own estimate).
pub fn estimate_tokens(text: &str) -> u32 {
    ((text.chars().count() as f64 / 4.2).ceil() as u32).max(1)
}

/// Conversations of a CSV, timed relative to the earliest turn.
pub fn from_csv(
    path: &Path,
    tokens_per_second: f64,
    default_think_s: f64,
) -> Result<Vec<ConversationSpec>, inferencelab_convert::ConvertError> {
    let set = inferencelab_convert::read_csv(path, &inferencelab_convert::ColumnNames::default())?;
    let t0 = set
        .conversations
        .iter()
        .flat_map(|c| {
            c.turns
                .iter()
                .filter_map(|t| t.timestamp.map(|s| s.nanos()))
        })
        .min()
        .unwrap_or(0);
    Ok(set
        .conversations
        .iter()
        .map(|c| {
            let stamps: Vec<Option<f64>> = c
                .turns
                .iter()
                .map(|t| t.timestamp.map(|s| (s.nanos() - t0) as f64 / 1e9))
                .collect();
            let answers: Vec<u32> = c
                .turns
                .iter()
                .map(|t| estimate_tokens(&t.assistant))
                .collect();
            let think = think_times(&stamps, &answers, tokens_per_second, default_think_s);
            ConversationSpec {
                id: c.key.clone(),
                system: c.system.clone(),
                turns: c
                    .turns
                    .iter()
                    .enumerate()
                    .map(|(k, t)| TurnSpec {
                        user: t.user.clone(),
                        reference_answer: t.assistant.clone(),
                        max_tokens: answers[k],
                        timestamp: stamps[k],
                        think_s: think[k],
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_characters_over_4_2_and_at_least_one() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens(&"x".repeat(42)), 10);
        assert_eq!(estimate_tokens(&"x".repeat(43)), 11);
    }
}
