//! The model registry: KV-cache bytes per token and the numbers the prefill cost model needs.
//! Built-in entries are the files of `configs/models/*.yaml` (embedded in the binary); a
//! `configs/models/NAME.yaml` under the working directory overrides them, and a path to a YAML
//! file of the same shape or to a Hugging Face `config.json` works too.
//!
//! Its own crate, below `sim` and `emu` (both need a model's numbers, neither owns them); every
//! caller imports it from here.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A model that cannot be resolved or read; the message names the file or name and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Config(String),
}

pub type ModelResult<T> = Result<T, ModelError>;

/// One model's architecture numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    #[serde(default)]
    pub hf_id: Option<String>,
    /// Parameter count (for the prefill FLOPs model).
    pub num_params: f64,
    pub num_layers: u32,
    pub num_kv_heads: u32,
    pub num_attention_heads: u32,
    pub head_dim: u32,
    /// Bytes per KV element (2 for bf16/fp16, 1 for fp8).
    pub dtype_bytes: u32,
    #[serde(default)]
    pub tokenizer_family: Option<String>,
    /// The tokenizer's vocabulary (`vocab_size` of config.json): a log with a larger token id
    /// was not served by this model ([`fit_warnings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<u32>,
    /// Multi-head latent attention (DeepSeek-V2/V3): the cache holds one latent of
    /// `kv_lora_rank + qk_rope_head_dim` elements per token and layer instead of K and V heads
    /// (vLLM: `use_mla`, `get_num_kv_heads` = 1, head size = the latent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_lora_rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_rope_head_dim: Option<u32>,
    /// vLLM's `--tensor-parallel-size`: KV heads are split over the ranks (replicated when
    /// there are fewer heads than ranks; MLA's latent is replicated).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub tensor_parallel_size: u32,
    /// vLLM's `--pipeline-parallel-size`: layers are split over the stages.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub pipeline_parallel_size: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// LMCache's `TensorMemoryAllocator` rounds every allocation up to 4 KiB
/// (`v1/memory_management.py`, `ALIGN_BYTES`).
pub const LMCACHE_ALIGN_BYTES: u64 = 4096;

impl ModelSpec {
    /// The same model served with `tp` x `pp` ranks.
    pub fn with_parallelism(mut self, tp: u32, pp: u32) -> Self {
        self.tensor_parallel_size = tp.max(1);
        self.pipeline_parallel_size = pp.max(1);
        self
    }

    pub fn is_mla(&self) -> bool {
        self.kv_lora_rank.is_some()
    }

    /// Layers one rank holds: the largest pipeline stage (vLLM's `get_pp_indices` gives the
    /// remainder layers to some stages, one each), which fills first.
    pub fn layers_per_rank(&self) -> u32 {
        self.num_layers.div_ceil(self.pipeline_parallel_size.max(1))
    }

    /// KV heads one rank holds and the elements per head (vLLM's `get_num_kv_heads`,
    /// `get_head_size`): MLA caches one latent head.
    pub fn kv_heads_per_rank(&self) -> (u32, u32) {
        match self.kv_lora_rank {
            Some(rank) => (1, rank + self.qk_rope_head_dim.unwrap_or(0)),
            None => (
                (self.num_kv_heads / self.tensor_parallel_size.max(1)).max(1),
                self.head_dim,
            ),
        }
    }

