//! The emulator's time model: how long one continuous-batching step of a model on a GPU takes.
//!
//! A step runs the prefill chunks and the decode tokens the scheduler picked, after loading the
//! KV that LMCache returns for newly admitted requests:
//!
//! ```text
//! step = step_overhead
//!      + prefill FLOPs of every chunk (position-aware: attention over the context)
//!          / (2 * params * prefill_tokens_per_s)
//!      + [decode_ms_per_token + decode_us_per_seq * n + KV bytes of the n contexts / hbm]
//!          (only when the step decodes)
//!      + LMCache bytes loaded / pcie
//! ```
//!
//! Prefill is compute bound: `prefill_tokens_per_s` is the throughput at short context, and a
//! token deep in a long prompt costs more because attention reads the whole context
//! (`ModelSpec::prefill_flops_range`, the same cost model `simulate` uses for
//! `compute_saved_ratio`). Decode is memory bound: every step reads the weights once
//! (`decode_ms_per_token`, the batch-1 inter-token latency) and the KV cache of every sequence
//! in the batch. LMCache loads are host-to-device copies at PCIe bandwidth (vLLM's LMCache
//! connector loads synchronously before the forward pass by default).
//!
//! Defaults are derived from the model's shape and a GPU profile (an H100 SXM unless a YAML file
//! says otherwise); every number a user gives on the command line overrides the derived one.

use inferencelab_models::ModelSpec;
use serde::{Deserialize, Serialize};

/// A GPU's datasheet numbers and the efficiencies we assume for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuProfile {
    pub name: String,
    /// Dense bf16 tensor-core peak, FLOP/s. H100 SXM: 989.4 TFLOP/s (NVIDIA H100 datasheet,
    /// "BF16 Tensor Core" without sparsity).
    pub peak_flops: f64,
    /// Fraction of the peak a prefill reaches. 0.4 is typical of vLLM prefill on H100 for
    /// 7-8B models (long-prompt prefill throughputs of 20-25k tokens/s for Llama-3-8B).
    pub prefill_mfu: f64,
    /// HBM bandwidth, bytes/s. H100 SXM: 3.35 TB/s (datasheet).
    pub hbm_bytes_per_s: f64,
    /// Fraction of the HBM bandwidth a decode step reaches (0.8: batch-1 decode of an 8B bf16
    /// model takes ~6-7 ms per token on H100, i.e. 16 GB of weights at ~2.7 TB/s).
    pub hbm_efficiency: f64,
    /// Host-to-device copy bandwidth for LMCache loads, bytes/s. PCIe 5.0 x16 is 64 GB/s per
    /// direction; pinned-memory copies of paged KV reach roughly 25 GB/s in practice.
    pub pcie_bytes_per_s: f64,
    /// Fixed time per scheduler step (scheduling, sampling, kernel launches; vLLM V1 with CUDA
    /// graphs), milliseconds.
    pub step_overhead_ms: f64,
    /// Added per sequence in a decode batch (sampling, detokenization, per-sequence kernels),
    /// microseconds.
    pub decode_us_per_seq: f64,
}

impl Default for GpuProfile {
    fn default() -> Self {
        GpuProfile {
            name: "h100-sxm".into(),
            peak_flops: 989.4e12,
            prefill_mfu: 0.4,
            hbm_bytes_per_s: 3.35e12,
            hbm_efficiency: 0.8,
            pcie_bytes_per_s: 25e9,
            step_overhead_ms: 1.0,
            decode_us_per_seq: 10.0,
        }
    }
}

/// The resolved time model of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Prefill throughput at short context, tokens/s.
    pub prefill_tokens_per_s: f64,
    /// Decode step time at batch size 1, milliseconds.
    pub decode_ms_per_token: f64,
    pub decode_us_per_seq: f64,
    pub step_overhead_ms: f64,
    pub hbm_bytes_per_s: f64,
    pub pcie_bytes_per_s: f64,
    /// From the model: parameters (dense FLOPs per token are `2 * num_params`).
    pub num_params: f64,
    pub kv_bytes_per_token: u64,
    /// Attention FLOPs per token per context position: `4 * layers * heads * head_dim`.
    pub attn_flops_per_pos: f64,
}

