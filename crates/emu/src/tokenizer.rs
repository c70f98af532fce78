//! Tokenization for the emulator, behind a small trait: the built-in [`WordTokenizer`] (the
//! default, so a closed loop bench -> serve -> log -> simulate needs no files), a model's
//! Hugging Face `tokenizer.json` with its chat template ([`HfTokenizer`], `serve MODEL_DIR` or
//! `--tokenizer`), or the embedded o200k_base ranks with ChatML specials ([`O200kChatml`]).
//!
//! The built-in [`WordTokenizer`] needs no files: the 3 ChatML special tokens, 256 byte tokens,
//! then a fixed list of common English words with and without a leading space. Text splits into
//! pieces (an optional space plus a run of ASCII letters; anything else byte by byte); a piece in
//! the word list is one token, others fall back to their bytes. It is deterministic, reversible
//! and prefix-stable (equal text prefixes give equal token prefixes up to the piece where they
//! differ), which is all the prefix cache needs. Token counts of ordinary English are in the
//! range of real BPE tokenizers for common words and higher for rare ones; they are not a
//! model's counts (a 206-character sentence is 179 tokens here, 41 in o200k_base).

use std::path::Path;
#[cfg(feature = "hf-tokenizer")]
use std::path::PathBuf;

/// What the server needs from a tokenizer.
pub trait Tokenizer: Send + Sync {
    /// Text (special tokens such as `<|im_start|>` included) to token ids.
    fn encode(&self, text: &str) -> Vec<u32>;
    /// A prompt's ids as vLLM tokenizes it. `add_special_tokens` is the request field of that
    /// name (vLLM's default: true for completions and `/tokenize` of a prompt, false for chat,
    /// whose template writes the BOS itself): the tokenizer's post-processor adds its BOS (and
    /// EOS), as a Llama tokenizer does. Tokenizers without one return [`Tokenizer::encode`].
    fn encode_prompt(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        let _ = add_special_tokens;
        self.encode(text)
    }
    /// Token ids to text. Unknown ids decode to nothing.
    fn decode(&self, ids: &[u32]) -> String;
    /// The text each of `output`'s ids adds after `prompt`, as vLLM's incremental detokenizer
    /// gives it (tokenizers' `DecodeStream` primed with the prompt ids, which vLLM 0.32 and 0.33
    /// both use): decode the window of recent ids with the new one and emit what it adds to the
    /// window's text; a token whose text is not complete yet (an unfinished UTF-8 sequence)
    /// adds nothing and its text comes with a later one. One entry per output id; their
    /// concatenation is the answer's text. Decoding one token alone is not enough: a
    /// SentencePiece (`Metaspace`) decoder drops the `▁` word marker of the first token, so
    /// each word would lose its space.
    fn decode_stream(&self, prompt: &[u32], output: &[u32]) -> Vec<String> {
        let mut pieces = Vec::with_capacity(output.len());
        let mut ids = prompt.to_vec();
        let mut prefix = String::new();
        let mut prefix_index = 0;
        for &id in output {
            let piece = match decode_step(self, &mut ids, &mut prefix, &mut prefix_index, id) {
                Ok(p) => p,
                // vLLM's recovery from a non-monotonic decode: a fresh stream from this token
                Err(()) => {
                    ids.clear();
                    prefix.clear();
                    prefix_index = 0;
                    decode_step(self, &mut ids, &mut prefix, &mut prefix_index, id)
                        .unwrap_or_default()
                }
            };
            pieces.push(piece);
        }
        pieces
    }
    /// The generated token for a random number `r`: an ordinary word (with its leading space),
    /// so generated text reads like text and re-tokenizes to the same ids.
    fn sample(&self, r: u64) -> u32;
    /// Render a chat conversation into the prompt text (the model's chat template).
    fn apply_chat_template(&self, messages: &[(String, String)]) -> String {
        chatml(messages)
    }
    /// The chat template with vLLM's request options (`add_generation_prompt`,
    /// `continue_final_message`); `Err` is the template's own error, for a 400.
    fn render_chat(
        &self,
        messages: &[(String, String)],
        opts: ChatOptions,
    ) -> Result<String, String> {
        Ok(chatml_with(messages, opts))
    }
    /// Ids at or above this are out of the vocabulary (vLLM answers 400 for them).
    fn vocab_size(&self) -> u32 {
        u32::MAX
    }
    /// One token's string as the tokenizer's vocabulary spells it (`/tokenize`'s `token_strs`).
    fn token_str(&self, id: u32) -> Option<String> {
        Some(self.decode(&[id]))
    }
    /// One line naming the tokenizer, for the start-up line.
    fn describe(&self) -> String {
        "a custom tokenizer".into()
    }
}