    /// The spec when its numbers make a model: layers, heads, head size and dtype bytes of at
    /// least 1, a finite parameter count, and a KV size per token that fits 32 bits (the sizes
    /// below multiply them; a model YAML with 4e9 layers must be an error, not an overflow).
    pub fn checked(self, origin: &Path) -> ModelResult<ModelSpec> {
        let bad = |what: String| {
            Err(ModelError::Config(format!(
                "{}: {what} (model {})",
                origin.display(),
                self.name
            )))
        };
        for (key, v) in [
            ("num_layers", self.num_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("dtype_bytes", self.dtype_bytes),
        ] {
            if v == 0 {
                return bad(format!("{key} is 0; it must be at least 1"));
            }
        }
        if self.kv_lora_rank.is_none() && (self.num_kv_heads == 0 || self.head_dim == 0) {
            return bad("num_kv_heads and head_dim must be at least 1".into());
        }
        if !(self.num_params.is_finite() && self.num_params >= 0.0) {
            return bad(format!("num_params {} is not a count", self.num_params));
        }
        let head_size = match self.kv_lora_rank {
            Some(r) => r.checked_add(self.qk_rope_head_dim.unwrap_or(0)),
            None => Some(self.head_dim),
        };
        let per_token = head_size.and_then(|h| {
            2u64.checked_mul(self.num_layers as u64)?
                .checked_mul(self.num_kv_heads.max(1) as u64)?
                .checked_mul(h as u64)?
                .checked_mul(self.dtype_bytes as u64)
        });
        match per_token {
            Some(b) if b > 0 && b <= u32::MAX as u64 => Ok(self),
            _ => bad(
                "its KV bytes per token (2 x layers x kv heads x head size x dtype bytes) are \
                 0 or beyond 4 GiB; check the numbers"
                    .into(),
            ),
        }
    }

    /// KV-cache bytes of one token on one rank, what a GPU's (and an LMCache worker's) memory
    /// is divided by: `kv_size * layers * heads * head_size * dtype_bytes`, kv_size 2 (K and V)
    /// or 1 (MLA's latent). With one rank: the whole model's.
    pub fn kv_bytes_per_token(&self) -> u64 {
        let (heads, head_size) = self.kv_heads_per_rank();
        let kv_size = if self.is_mla() { 1 } else { 2 };
        kv_size
            * self.layers_per_rank() as u64
            * heads as u64
            * head_size as u64
            * self.dtype_bytes as u64
    }

    /// LMCache's chunks of `chunk_size` tokens in `gib` GiB of one worker's
    /// `max_local_cpu_size`: a chunk's bytes are rounded up to [`LMCACHE_ALIGN_BYTES`].
    pub fn lmcache_chunks_in_gib(&self, gib: f64, chunk_size: u32) -> u64 {
        // u128: a 4e9-token chunk of a large model passes u64
        let chunk = (self.kv_bytes_per_token() as u128 * chunk_size as u128)
            .next_multiple_of(LMCACHE_ALIGN_BYTES as u128);
        ((gib * (1u64 << 30) as f64) / chunk as f64).floor() as u64
    }

    /// `gib` GiB over the bytes of one `chunk_size`-token chunk, unrounded: the size LMCache's
    /// multi-process L1 measures its usage ratio against (bytes over bytes).
    pub fn lmcache_chunks_in_gib_unrounded(&self, gib: f64, chunk_size: u32) -> f64 {
        let chunk = (self.kv_bytes_per_token() as f64 * chunk_size as f64).max(1.0);
        gib * (1u64 << 30) as f64 / chunk
    }

    /// Prefill FLOPs of tokens at positions `0..n` (a whole prompt computed from scratch):
    /// `2 * params` per token for the dense layers plus attention scores and values,
    /// `4 * layers * heads * head_dim * p` FLOPs for the token at position `p`
    /// (Kaplan et al. 2020, "Scaling Laws", section 2.1, with context-dependent attention).
    pub fn prefill_flops(&self, n: u64) -> f64 {
        self.prefill_flops_range(0, n)
    }

    /// Prefill FLOPs of the tokens at positions `from..to` (a cached prefix of `from` tokens).
    pub fn prefill_flops_range(&self, from: u64, to: u64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let count = (to - from) as f64;
        // sum of positions from..to-1
        let pos_sum = (from + to - 1) as f64 * count / 2.0;
        let attn =
            4.0 * self.num_layers as f64 * self.num_attention_heads as f64 * self.head_dim as f64;
        2.0 * self.num_params * count + attn * pos_sum
    }

    /// Blocks of `block_size` tokens that fit in `gib` GiB of KV memory.
    pub fn blocks_in_gib(&self, gib: f64, block_size: u32) -> u64 {
        ((gib * (1u64 << 30) as f64) / (self.kv_bytes_per_token() as f64 * block_size as f64))
            .floor() as u64
    }
}

const BUILTIN: [(&str, &str); 6] = [
    (
        "qwen-8b",
        include_str!("../../../configs/models/qwen-8b.yaml"),
    ),
    (
        "qwen-32b",
        include_str!("../../../configs/models/qwen-32b.yaml"),
    ),
    (
        "llama-8b",
        include_str!("../../../configs/models/llama-8b.yaml"),
    ),
    (
        "llama-70b",
        include_str!("../../../configs/models/llama-70b.yaml"),
    ),
    (
        "mistral-7b",
        include_str!("../../../configs/models/mistral-7b.yaml"),
    ),
    (
        "deepseek-v2-lite",
        include_str!("../../../configs/models/deepseek-v2-lite.yaml"),
    ),
];

/// Names of the built-in models.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Resolve a model by registry name, YAML path or Hugging Face `config.json` path.
pub fn resolve(name_or_path: &str) -> ModelResult<ModelSpec> {
    let path = Path::new(name_or_path);
    if name_or_path.ends_with(".json") {
        return from_hf_config(path);
    }
    if name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") {
        return from_yaml_file(path);
    }
    let local = Path::new("configs/models").join(format!("{name_or_path}.yaml"));
    if local.is_file() {
        return from_yaml_file(&local);
    }
    let builtin = |(n, text): &(&str, &str)| -> ModelResult<ModelSpec> {
        serde_norway::from_str(text)
            .map_err(|e| ModelError::Config(format!("built-in model {n}: {e}")))
    };
    if let Some(entry) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
        return builtin(entry);
    }
    // a Hugging Face id of a registered model (what `vllm serve` is given) works too
    for entry in &BUILTIN {
        let spec = builtin(entry)?;
        if spec
            .hf_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(name_or_path))
        {
            return Ok(spec);
        }
    }
    Err(ModelError::Config(format!(
        "unknown model '{name_or_path}'; use one of {} (configs/models/*.yaml), their Hugging \
         Face ids, a path to a model YAML, or a Hugging Face config.json",
        builtin_names().join(", ")
    )))
}

