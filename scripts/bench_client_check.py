#!/usr/bin/env python3
"""Client accuracy and overhead of `inferencelab bench`, next to vLLM's own client.

Both clients load the same fixed-delay streaming server (crates/bench/examples/
fixed_delay_server.rs: first token exactly --ttft-ms after the request was read, then a token
every --itl-ms). The server records, per x-request-id, when it read the request and when it
wrote the first token; a client's TTFT error is its measured TTFT minus that server-side TTFT
(what the transport and the client's own event loop add). Loopback only; every run is bounded.

  accuracy    TTFT error at 1, 100 and 1000 concurrent streams (closed loop), both clients.
  throughput  Streamed requests/s one client core sustains (client pinned to core 0, server
              to core 1, zero delays).
  peer        Both clients against `inferencelab serve` (the emulator, fresh for each client) on
              the same random workload: TTFT/TPOT/ITL/E2EL side by side.

Usage (from the repository root):
  cargo build --release -p inferencelab -p inferencelab-bench --example fixed_delay_server
  python3 -m venv /work/vllm-venv && /work/vllm-venv/bin/pip install vllm   # ~9 GB, optional
  python3 scripts/bench_client_check.py accuracy [--vllm-python /work/vllm-venv/bin/python]
  python3 scripts/bench_client_check.py throughput [--vllm-python ...]
Without --vllm-python (or when it cannot import vllm) only our client runs.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = os.environ.get("INFERENCELAB_BIN", os.path.join(ROOT, "target/release/inferencelab"))
SERVER = os.path.join(ROOT, "target/release/examples/fixed_delay_server")
VLLM_CLIENT = os.path.join(ROOT, "..", "shared", "tools", "vllm_bench_client.py")


def pin(core):
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and os.cpu_count() >= 2 else []


def start_server(ttft_ms, itl_ms, tokens):
    p = subprocess.Popen(
        pin(1) + [SERVER, "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms),
                  "--tokens", str(tokens), "--threads", "1"],
        stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        p.kill()
        sys.exit(f"fixed_delay_server did not start: {line!r}")
    return p, line.split()[-1]


def stop_server(p):
    p.terminate()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()


def server_stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=30) as r:
        return {x["id"]: x for x in json.load(r)["requests"]}


def make_tokenizer(py, d):
    """A local 32k-word WordLevel tokenizer for vLLM's random dataset (no download)."""
    code = f"""
from tokenizers import Tokenizer, models, pre_tokenizers, decoders
import json
vocab = {{"<unk>": 0, "<s>": 1, "</s>": 2}}
vocab.update({{f"w{{i}}": i for i in range(3, 32000)}})
t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
t.decoder = decoders.WordPiece(prefix="##")
t.save({os.path.join(d, 'tokenizer.json')!r})
json.dump({{"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>",
           "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 1000000}},
          open({os.path.join(d, 'tokenizer_config.json')!r}, "w"))
"""
    subprocess.run([py, "-c", code], check=True)


def run_ours(url, conc, n, out_tokens, out, threads=1, timeout=600):
    cmd = pin(0) + [OURS, "bench", "--base-url", url, "--model", "fixed", "--mode", "random",
                    "--random-input-len", "32", "--random-output-len", str(out_tokens),
                    "--num-prompts", str(n), "--max-concurrency", str(conc),
                    "--request-rate", "inf", "--metrics-interval", "0", "-q",
                    "--threads", str(threads), "--output-dir", out]
    subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    recs = [json.loads(l) for l in open(os.path.join(out, "requests.jsonl"))]
    res = json.load(open(os.path.join(out, "result.json")))
    return {r["request_id"]: r["ttft_s"] for r in recs if r["success"]}, res