/// One step of tokenizers' `step_decode_stream` (tokenizers 0.22): the text `id` adds to the
/// window `ids` whose text so far is `prefix`; `Err` when the decoded window no longer starts
/// with `prefix`.
fn decode_step<T: Tokenizer + ?Sized>(
    t: &T,
    ids: &mut Vec<u32>,
    prefix: &mut String,
    prefix_index: &mut usize,
    id: u32,
) -> Result<String, ()> {
    if prefix.is_empty() && !ids.is_empty() {
        let p = t.decode(ids);
        if !p.ends_with('\u{FFFD}') {
            *prefix = p;
            *prefix_index = ids.len();
        }
    }
    ids.push(id);
    let text = t.decode(ids);
    if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') {
        let Some(new_text) = text.strip_prefix(prefix.as_str()) else {
            return Err(());
        };
        let new_text = new_text.to_string();
        let new_prefix_index = ids.len() - *prefix_index;
        ids.drain(..*prefix_index);
        *prefix = t.decode(ids);
        *prefix_index = new_prefix_index;
        Ok(new_text)
    } else {
        Ok(String::new())
    }
}

/// vLLM's chat request options that change the rendered prompt.
#[derive(Debug, Clone, Copy)]
pub struct ChatOptions {
    pub add_generation_prompt: bool,
    pub continue_final_message: bool,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            add_generation_prompt: true,
            continue_final_message: false,
        }
    }
}

/// The ChatML template (Qwen's): `<|im_start|>role\ncontent<|im_end|>\n` per message, then the
/// generation prompt `<|im_start|>assistant\n`.
pub fn chatml(messages: &[(String, String)]) -> String {
    chatml_with(messages, ChatOptions::default())
}

fn chatml_with(messages: &[(String, String)], opts: ChatOptions) -> String {
    let mut s = String::new();
    for (role, content) in messages {
        s.push_str("<|im_start|>");
        s.push_str(role);
        s.push('\n');
        s.push_str(content);
        s.push_str("<|im_end|>\n");
    }
    if opts.continue_final_message {
        // vLLM cuts the rendered text after the final message's content
        if let Some((_, last)) = messages.last() {
            if let Some(end) = s.rfind(last.as_str()) {
                s.truncate(end + last.len());
            }
        }
    } else if opts.add_generation_prompt {
        s.push_str("<|im_start|>assistant\n");
    }
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

    fn render_chat(
        &self,
        messages: &[(String, String)],
        opts: ChatOptions,
    ) -> Result<String, String> {
        Ok(chatml_with(messages, opts))
    }

    // vocab_size: the default (any id): replayed logs carry a real model's ids, which this
    // tokenizer stands in for

    fn describe(&self) -> String {
        "built-in word tokenizer (not a model's token counts; give MODEL_DIR or --tokenizer)".into()
    }
}

/// Ordinary-word tokens for [`Tokenizer::sample`]: ids whose text is a space and 3 to 10 ASCII
/// lowercase letters and that encode back to themselves alone, the first `MAX_WORDS` in id order
/// (BPE ids grow with rarity, so these are common words).
const MAX_WORDS: usize = 4096;

fn word_like(text: &str) -> bool {
    text.len() >= 4
        && text.len() <= 11
        && text.starts_with(' ')
        && text[1..].bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(feature = "hf-tokenizer")]
/// A model's Hugging Face `tokenizer.json` (pure Rust `tokenizers`, no hub access) and its chat
/// template (`chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`), rendered
/// with minijinja as transformers renders it with Jinja2.
pub struct HfTokenizer {
    tokenizer: tokenizers::Tokenizer,
    template: Option<String>,
    bos_token: String,
    eos_token: String,
    words: Vec<u32>,
    vocab_size: u32,
    path: PathBuf,
}