fn from_yaml_file(path: &Path) -> ModelResult<ModelSpec> {
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    let spec: ModelSpec = serde_norway::from_str(&text).map_err(|e| {
        ModelError::Config(format!(
            "{}{}: {e}",
            path.display(),
            e.location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default()
        ))
    })?;
    spec.checked(path)
}

/// Read the architecture numbers from a Hugging Face `config.json`.
pub fn from_hf_config(path: &Path) -> ModelResult<ModelSpec> {
    let text = inferencelab_trace::fsutil::read_input_string(path)
        .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::Config(format!("{}:{}: {e}", path.display(), e.line())))?;
    let get = |k: &str| v.get(k).and_then(|x| x.as_f64());
    let need = |k: &str| {
        get(k).ok_or_else(|| {
            ModelError::Config(format!("{}: missing numeric field '{k}'", path.display()))
        })
    };
    let layers = need("num_hidden_layers")?;
    let heads = need("num_attention_heads")?;
    let kv_heads = get("num_key_value_heads").unwrap_or(heads);
    let hidden = need("hidden_size")?;
    let head_dim = get("head_dim").unwrap_or(hidden / heads);
    let dtype_bytes = match v
        .get("torch_dtype")
        .or(v.get("dtype"))
        .and_then(|d| d.as_str())
    {
        Some("float32") => 4,
        Some("float8_e4m3fn") | Some("fp8") => 1,
        _ => 2,
    };
    // A rough parameter count when the config does not give one: embeddings plus
    // 12 * hidden^2 per layer scaled by the MLP width (intermediate_size).
    let inter = get("intermediate_size").unwrap_or(4.0 * hidden);
    let vocab = get("vocab_size").unwrap_or(32000.0);
    let attn_params = hidden * (heads * head_dim) * 2.0 + hidden * (kv_heads * head_dim) * 2.0;
    let params = layers * (attn_params + 3.0 * hidden * inter) + 2.0 * vocab * hidden;
    let kv_lora_rank = get("kv_lora_rank").map(|x| x as u32);
    let qk_rope_head_dim = get("qk_rope_head_dim").map(|x| x as u32);
    let name = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hf-model".into());
    ModelSpec {
        name,
        hf_id: None,
        num_params: params,
        num_layers: layers as u32,
        num_kv_heads: kv_heads as u32,
        num_attention_heads: heads as u32,
        head_dim: head_dim as u32,
        dtype_bytes,
        tokenizer_family: None,
        vocab_size: get("vocab_size").map(|x| x as u32),
        kv_lora_rank,
        qk_rope_head_dim: kv_lora_rank.and(qk_rope_head_dim),
        tensor_parallel_size: 1,
        pipeline_parallel_size: 1,
    }
    .checked(path)
}

/// The model a vLLM server log says it served, from its engine start line (`Initializing a V1
/// LLM engine (v0.32.0) with config: model='/models/x', ..., served_model_name=x, ...`, vLLM's
/// `VllmConfig.__str__`) or its `non-default args: {'model': ...}` line; None when the log has
/// neither (a log cut to the request lines).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogModel {
    pub model: Option<String>,
    pub served_model_name: Option<String>,
    /// The tokenizer the start line names (`tokenizer='...'`, `'tokenizer': '...'`).
    pub tokenizer: Option<String>,
}

