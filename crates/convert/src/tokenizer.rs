//! Text -> token ids. A Hugging Face `tokenizer.json` (given, or found in the local Hugging Face
//! cache for the model's `hf_id`) through the `tokenizers` crate (pure Rust build: fancy-regex,
//! no hub access); otherwise OpenAI's o200k_base ranks embedded in the binary (`tiktoken-rs`).
//! Nothing is ever downloaded.

use std::path::{Path, PathBuf};

use crate::error::{ConvertError, ConvertResult};

/// Why a tokenizer.json cannot be read by a build without the `hf-tokenizer` feature.
#[cfg(not(feature = "hf-tokenizer"))]
const NO_HF: &str = "this build reads no tokenizer.json (built without the hf-tokenizer \
    feature, to keep the first build short): rebuild with `cargo build --release --features \
    hf-tokenizer` (or `cargo install --path crates/cli --features hf-tokenizer`)";

pub enum TextTokenizer {
    #[cfg(feature = "hf-tokenizer")]
    HuggingFace {
        tokenizer: Box<tokenizers::Tokenizer>,
        path: PathBuf,
    },
    /// The embedded o200k_base BPE: plain text only (special-token strings are ordinary text).
    O200k(&'static tiktoken_rs::CoreBPE),
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How the tokenizer was chosen.
#[derive(Debug)]
pub struct LoadedTokenizer {
    pub tokenizer: TextTokenizer,
    /// Set when the embedded fallback is used: why (one line, for the user).
    pub fallback_reason: Option<String>,
}

impl TextTokenizer {
    /// Load a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> ConvertResult<Self> {
        let bytes = std::fs::read(path).map_err(|e| ConvertError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        #[cfg(feature = "hf-tokenizer")]
        {
            let tokenizer =
                tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| ConvertError::Tokenizer {
                    path: path.to_path_buf(),
                    reason: format!("not a Hugging Face tokenizer.json this build can load: {e}"),
                })?;
            Ok(TextTokenizer::HuggingFace {
                tokenizer: Box::new(tokenizer),
                path: path.to_path_buf(),
            })
        }
        #[cfg(not(feature = "hf-tokenizer"))]
        {
            let _ = bytes;
            Err(ConvertError::Tokenizer {
                path: path.to_path_buf(),
                reason: NO_HF.into(),
            })
        }
    }

    /// The embedded o200k_base tokenizer (decoded once per process, ~0.1 s).
    pub fn embedded() -> Self {
        TextTokenizer::O200k(tiktoken_rs::o200k_base_singleton())
    }

    /// Token ids of `text` as vLLM's chat endpoint tokenizes a rendered template: special-token
    /// strings become their ids, no BOS/EOS added (`add_special_tokens=False`).
    pub fn encode(&self, text: &str) -> ConvertResult<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            #[cfg(feature = "hf-tokenizer")]
            TextTokenizer::HuggingFace { tokenizer, path } => tokenizer
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| ConvertError::Tokenizer {
                    path: path.clone(),
                    reason: format!(
                        "cannot encode {:?}...: {e}",
                        text.chars().take(40).collect::<String>()
                    ),
                }),
            TextTokenizer::O200k(bpe) => Ok(bpe.encode_ordinary(text)),
        }
    }

    /// One line naming the tokenizer (for the summary and the trace's notes).
    pub fn describe(&self) -> String {
        match self {
            #[cfg(feature = "hf-tokenizer")]
            TextTokenizer::HuggingFace { path, .. } => format!("Hugging Face {}", path.display()),
            TextTokenizer::O200k(_) => "embedded o200k_base (approximate token counts)".into(),
        }
    }

    pub fn is_fallback(&self) -> bool {
        matches!(self, TextTokenizer::O200k(_))
    }
}

/// The Hugging Face hub cache directory, as `huggingface_hub` finds it: `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// `tokenizer.json` of `hf_id` (`Org/Name`) in a hub cache: the snapshot `refs/main` points to,
/// else any snapshot that has one (the lexically first, for determinism).
pub fn find_in_hf_cache(cache: &Path, hf_id: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{}", hf_id.replace('/', "--")));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let p = snapshots.join(rev.trim()).join("tokenizer.json");
        if p.is_file() {
            return Some(p);
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join("tokenizer.json"))
        .find(|p| p.is_file())
}