#[cfg(feature = "hf-tokenizer")]
/// A `tokenizer_config.json` token entry: a string or `{"content": ...}`.
fn token_text(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

#[cfg(feature = "hf-tokenizer")]
impl HfTokenizer {
    /// `path`: a model directory (its `tokenizer.json`) or a `tokenizer.json` file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join("tokenizer.json"))
        } else {
            (
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.to_path_buf(),
            )
        };
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
            format!(
                "{}: not a Hugging Face tokenizer.json this build can load: {e}",
                file.display()
            )
        })?;
        let config: serde_json::Value = match std::fs::read(dir.join("tokenizer_config.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| format!("{}: {e}", dir.join("tokenizer_config.json").display()))?,
            Err(_) => serde_json::Value::Null,
        };
        let template = match std::fs::read_to_string(dir.join("chat_template.jinja")) {
            Ok(t) => Some(t),
            Err(_) => match config.get("chat_template") {
                Some(serde_json::Value::String(t)) => Some(t.clone()),
                // a list of named templates: the "default" one
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
                _ => None,
            },
        };
        let vocab_size = tokenizer.get_vocab_size(true) as u32;
        let mut t = HfTokenizer {
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
            tokenizer,
            template,
            words: Vec::new(),
            vocab_size,
            path: file,
        };
        for id in 0..vocab_size {
            if t.words.len() >= MAX_WORDS {
                break;
            }
            // the token's text after another token (itself): decoded alone, a SentencePiece
            // (`Metaspace`) token `▁word` loses its space, as the first token of a text does
            let Some(text) = t.decode_stream(&[id], &[id]).pop() else {
                continue;
            };
            // a normalizer that prepends `▁` itself (Llama 2's) encodes the word without its
            // space to the token; the token then follows any text as ` word`
            if word_like(&text) && (t.encode(&text) == [id] || t.encode(text.trim_start()) == [id])
            {
                t.words.push(id);
            }
        }
        if t.words.is_empty() {
            return Err(format!(
                "{}: no token of the vocabulary is a plain word (` word`, `Ġword` or `▁word`: a \
                 space and 3 to 10 lowercase ASCII letters that encodes back to that one token), \
                 so generated text cannot be drawn from it",
                t.path.display()
            ));
        }
        Ok(t)
    }

    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }
}

#[cfg(feature = "hf-tokenizer")]
impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// `tokenizer.json`'s post-processor adds the specials (a Llama 3 `TemplateProcessing` its
    /// `<|begin_of_text|>`, a Qwen `ByteLevel` nothing), and nothing else does: measured through
    /// vLLM 0.32's `get_tokenizer` (transformers 5.19; 5.20 with vLLM 0.33 the same), which
    /// ignores `tokenizer_config.json`'s `add_bos_token`/`add_eos_token` in both directions
    /// (a post-processor's BOS stays with `add_bos_token: false`; none is added with `true` and
    /// no post-processor), for `PreTrainedTokenizerFast` and `LlamaTokenizer(Fast)` alike.
    fn encode_prompt(&self, text: &str, add_special_tokens: bool) -> Vec<u32> {
        self.tokenizer
            .encode_fast(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    fn sample(&self, r: u64) -> u32 {
        self.words[(r % self.words.len() as u64) as usize]
    }

    fn apply_chat_template(&self, messages: &[(String, String)]) -> String {
        self.render_chat(messages, ChatOptions::default())
            .unwrap_or_else(|_| chatml(messages))
    }

    fn render_chat(
        &self,
        messages: &[(String, String)],
        opts: ChatOptions,
    ) -> Result<String, String> {
        let Some(template) = &self.template else {
            // transformers refuses too (vLLM: "default chat template is no longer allowed")
            return Err(
                "As of transformers v4.44, default chat template is no longer allowed, so you \
                 must provide a chat template if the tokenizer does not define one."
                    .into(),
            );
        };
        render_jinja(template, messages, opts, &self.bos_token, &self.eos_token)
    }

    fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    fn token_str(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    fn describe(&self) -> String {
        format!(
            "Hugging Face {} ({} tokens{})",
            self.path.display(),
            self.vocab_size,
            if self.template.is_some() {
                ", its chat template"
            } else {
                ", no chat template"
            }
        )
    }
}

#[cfg(feature = "hf-tokenizer")]
/// Render a Hugging Face chat template as transformers does (`apply_chat_template`): Jinja with
/// `messages`, `add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, and Python
/// string methods (minijinja-contrib's pycompat). `continue_final_message`: rendered without the
/// generation prompt, cut after the final message's content.
fn render_jinja(
    template: &str,
    messages: &[(String, String)],
    opts: ChatOptions,
    bos: &str,
    eos: &str,
) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_keep_trailing_newline(false);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| format!("the chat template does not parse: {e}"))?;
    let msgs: Vec<minijinja::Value> = messages
        .iter()
        .map(|(r, c)| minijinja::context! { role => r, content => c })
        .collect();
    let add_gen = opts.add_generation_prompt && !opts.continue_final_message;
    let mut text = env
        .get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => msgs,
                add_generation_prompt => add_gen,
                bos_token => bos,
                eos_token => eos,
                tools => minijinja::Value::from(()),
            })
        })
        .map_err(|e| format!("the chat template failed: {e}"))?;
    if opts.continue_final_message {
        let last = messages.last().map(|(_, c)| c.trim()).unwrap_or_default();
        match text.rfind(last) {
            Some(end) if !last.is_empty() => text.truncate(end + last.len()),
            _ => {
                return Err(
                    "continue_final_message is set but the final message does not appear in \
                     the chat after applying the chat template"
                        .into(),
                )
            }
        }
    }
    Ok(text)
}