/// The tokenizer `convert`'s logs name when the embedded o200k_base stand-in tokenized them
/// (no tokenizer.json of the model at hand): their ids are not the model's, so a token id
/// beyond its vocabulary says nothing about the model. One literal with the writer's.
pub use inferencelab_trace::vllm_log::write::STAND_IN_TOKENIZER as CONVERT_STAND_IN_TOKENIZER;

impl LogModel {
    pub fn from_log_head(text: &str) -> LogModel {
        let mut out = LogModel::default();
        for line in text.lines() {
            if out.model.is_none() {
                out.model = between(line, "with config: model='", "'")
                    .or_else(|| between(line, "'model': '", "'"))
                    .map(str::to_string);
            }
            if out.served_model_name.is_none() {
                out.served_model_name = between(line, "served_model_name=", ",")
                    .or_else(|| between(line, "'served_model_name': ['", "'"))
                    .map(str::to_string);
            }
            if out.tokenizer.is_none() {
                out.tokenizer = between(line, ", tokenizer='", "'")
                    .or_else(|| between(line, "'tokenizer': '", "'"))
                    .map(str::to_string);
            }
            if out.model.is_some() && out.served_model_name.is_some() && out.tokenizer.is_some() {
                break;
            }
        }
        out
    }
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?]).filter(|s| !s.is_empty())
}