/// `--tokenizer PATH` if given (an error when it does not load), else the model's tokenizer from
/// the local Hugging Face cache, else the embedded fallback with the reason.
pub fn load_tokenizer(
    explicit: Option<&Path>,
    hf_id: Option<&str>,
) -> ConvertResult<LoadedTokenizer> {
    if let Some(p) = explicit {
        return Ok(LoadedTokenizer {
            tokenizer: TextTokenizer::from_file(p)?,
            fallback_reason: None,
        });
    }
    let cache = hf_cache_dir();
    if let (Some(id), Some(cache)) = (hf_id, cache.as_deref()) {
        if let Some(p) = find_in_hf_cache(cache, id) {
            #[cfg(not(feature = "hf-tokenizer"))]
            return Ok(LoadedTokenizer {
                tokenizer: TextTokenizer::embedded(),
                fallback_reason: Some(format!("{}: {NO_HF}", p.display())),
            });
            #[cfg(feature = "hf-tokenizer")]
            return Ok(LoadedTokenizer {
                tokenizer: TextTokenizer::from_file(&p)?,
                fallback_reason: None,
            });
        }
    }
    let reason = match (hf_id, cache) {
        (Some(id), Some(cache)) => format!(
            "no tokenizer.json for {id} in the Hugging Face cache ({})",
            cache
                .join(format!("models--{}", id.replace('/', "--")))
                .display()
        ),
        (Some(id), None) => {
            format!("no Hugging Face cache directory to look for {id}'s tokenizer.json")
        }
        (None, _) => "the model has no hf_id to look its tokenizer up by".into(),
    };
    Ok(LoadedTokenizer {
        tokenizer: TextTokenizer::embedded(),
        fallback_reason: Some(reason),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny word-level tokenizer.json with ChatML's special tokens: enough to check that
    /// special-token strings map to their ids and that block-wise encoding is exact.
    pub(crate) fn tiny_tokenizer_json() -> String {
        let words = [
            "[UNK]",
            "user",
            "assistant",
            "system",
            "hi",
            "hello",
            "and",
            "?",
            "Be",
            "brief",
            ".",
        ];
        // ChatML's specials first (ids 0 and 1), Llama 3's and Mistral's after the words.
        let specials = [
            "<|im_start|>",
            "<|im_end|>",
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<s>",
            "</s>",
            "[INST]",
            "[/INST]",
        ];
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        let mut next = 0u32;
        let mut add =
            |tok: &str, special: bool, vocab: &mut serde_json::Map<String, serde_json::Value>| {
                vocab.insert(tok.into(), next.into());
                if special {
                    added.push(
                        serde_json::json!({"id": next, "content": tok, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
                    );
                }
                next += 1;
            };
        for s in &specials[..2] {
            add(s, true, &mut vocab);
        }
        for w in words {
            add(w, false, &mut vocab);
        }
        for s in &specials[2..] {
            add(s, true, &mut vocab);
        }
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        })
        .to_string()
    }

    pub(crate) fn tiny_tokenizer() -> (tempfile::TempDir, TextTokenizer) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, tiny_tokenizer_json()).unwrap();
        let t = TextTokenizer::from_file(&p).unwrap();
        (dir, t)
    }

    #[test]
    fn hf_tokenizer_maps_special_tokens_and_adds_nothing() {
        let (_d, t) = tiny_tokenizer();
        assert_eq!(
            t.encode("<|im_start|>user\nhi<|im_end|>\n").unwrap(),
            vec![0, 3, 6, 1]
        );
        assert_eq!(
            t.encode("zebra").unwrap(),
            vec![2],
            "unknown words map to [UNK]"
        );
        assert!(!t.is_fallback());
    }

    #[test]
    fn a_bad_tokenizer_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{\"model\": 3}").unwrap();
        let e = TextTokenizer::from_file(&p).unwrap_err().to_string();
        assert!(
            e.starts_with("tokenizer ") && e.contains("tokenizer.json"),
            "{e}"
        );
        let e = load_tokenizer(Some(&dir.path().join("missing.json")), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
    }

    #[test]
    fn hf_cache_lookup_follows_refs_main() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--Qwen--Qwen3-8B");
        for rev in ["aaa", "bbb"] {
            std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
            std::fs::write(
                repo.join("snapshots").join(rev).join("tokenizer.json"),
                "{}",
            )
            .unwrap();
        }
        assert_eq!(
            find_in_hf_cache(cache.path(), "Qwen/Qwen3-8B").unwrap(),
            repo.join("snapshots/aaa/tokenizer.json")
        );
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "bbb\n").unwrap();
        assert_eq!(
            find_in_hf_cache(cache.path(), "Qwen/Qwen3-8B").unwrap(),
            repo.join("snapshots/bbb/tokenizer.json")
        );
        assert!(find_in_hf_cache(cache.path(), "meta-llama/Llama-3.1-8B-Instruct").is_none());
    }

    #[test]
    fn embedded_fallback_tokenizes_plain_text() {
        let t = TextTokenizer::embedded();
        let ids = t.encode("Hello, world! How are you today?").unwrap();
        assert!((6..=12).contains(&ids.len()), "{ids:?}");
        assert!(t.is_fallback());
        assert!(t.encode("").unwrap().is_empty());
    }
}