def run_vllm(py, tok, url, conc, n, out_tokens, out, timeout=900):
    cmd = pin(0) + [py, VLLM_CLIENT, "--base-url", url, "--model", "fixed", "--tokenizer", tok,
                    "--dataset-name", "random", "--random-input-len", "32",
                    "--random-output-len", str(out_tokens), "--num-prompts", str(n),
                    "--max-concurrency", str(conc), "--request-rate", "inf",
                    "--request-id-prefix", "v-", "--ignore-eos", "--disable-tqdm",
                    "--save-result", "--save-detailed", "--result-dir", out,
                    "--result-filename", "r.json"]
    subprocess.run(cmd, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    res = json.load(open(os.path.join(out, "r.json")))
    ttfts = {f"v-{i}": t for i, (t, e) in enumerate(zip(res["ttfts"], res["errors"])) if not e}
    return ttfts, res


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def errors_ms(client, stats):
    return [(t - stats[i]["ttft_s"]) * 1e3 for i, t in client.items() if i in stats]


def accuracy(a):
    tmp = tempfile.mkdtemp(prefix="bench_check_")
    tok = os.path.join(tmp, "tok")
    os.makedirs(tok)
    vllm_py = a.vllm_python if a.vllm_python and vllm_ok(a.vllm_python) else None
    if vllm_py:
        make_tokenizer(vllm_py, tok)
    rows = []
    for conc in a.concurrency:
        n = max(a.min_requests, 3 * conc)
        for name in ["inferencelab"] + (["vllm"] if vllm_py else []):
            srv, url = start_server(a.ttft_ms, a.itl_ms, a.tokens)
            try:
                out = os.path.join(tmp, f"{name}_{conc}")
                if name == "inferencelab":
                    ttfts, res = run_ours(url, conc, n, a.tokens, out)
                else:
                    ttfts, res = run_vllm(vllm_py, tok, url, conc, n, a.tokens, out)
                stats = server_stats(url)
            finally:
                stop_server(srv)
            err = errors_ms(ttfts, stats)
            server_ttft = [s["ttft_s"] * 1e3 for s in stats.values()]
            client_ttft = [t * 1e3 for t in ttfts.values()]
            rows.append((conc, name, len(err), statistics.mean(err), pct(err, 50), pct(err, 99),
                         max(err), statistics.mean(client_ttft) - a.ttft_ms,
                         statistics.mean(server_ttft) - a.ttft_ms))
    print(f"fixed-delay server: TTFT {a.ttft_ms} ms, ITL {a.itl_ms} ms, {a.tokens} tokens; "
          "closed loop (--max-concurrency C, --request-rate inf), 3C requests (>= "
          f"{a.min_requests})")
    print("error = client TTFT - server-side TTFT of the same request (ms); "
          "nominal = mean client TTFT - configured TTFT; server late = mean server TTFT - configured")
    hdr = ("streams", "client", "n", "mean err", "p50 err", "p99 err", "max err", "nominal",
           "server late")
    print("{:>7} {:>12} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>11}".format(*hdr))
    for r in rows:
        print("{:>7} {:>12} {:>6} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>9.2f} {:>11.2f}".format(*r))
    if not vllm_py:
        print("(vLLM's client not run: give --vllm-python with vllm installed)")


def vllm_ok(py):
    return subprocess.run([py, "-c", "import vllm.benchmarks.serve"], capture_output=True).returncode == 0


def throughput(a):
    tmp = tempfile.mkdtemp(prefix="bench_tput_")
    tok = os.path.join(tmp, "tok")
    os.makedirs(tok)
    vllm_py = a.vllm_python if a.vllm_python and vllm_ok(a.vllm_python) else None
    if vllm_py:
        make_tokenizer(vllm_py, tok)
    print(f"zero-delay server, {a.tokens} tokens per request, closed loop at {a.conc} streams; "
          "client pinned to core 0, server to core 1")
    for name in ["inferencelab"] + (["vllm"] if vllm_py else []):
        srv, url = start_server(0, 0, a.tokens)
        try:
            out = os.path.join(tmp, name)
            if name == "inferencelab":
                _, res = run_ours(url, a.conc, a.requests, a.tokens, out, threads=1)
            else:
                _, res = run_vllm(vllm_py, tok, url, a.conc, a.vllm_requests, a.tokens, out)
        finally:
            stop_server(srv)
        print(f"{name:>12}: {res['completed']} requests in {res['duration']:.2f} s = "
              f"{res['request_throughput']:.0f} streamed requests/s "
              f"({res['request_throughput'] * a.tokens:.0f} chunks/s), failed {res['failed']}")


def start_serve(extra):
    p = subprocess.Popen(pin(1) + [OURS, "serve", "--port", "0", "--enable-prompt-tokens-details",
                                   "--log-file", os.devnull] + extra,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "listening on " in line:
            return p, line.strip().split()[-1]
    p.kill()
    sys.exit("inferencelab serve did not start")


def peer(a):
    tmp = tempfile.mkdtemp(prefix="bench_peer_")
    tok = os.path.join(tmp, "tok")
    os.makedirs(tok)
    vllm_py = a.vllm_python if a.vllm_python and vllm_ok(a.vllm_python) else None
    if not vllm_py:
        sys.exit("peer needs --vllm-python with vllm installed")
    make_tokenizer(vllm_py, tok)
    rows = []
    for name in ["inferencelab", "vllm"]:
        srv, url = start_serve(["--model", "qwen-8b"])
        try:
            out = os.path.join(tmp, name)
            common = ["--random-input-len", str(a.input_len), "--random-output-len",
                      str(a.output_len), "--num-prompts", str(a.n), "--request-rate", str(a.rate)]
            if name == "inferencelab":
                subprocess.run(pin(0) + [OURS, "bench", "--base-url", url, "--model", "qwen-8b",
                                         "--mode", "random", "--metrics-interval", "0", "-q",
                                         "--output-dir", out] + common,
                               check=True, timeout=600, stdout=subprocess.DEVNULL)
                res = json.load(open(os.path.join(out, "result.json")))
            else:
                subprocess.run(pin(0) + [vllm_py, VLLM_CLIENT, "--base-url", url, "--model",
                                         "qwen-8b", "--tokenizer", tok, "--dataset-name", "random",
                                         "--ignore-eos", "--disable-tqdm", "--save-result",
                                         "--result-dir", out, "--result-filename", "r.json",
                                         "--percentile-metrics", "ttft,tpot,itl,e2el"] + common,
                               check=True, timeout=900, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                res = json.load(open(os.path.join(out, "r.json")))
        finally:
            stop_server(srv)
        rows.append((name, res))
    print(f"inferencelab serve (qwen-8b emulated), random {a.input_len} in / {a.output_len} out, "
          f"{a.n} prompts, Poisson {a.rate} req/s; a fresh server per client")
    print("{:>24} {:>14} {:>14}".format("", *[r[0] for r in rows]))
    for key in ["completed", "total_input_tokens", "total_output_tokens", "mean_ttft_ms",
                "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms",
                "median_itl_ms", "p99_itl_ms", "mean_e2el_ms", "median_e2el_ms"]:
        vals = [r[1].get(key) for r in rows]
        print("{:>24} {:>14} {:>14}".format(key, *[
            f"{v:.2f}" if isinstance(v, float) else str(v) for v in vals]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ac = sub.add_parser("accuracy")
    ac.add_argument("--concurrency", type=int, nargs="+", default=[1, 100, 1000])
    ac.add_argument("--ttft-ms", type=float, default=100.0)
    ac.add_argument("--itl-ms", type=float, default=10.0)
    ac.add_argument("--tokens", type=int, default=16)
    ac.add_argument("--min-requests", type=int, default=200)
    ac.add_argument("--vllm-python")
    tp = sub.add_parser("throughput")
    tp.add_argument("--tokens", type=int, default=16)
    tp.add_argument("--conc", type=int, default=64)
    tp.add_argument("--requests", type=int, default=20000)
    tp.add_argument("--vllm-requests", type=int, default=5000)
    tp.add_argument("--vllm-python")
    pe = sub.add_parser("peer")
    pe.add_argument("--input-len", type=int, default=64)
    pe.add_argument("--output-len", type=int, default=64)
    pe.add_argument("-n", type=int, default=300)
    pe.add_argument("--rate", type=float, default=10.0)
    pe.add_argument("--vllm-python")
    a = ap.parse_args()
    for p in (OURS, SERVER):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: cargo build --release -p inferencelab -p inferencelab-bench "
                     "--example fixed_delay_server")
    {"accuracy": accuracy, "throughput": throughput, "peer": peer}[a.cmd](a)


if __name__ == "__main__":
    main()