/// Why a vLLM log may not be `spec`'s (given as `--model model_arg`): a token id beyond its
/// vocabulary, or a log whose server ran another model (checked when `--model` names the
/// registry; a config.json or YAML path is taken as the user's word). Every warning says how
/// to pass the right model's `config.json`. The KV sizes (GPU blocks per GiB, LMCache chunks
/// per GiB) come from `--model`, so a wrong one gives a wrong tier. A log whose start line names
/// `convert`'s stand-in tokenizer ([`CONVERT_STAND_IN_TOKENIZER`]) has ids that are not the
/// model's: its vocabulary is not checked.
pub fn fit_warnings(
    spec: &ModelSpec,
    model_arg: &str,
    log: &LogModel,
    max_token_id: Option<u32>,
) -> Vec<String> {
    let fix = match log.model.as_deref() {
        Some(m) if Path::new(m).join("config.json").is_file() => {
            format!("pass its config: --model {m}/config.json")
        }
        Some(m) => format!(
            "pass its Hugging Face config.json (--model DIR/config.json, e.g. from \
             `huggingface-cli download {m} config.json`) or a model YAML (configs/models/)"
        ),
        None => "pass the served model's Hugging Face config.json (--model DIR/config.json) or \
                 a model YAML (configs/models/)"
            .into(),
    };
    let mut out = Vec::new();
    let by_path =
        model_arg.ends_with(".json") || model_arg.ends_with(".yaml") || model_arg.ends_with(".yml");
    if let (false, Some(m)) = (by_path, log.model.as_deref()) {
        let tail = |s: &str| {
            s.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(s)
                .to_ascii_lowercase()
        };
        let names: Vec<String> = [Some(spec.name.as_str()), spec.hf_id.as_deref()]
            .into_iter()
            .flatten()
            .map(tail)
            .collect();
        let fits = [Some(m), log.served_model_name.as_deref()]
            .into_iter()
            .flatten()
            .any(|n| names.contains(&tail(n)));
        if !fits {
            out.push(format!(
                "the log's server ran model '{m}'{}, not --model {model_arg}{}: KV bytes per \
                 token, GPU blocks and LMCache chunks per GiB are {model_arg}'s; {fix}",
                log.served_model_name
                    .as_deref()
                    .map(|s| format!(" (served as '{s}')"))
                    .unwrap_or_default(),
                spec.hf_id
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default(),
            ));
        }
    }
    let stand_in = log.tokenizer.as_deref() == Some(CONVERT_STAND_IN_TOKENIZER);
    if let (Some(v), Some(t), false) = (spec.vocab_size, max_token_id, stand_in) {
        if t >= v {
            out.push(format!(
                "the log has token id {t}, beyond --model {model_arg}'s vocabulary of {v} \
                 tokens: it was served by another model; {fix}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_of_another_model_is_warned_about_naming_the_fix() {
        let head = "(EngineCore pid=9) INFO 12-04 16:40:01 [core.py:93] Initializing a V1 LLM \
                    engine (v0.32.0) with config: model='/nonexistent/tiny', speculative_config=None, \
                    tokenizer='/nonexistent/tiny', served_model_name=tiny-qwen2, enable_prefix_caching=True\n";
        let log = LogModel::from_log_head(head);
        assert_eq!(log.model.as_deref(), Some("/nonexistent/tiny"));
        assert_eq!(log.served_model_name.as_deref(), Some("tiny-qwen2"));
        let qwen = resolve("qwen-8b").unwrap();
        assert_eq!(qwen.vocab_size, Some(151936));
        let w = fit_warnings(&qwen, "qwen-8b", &log, Some(199_999));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("ran model '/nonexistent/tiny' (served as 'tiny-qwen2'), not --model qwen-8b (Qwen/Qwen3-8B)"), "{}", w[0]);
        assert!(
            w[1].contains("token id 199999, beyond --model qwen-8b's vocabulary of 151936"),
            "{}",
            w[1]
        );
        assert!(w.iter().all(|w| w.contains("config.json")));
        // the model's own log: no warning (by HF id, by registry name, by served name)
        let own = LogModel {
            model: Some("Qwen/Qwen3-8B".into()),
            served_model_name: Some("Qwen/Qwen3-8B".into()),
            tokenizer: None,
        };
        assert!(fit_warnings(&qwen, "qwen-8b", &own, Some(151_935)).is_empty());
        let served = LogModel {
            model: Some("/models/weights".into()),
            served_model_name: Some("qwen-8b".into()),
            tokenizer: None,
        };
        assert!(fit_warnings(&qwen, "qwen-8b", &served, None).is_empty());
        // a path is the user's word; a log without a start line is judged by its tokens only
        assert!(fit_warnings(&qwen, "x/config.json", &log, Some(10)).is_empty());
        assert!(fit_warnings(&qwen, "qwen-8b", &LogModel::default(), Some(10)).is_empty());
        let args = LogModel::from_log_head(
            "(APIServer pid=1) INFO 12-04 16:39:50 [utils.py:253] non-default args: {'model_tag': \
             '/m', 'model': '/m', 'served_model_name': ['tiny'], 'block_size': 32}\n",
        );
        assert_eq!(args.model.as_deref(), Some("/m"));
        assert_eq!(args.served_model_name.as_deref(), Some("tiny"));
        assert_eq!(args.tokenizer, None);
        assert_eq!(log.tokenizer.as_deref(), Some("/nonexistent/tiny"));
    }

    #[test]
    fn a_log_tokenized_by_converts_stand_in_is_not_judged_by_its_ids() {
        // `convert` without the model's tokenizer.json: o200k_base ids (up to ~200k) in a log
        // of Qwen3-8B (vocabulary 151,936)
        let head = "(APIServer pid=9) INFO 06-02 09:00:00 [utils.py:253] non-default args: \
                    {'model_tag': 'Qwen/Qwen3-8B', 'model': 'Qwen/Qwen3-8B', 'tokenizer': \
                    'o200k_base', 'enable_log_requests': True, 'enable_log_outputs': True}\n";
        let log = LogModel::from_log_head(head);
        assert_eq!(log.model.as_deref(), Some("Qwen/Qwen3-8B"));
        assert_eq!(log.tokenizer.as_deref(), Some(CONVERT_STAND_IN_TOKENIZER));
        let qwen = resolve("qwen-8b").unwrap();
        assert!(fit_warnings(&qwen, "qwen-8b", &log, Some(198_605)).is_empty());
        // the model is still checked: the same log given as another model's
        let llama = resolve("llama-8b").unwrap();
        let w = fit_warnings(&llama, "llama-8b", &log, Some(198_605));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("ran model 'Qwen/Qwen3-8B'"), "{}", w[0]);
        // any other tokenizer's ids are the model's: checked
        let other = LogModel {
            tokenizer: Some("Qwen/Qwen3-8B".into()),
            ..log
        };
        assert_eq!(
            fit_warnings(&qwen, "qwen-8b", &other, Some(198_605)).len(),
            1
        );
    }

    #[test]
    fn kv_bytes_match_design_doc() {
        // DESIGN.md section 5: Qwen3-8B 147,456 B/token, Llama-3.1-8B 131,072 B/token
        assert_eq!(resolve("qwen-8b").unwrap().kv_bytes_per_token(), 147_456);
        assert_eq!(resolve("llama-8b").unwrap().kv_bytes_per_token(), 131_072);
        assert_eq!(resolve("qwen-32b").unwrap().kv_bytes_per_token(), 262_144);
        assert_eq!(resolve("llama-70b").unwrap().kv_bytes_per_token(), 327_680);
        assert_eq!(resolve("mistral-7b").unwrap().kv_bytes_per_token(), 131_072);
    }

    #[test]
    fn gib_to_blocks() {
        let m = resolve("llama-8b").unwrap();
        // 1 GiB / (128 KiB * 16) = 512 blocks
        assert_eq!(m.blocks_in_gib(1.0, 16), 512);
    }

    #[test]
    fn lmcache_chunks_per_gib_are_lmcaches() {
        // LMCache 0.5.6's own sizing (integration/vllm/utils.py kv_shape over vLLM 0.33's
        // ModelConfig, TensorMemoryAllocator's 4 KiB alignment), chunk 256, max_local_cpu_size 1
        let q = resolve("qwen-8b").unwrap();
        for (tp, chunks) in [(1, 28), (2, 56), (4, 113)] {
            let m = q.clone().with_parallelism(tp, 1);
            assert_eq!(m.lmcache_chunks_in_gib(1.0, 256), chunks, "qwen-8b TP{tp}");
        }
        // MLA: one latent of 512 + 64 per token and layer, replicated over TP ranks
        let d = resolve("deepseek-v2-lite").unwrap();
        assert!(d.is_mla());
        assert_eq!(d.kv_bytes_per_token(), 27 * 576 * 2);
        for tp in [1, 2] {
            let m = d.clone().with_parallelism(tp, 1);
            assert_eq!(
                m.lmcache_chunks_in_gib(1.0, 256),
                134,
                "deepseek-v2-lite TP{tp}"
            );
        }
        // pipeline stages split the layers; the largest stage (36 / 5 -> 8 layers) fills first
        let m = q.clone().with_parallelism(1, 5);
        assert_eq!(m.layers_per_rank(), 8);
        assert_eq!(m.kv_bytes_per_token(), 147_456 / 36 * 8);
        // fewer KV heads than ranks: replicated, one head each
        assert_eq!(q.with_parallelism(16, 1).kv_heads_per_rank(), (1, 128));
        // the 4 KiB round-up: a one-token MLA chunk is 31,104 B, allocated as 32 KiB
        assert_eq!(d.lmcache_chunks_in_gib(1.0, 1), (1u64 << 30) / 32_768);
        // llama-8b: 100-token chunks are 12.5 MiB exactly
        assert_eq!(
            resolve("llama-8b").unwrap().lmcache_chunks_in_gib(1.0, 100),
            81
        );
    }

    #[test]
    fn prefill_flops_are_additive_over_ranges() {
        let m = resolve("qwen-8b").unwrap();
        let whole = m.prefill_flops(1000);
        let split = m.prefill_flops_range(0, 400) + m.prefill_flops_range(400, 1000);
        assert!((whole - split).abs() / whole < 1e-12);
        // later tokens cost more than earlier ones (attention over the context)
        assert!(m.prefill_flops_range(900, 1000) > m.prefill_flops_range(0, 100));
    }

    #[test]
    fn hugging_face_ids_resolve_to_registry_entries() {
        assert_eq!(resolve("Qwen/Qwen3-8B").unwrap().name, "qwen-8b");
        assert_eq!(
            resolve("meta-llama/Llama-3.1-70B-Instruct").unwrap().name,
            "llama-70b"
        );
    }

    #[test]
    fn unknown_model_names_the_choices() {
        let err = resolve("gpt-9").unwrap_err().to_string();
        assert!(
            err.contains("qwen-8b") && err.contains("config.json"),
            "{err}"
        );
    }

    #[test]
    fn hf_config_json_is_read() {
        let dir = std::env::temp_dir().join(format!("il-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("config.json");
        std::fs::write(
            &p,
            r#"{"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_size": 4096, "torch_dtype": "bfloat16", "intermediate_size": 14336,
                "vocab_size": 128256}"#,
        )
        .unwrap();
        let m = resolve(p.to_str().unwrap()).unwrap();
        assert_eq!(m.kv_bytes_per_token(), 131_072);
        assert!(!m.is_mla());
        assert!(
            (m.num_params / 8.03e9 - 1.0).abs() < 0.05,
            "{}",
            m.num_params
        );
    }
}