impl Timing {
    /// The time model of `model` on `gpu`, with the user's overrides.
    pub fn derive(
        model: &ModelSpec,
        gpu: &GpuProfile,
        prefill_tokens_per_s: Option<f64>,
        decode_ms_per_token: Option<f64>,
    ) -> Timing {
        let dense_flops_per_token = 2.0 * model.num_params;
        let weight_bytes = model.num_params * model.dtype_bytes as f64;
        Timing {
            prefill_tokens_per_s: prefill_tokens_per_s
                .unwrap_or(gpu.peak_flops * gpu.prefill_mfu / dense_flops_per_token),
            decode_ms_per_token: decode_ms_per_token
                .unwrap_or(1000.0 * weight_bytes / (gpu.hbm_bytes_per_s * gpu.hbm_efficiency)),
            decode_us_per_seq: gpu.decode_us_per_seq,
            step_overhead_ms: gpu.step_overhead_ms,
            hbm_bytes_per_s: gpu.hbm_bytes_per_s * gpu.hbm_efficiency,
            pcie_bytes_per_s: gpu.pcie_bytes_per_s,
            num_params: model.num_params,
            kv_bytes_per_token: model.kv_bytes_per_token(),
            attn_flops_per_pos: 4.0
                * model.num_layers as f64
                * model.num_attention_heads as f64
                * model.head_dim as f64,
        }
    }

    /// Seconds to prefill the tokens at positions `from..to` of one sequence.
    pub fn prefill_seconds(&self, from: u64, to: u64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let count = (to - from) as f64;
        let pos_sum = (from + to - 1) as f64 * count / 2.0;
        let flops = 2.0 * self.num_params * count + self.attn_flops_per_pos * pos_sum;
        flops / (2.0 * self.num_params * self.prefill_tokens_per_s)
    }

    /// Seconds of one decode pass over `n` sequences holding `context_tokens` tokens in all.
    pub fn decode_seconds(&self, n: u64, context_tokens: u64) -> f64 {
        if n == 0 {
            return 0.0;
        }
        self.decode_ms_per_token / 1000.0
            + self.decode_us_per_seq * n as f64 / 1e6
            + (context_tokens * self.kv_bytes_per_token) as f64 / self.hbm_bytes_per_s
    }

    /// Seconds to load `tokens` tokens of KV from LMCache's CPU tier.
    pub fn load_seconds(&self, tokens: u64) -> f64 {
        (tokens * self.kv_bytes_per_token) as f64 / self.pcie_bytes_per_s
    }

    pub fn overhead_seconds(&self) -> f64 {
        self.step_overhead_ms / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_for_an_8b_model_on_h100_are_in_the_measured_range() {
        let m = inferencelab_models::resolve("qwen-8b").unwrap();
        let t = Timing::derive(&m, &GpuProfile::default(), None, None);
        assert!((20_000.0..30_000.0).contains(&t.prefill_tokens_per_s));
        assert!((5.0..8.0).contains(&t.decode_ms_per_token));
        // context makes later tokens dearer
        assert!(t.prefill_seconds(30_000, 31_000) > t.prefill_seconds(0, 1000));
        // a 1000-token load at 144 KiB/token and 25 GB/s takes ~6 ms
        assert!((t.load_seconds(1000) - 0.0059).abs() < 0.0005);
        // overrides win
        let t = Timing::derive(&m, &GpuProfile::default(), Some(1000.0), Some(20.0));
        assert_eq!(t.decode_ms_per_token, 20.0);
        assert!((t.prefill_seconds(0, 1000) - 1.0).abs() < 0.03);
    }
}