/// The o200k_base ranks that ship inside `tiktoken-rs` with the ChatML specials at the ids
/// scripts/vllm_cpu_peer.sh gives them (`<|endoftext|>` 199998, `<|im_start|>` 199999,
/// `<|im_end|>` 200000; transformers' TikTokenConverter appends them after the 199,998 ranks) and
/// the ChatML template: the CPU vLLM peer's tokenizer without its 27 MB `tokenizer.json`
/// (`--tokenizer o200k-chatml`).
pub struct O200kChatml {
    bpe: &'static tiktoken_rs::CoreBPE,
    words: Vec<u32>,
}

const O200K_RANKS: u32 = 199_998;

impl Default for O200kChatml {
    fn default() -> Self {
        let bpe = tiktoken_rs::o200k_base_singleton();
        let mut words = Vec::new();
        for id in 0..O200K_RANKS {
            if words.len() >= MAX_WORDS {
                break;
            }
            let Ok(b) = bpe.decode_bytes(&[id]) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&b) else {
                continue;
            };
            if word_like(text) && bpe.encode_ordinary(text) == [id] {
                words.push(id);
            }
        }
        O200kChatml { bpe, words }
    }
}

impl Tokenizer for O200kChatml {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut rest = text;
        loop {
            let next = SPECIALS
                .iter()
                .enumerate()
                .filter_map(|(i, s)| rest.find(s).map(|at| (at, i)))
                .min();
            match next {
                Some((at, i)) => {
                    out.extend(self.bpe.encode_ordinary(&rest[..at]));
                    out.push(O200K_RANKS + i as u32);
                    rest = &rest[at + SPECIALS[i].len()..];
                }
                None => {
                    out.extend(self.bpe.encode_ordinary(rest));
                    return out;
                }
            }
        }
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if id < O200K_RANKS {
                if let Ok(b) = self.bpe.decode_bytes(&[id]) {
                    bytes.extend(b);
                }
            } else if let Some(s) = SPECIALS.get((id - O200K_RANKS) as usize) {
                bytes.extend_from_slice(s.as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn sample(&self, r: u64) -> u32 {
        self.words[(r % self.words.len() as u64) as usize]
    }

    fn vocab_size(&self) -> u32 {
        O200K_RANKS + SPECIALS.len() as u32
    }

    fn describe(&self) -> String {
        "embedded o200k_base + ChatML specials (the CPU vLLM peer's tokenizer)".into()
    }
}

/// `--tokenizer` / `serve MODEL_DIR`: `o200k-chatml`, a model directory with a
/// `tokenizer.json`, or a `tokenizer.json` file.
pub fn load(spec: &str) -> Result<std::sync::Arc<dyn Tokenizer>, String> {
    if spec == "o200k-chatml" {
        return Ok(std::sync::Arc::new(O200kChatml::default()));
    }
    let p = Path::new(spec);
    if p.is_dir() && !p.join("tokenizer.json").is_file() {
        return Err(format!(
            "{spec}: no tokenizer.json in this directory (give the model directory vLLM loads, \
             a tokenizer.json, or o200k-chatml)"
        ));
    }
    if !p.exists() {
        return Err(format!(
            "{spec}: no such file or directory (serve never downloads: give a local model \
             directory, a tokenizer.json, or o200k-chatml)"
        ));
    }
    #[cfg(feature = "hf-tokenizer")]
    {
        Ok(std::sync::Arc::new(HfTokenizer::load(p)?))
    }
    #[cfg(not(feature = "hf-tokenizer"))]
    Err(format!(
        "{spec}: this build reads no tokenizer.json (built without the hf-tokenizer feature, \
         to keep the first build short): rebuild with `cargo build --release --features \
         hf-tokenizer` (or `cargo install --path crates/cli --features hf-tokenizer`), or use \
         --tokenizer o200k-chatml"
    ))
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

    #[cfg(feature = "hf-tokenizer")]
    /// A tiny byte-level tokenizer.json (`<s>` 0, `</s>` 1, `hello` 5, ` world` 4, ` cache` 6),
    /// with a Llama-style `TemplateProcessing` that adds `<s>` when `post` is set, and its
    /// tokenizer_config.json with `extra` keys.
    fn tiny_model(post: bool, extra: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let special = |id: u32, s: &str| {
            format!(
                r#"{{"id":{id},"content":"{s}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#
            )
        };
        let post_processor = if post {
            r#"{"type":"TemplateProcessing",
                "single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
                "pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},
                        {"SpecialToken":{"id":"<s>","type_id":1}},{"Sequence":{"id":"B","type_id":1}}],
                "special_tokens":{"<s>":{"id":"<s>","ids":[0],"tokens":["<s>"]}}}"#
        } else {
            "null"
        };
        let json = format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,
              "added_tokens":[{},{}],"normalizer":null,
              "pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
              "post_processor":{post_processor},
              "decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
              "model":{{"type":"WordLevel","unk_token":"<unk>","vocab":{{"<s>":0,"</s>":1,"<unk>":2,
                "\u0120hello":3,"\u0120world":4,"hello":5,"\u0120cache":6}}}}}}"#,
            special(0, "<s>"),
            special(1, "</s>")
        );
        std::fs::write(dir.path().join("tokenizer.json"), json).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            format!(
                r#"{{"tokenizer_class":"PreTrainedTokenizerFast","bos_token":"<s>","eos_token":"</s>"{extra}}}"#
            ),
        )
        .unwrap();
        dir
    }

    #[cfg(feature = "hf-tokenizer")]
    /// The ids vLLM 0.32 gives "hello world cache" (its `get_tokenizer` on the same files,
    /// transformers 5.19): `add_special_tokens` adds what the post-processor adds, and
    /// tokenizer_config.json's `add_bos_token` changes nothing either way.
    #[test]
    fn a_post_processor_bos_is_counted_as_vllm_counts_it() {
        let text = "hello world cache";
        for (post, extra, with_specials) in [
            (true, "", vec![0, 5, 4, 6]),
            (true, r#","add_bos_token":false"#, vec![0, 5, 4, 6]),
            (true, r#","add_eos_token":true"#, vec![0, 5, 4, 6]),
            (false, r#","add_bos_token":true"#, vec![5, 4, 6]),
            (false, "", vec![5, 4, 6]),
        ] {
            let dir = tiny_model(post, extra);
            let t = load(dir.path().to_str().unwrap()).unwrap();
            assert_eq!(t.encode_prompt(text, true), with_specials, "{post} {extra}");
            assert_eq!(t.encode_prompt(text, false), [5, 4, 6], "{post} {extra}");
            assert_eq!(t.encode(text), [5, 4, 6]);
            // a BOS the text spells (a chat template's `{{ bos_token }}`) is one token
            assert_eq!(t.encode_prompt("<s>hello", false), [0, 5]);
        }
        // the built-in tokenizers have no post-processor
        let w = WordTokenizer::default();
        assert_eq!(w.encode_prompt(text, true), w.encode(text));
    }

    #[cfg(feature = "hf-tokenizer")]
    /// A tiny SentencePiece-style BPE tokenizer.json with byte fallback: `<unk>` 0, `<s>` 1,
    /// `</s>` 2, `<0x0A>` 3, then the letters, `▁`, and every prefix of `▁hello`, `▁world`,
    /// `▁cache` (merged letter by letter). `llama2`: Llama 2's form (a normalizer that prepends
    /// `▁` and replaces spaces, a Replace/ByteFallback/Fuse/Strip decoder, a `<s>` post-
    /// processor); else Mistral's (a `Metaspace` pre-tokenizer, `prepend_scheme` first, and a
    /// Metaspace/ByteFallback/Fuse decoder). Returns the directory and the ids of `▁hello`, `▁world`, `▁cache`.
    pub(crate) fn sentencepiece_model(llama2: bool) -> (tempfile::TempDir, [u32; 3]) {
        let mut vocab: Vec<String> = ["<unk>", "<s>", "</s>", "<0x0A>", "\u{2581}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for c in "abcdefghijklmnopqrstuvwxyz".chars() {
            vocab.push(c.to_string());
        }
        let mut merges = Vec::new();
        let mut word_ids = [0; 3];
        for (w, word) in ["hello", "world", "cache"].iter().enumerate() {
            let chars: Vec<String> = format!("\u{2581}{word}")
                .chars()
                .map(String::from)
                .collect();
            let mut acc = chars[0].clone();
            for c in &chars[1..] {
                merges.push(serde_json::json!([acc, c]));
                acc.push_str(c);
                vocab.push(acc.clone());
            }
            word_ids[w] = vocab.len() as u32 - 1;
        }
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, serde_json::json!(i)))
            .collect();
        let special = |id: u32, s: &str| {
            serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        };
        let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}",
            "prepend_scheme": "first", "split": false});
        let (normalizer, pre_tokenizer, decoder, post) = if llama2 {
            (
                serde_json::json!({"type": "Sequence", "normalizers": [
                    {"type": "Prepend", "prepend": "\u{2581}"},
                    {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}),
                serde_json::Value::Null,
                serde_json::json!({"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
                serde_json::json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                               {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                             {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": "<s>", "type_id": 1}},
                             {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}),
            )
        } else {
            (
                serde_json::Value::Null,
                metaspace.clone(),
                serde_json::json!({"type": "Sequence", "decoders": [
                    metaspace, {"type": "ByteFallback"}, {"type": "Fuse"}]}),
                serde_json::Value::Null,
            )
        };
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "post_processor": post, "decoder": decoder,
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges},
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"tokenizer_class":"LlamaTokenizerFast","bos_token":"<s>","eos_token":"</s>"}"#,
        )
        .unwrap();
        (dir, word_ids)
    }

    #[cfg(feature = "hf-tokenizer")]
    /// Llama 2 and Mistral tokenizer.json load (their words are `▁word` tokens, which decode
    /// alone without their space), generate words, and decode a stream with its spaces.
    #[test]
    fn sentencepiece_tokenizers_load_and_stream_with_spaces() {
        for llama2 in [true, false] {
            let (dir, [hello, world, cache]) = sentencepiece_model(llama2);
            let t = load(dir.path().to_str().unwrap()).unwrap();
            assert_eq!(
                t.encode("hello world cache"),
                [hello, world, cache],
                "{llama2}"
            );
            // one token alone loses its space (why single-token decoding cannot be used)
            assert_eq!(t.decode(&[world]), "world");
            assert_eq!(t.decode(&[hello, world, cache]), "hello world cache");
            // generated ids: the `▁` tokens of 3 to 10 letters (`▁hel` included), each a word
            // with its space after another token
            let mut sampled: Vec<u32> = (0..256).map(|r| t.sample(r)).collect();
            sampled.sort_unstable();
            sampled.dedup();
            assert_eq!(sampled.len(), 3 * 3, "{llama2}");
            assert!([hello, world, cache].iter().all(|w| sampled.contains(w)));
            for id in sampled {
                let piece = t.decode_stream(&[hello], &[id]).concat();
                assert!(word_like(&piece), "{llama2} {id} {piece:?}");
            }
            // after a prompt, every generated word keeps its space; the pieces concatenate to
            // the decoding of all ids at once
            let prompt = t.encode_prompt("hello", true);
            let out = [world, cache, hello, world];
            let pieces = t.decode_stream(&prompt, &out);
            assert_eq!(pieces, [" world", " cache", " hello", " world"], "{llama2}");
            let all: Vec<u32> = prompt.iter().chain(&out).copied().collect();
            assert_eq!(
                t.decode(&prompt) + &pieces.concat(),
                t.decode(&all),
                "{llama2}"
            );
            // a byte-fallback newline is text of its own
            assert_eq!(t.decode_stream(&[hello], &[3, world]), ["\n", " world"]);
        }
    }

    #[test]
    fn decode_stream_waits_for_a_whole_character() {
        let t = WordTokenizer::default();
        // "é" is two byte tokens: the first adds nothing, the second the whole character
        let ids = t.encode("caf\u{e9} the");
        let pieces = t.decode_stream(&t.encode("a"), &ids);
        assert_eq!(pieces.concat(), "caf\u{e9} the");
        assert_eq!(pieces[3], "");
        assert_eq!(pieces[4], "\u{e9}");
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
