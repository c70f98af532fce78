//! Tokenization for the emulator, behind a small trait so a real tokenizer (the `convert`
//! crate's Hugging Face `tokenizer.json` loader) can be plugged in.
//!
//! The built-in [`WordTokenizer`] needs no files: the 3 ChatML special tokens, 256 byte tokens,
//! then a fixed list of common English words with and without a leading space. Text splits into
//! pieces (an optional space plus a run of ASCII letters; anything else byte by byte); a piece in
//! the word list is one token, others fall back to their bytes. It is deterministic, reversible
//! and prefix-stable (equal text prefixes give equal token prefixes up to the piece where they
//! differ), which is all the prefix cache needs. Token counts of ordinary English are in the
//! range of real BPE tokenizers for common words and higher for rare ones.

/// What the server needs from a tokenizer.
pub trait Tokenizer: Send + Sync {
    /// Text (special tokens such as `<|im_start|>` included) to token ids.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// Token ids to text. Unknown ids decode to nothing.
    fn decode(&self, ids: &[u32]) -> String;
    /// The generated token for a random number `r`: an ordinary word (with its leading space),
    /// so generated text reads like text.
    fn sample(&self, r: u64) -> u32;
    /// Render a chat conversation into the prompt text (the model's chat template).
    fn apply_chat_template(&self, messages: &[(String, String)]) -> String {
        chatml(messages)
    }
}

/// The ChatML template (Qwen's): `<|im_start|>role\ncontent<|im_end|>\n` per message, then the
/// generation prompt `<|im_start|>assistant\n`.
pub fn chatml(messages: &[(String, String)]) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str("<|im_start|>");
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push_str("<|im_end|>\n");
    }
    s.push_str("<|im_start|>assistant\n");
    s
}

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const BYTE_BASE: u32 = SPECIALS.len() as u32;
const WORD_BASE: u32 = BYTE_BASE + 256;

/// Common English words (a general-purpose frequency list's head).
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "not",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "an",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "any",
    "new",
    "work",
    "part",
    "take",
    "get",
    "place",
    "made",
    "live",
    "where",
    "after",
    "back",
    "little",
    "only",
    "round",
    "man",
    "year",
    "came",
    "show",
    "every",
    "good",
    "me",
    "give",
    "our",
    "under",
    "name",
    "very",
    "through",
    "just",
    "form",
    "sentence",
    "great",
    "think",
    "say",
    "help",
    "low",
    "line",
    "differ",
    "turn",
    "cause",
    "much",
    "mean",
    "before",
    "move",
    "right",
    "boy",
    "old",
    "too",
    "same",
    "tell",
    "does",
    "set",
    "three",
    "want",
    "air",
    "well",
    "also",
    "play",
    "small",
    "end",
    "put",
    "home",
    "read",
    "hand",
    "port",
    "large",
    "spell",
    "add",
    "even",
    "land",
    "here",
    "must",
    "big",
    "high",
    "such",
    "follow",
    "act",
    "why",
    "ask",
    "men",
    "change",
    "went",
    "light",
    "kind",
    "off",
    "need",
    "house",
    "picture",
    "try",
    "us",
    "again",
    "animal",
    "point",
    "mother",
    "world",
    "near",
    "build",
    "self",
    "earth",
    "father",
    "head",
    "stand",
    "own",
    "page",
    "should",
    "country",
    "found",
    "answer",
    "school",
    "grow",
    "study",
    "still",
    "learn",
    "plant",
    "cover",
    "food",
    "sun",
    "four",
    "between",
    "state",
    "keep",
    "eye",
    "never",
    "last",
    "let",
    "thought",
    "city",
    "tree",
    "cross",
    "farm",
    "hard",
    "start",
    "might",
    "story",
    "saw",
    "far",
    "sea",
    "draw",
    "left",
    "late",
    "run",
    "while",
    "press",
    "close",
    "night",
    "real",
    "life",
    "few",
    "north",
    "cache",
    "model",
    "token",
    "request",
    "server",
    "memory",
    "block",
    "data",
    "system",
    "question",
    "result",
    "value",
    "code",
    "user",
    "assistant",
    "text",
];

/// The built-in tokenizer (see the module docs).
pub struct WordTokenizer {
    words: rustc_hash::FxHashMap<&'static str, u32>,
}

impl Default for WordTokenizer {
    fn default() -> Self {
        let mut words = rustc_hash::FxHashMap::default();
        for (i, w) in WORDS.iter().enumerate() {
            words.entry(*w).or_insert(WORD_BASE + 2 * i as u32);
        }
        WordTokenizer { words }
    }
}

impl WordTokenizer {
    fn word(&self, id: u32) -> Option<(bool, &'static str)> {
        let i = id.checked_sub(WORD_BASE)? as usize;
        WORDS.get(i / 2).map(|w| (i % 2 == 1, *w))
    }
}

impl Tokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        let b = text.as_bytes();
        let mut out = Vec::with_capacity(b.len() / 4 + 1);
        let mut i = 0;
        'outer: while i < b.len() {
            if b[i] == b'<' {
                for (s, special) in SPECIALS.iter().enumerate() {
                    if b[i..].starts_with(special.as_bytes()) {
                        out.push(s as u32);
                        i += special.len();
                        continue 'outer;
                    }
                }
            }
            let space = b[i] == b' ';
            let start = i + space as usize;
            let end = start
                + b[start..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
            if end > start {
                if let Some(&id) = self.words.get(&text[start..end]) {
                    out.push(id + space as u32);
                    i = end;
                    continue;
                }
                out.extend(b[i..end].iter().map(|&c| BYTE_BASE + c as u32));
                i = end;
                continue;
            }
            out.push(BYTE_BASE + b[i] as u32);
            i += 1;
        }
        out
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if let Some(s) = SPECIALS.get(id as usize) {
                bytes.extend_from_slice(s.as_bytes());
            } else if id < WORD_BASE {
                bytes.push((id - BYTE_BASE) as u8);
            } else if let Some((space, w)) = self.word(id) {
                if space {
                    bytes.push(b' ');
                }
                bytes.extend_from_slice(w.as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn sample(&self, r: u64) -> u32 {
        WORD_BASE + 2 * (r % WORDS.len() as u64) as u32 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_counts_words_as_single_tokens() {
        let t = WordTokenizer::default();
        for s in [
            "the cache of the model",
            "Hello, wörld! 42\n\ttabs",
            "<|im_start|>user\nhi<|im_end|>\n",
            "",
        ] {
            assert_eq!(t.decode(&t.encode(s)), s);
        }
        assert_eq!(t.encode("the cache of the model").len(), 5);
        assert_eq!(t.encode("<|im_start|>user")[0], 1);
    }

    #[test]
    fn equal_prefixes_give_equal_token_prefixes() {
        let t = WordTokenizer::default();
        let a = t.encode(&chatml(&[
            ("system".into(), "be brief".into()),
            ("user".into(), "one".into()),
        ]));
        let b = t.encode(&chatml(&[
            ("system".into(), "be brief".into()),
            ("user".into(), "two".into()),
        ]));
        let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
        assert!(common >= 8, "{common}");
    }

    #[test]
    fn generated_ids_decode_to_words() {
        let t = WordTokenizer::default();
        for r in 0..1000 {
            let s = t.decode(&[t.sample(r)]);
            assert!(s.starts_with(' ') && s[1..].chars().all(|c| c.is_ascii_alphabetic()));
        }
    }
}
