#!/usr/bin/env python3
"""`inferencelab serve` against a real vLLM, request by request (issue 25).

The same cases (valid requests, streaming, n, batches, stop, echo, logprobs, bad values, bad
bodies, /tokenize, /detokenize, /metrics, ...) go to both servers; for each the script compares
what does not depend on the model's weights:

  status       the HTTP status
  shape        the JSON key structure with value types (`null` differs from a string), or the
               content type and body of a non-JSON answer
  error        error.type, error.param, error.code
  usage        prompt_tokens always; completion/total tokens when both finished for the same
               reason (a random-weight model may end early)
  finish       every choice's finish_reason and whether stop_reason is what the case expects
  framing      SSE: the `data:` events in order (role, content, finish, usage, [DONE]), each
               kind's chunk shape
  metrics      every vLLM `vllm:*` family is in serve's /metrics with the same type and label
               names
  property     a derived fact (the same text twice under a seed, text that starts with the
               prompt under echo, ...)

Modes:
  --vllm URL --serve URL              live, both servers
  --vllm URL --record-golden FILE     run the cases on vLLM only and store its observations
  --golden FILE --serve URL           compare serve with stored observations (the test does)

Only the standard library: it runs with any python3. Start the vLLM peer with
scripts/vllm_cpu_peer.sh and serve with the same model directory, e.g.
  inferencelab serve /work/venvs/vllm-cpu-model --served-model-name tiny-qwen2 \\
      --max-model-len 16384 --block-size 32 --gpu-blocks 1025 --enable-prompt-tokens-details
Exit status 0 when every case matches.
"""

import argparse
import http.client
import json
import sys
import urllib.parse

MODEL = "tiny-qwen2"
# the same sentence the issue measured (206 characters)
SENTENCE = (
    "The quick brown fox jumps over the lazy dog while the cache keeps every block it has "
    "seen, and the scheduler admits requests in order of arrival until the token budget of "
    "the step is used up by them."
)
# Paths where a value may stand in for vLLM's null: fields vLLM 0.32 declares but leaves
# empty and serve fills (documented in docs/serve.md).
NULL_OK = {"usage.prompt_tokens_details.created_cache_tokens"}


def request(base, method, path, body=None, headers=None, raw=None):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is None:
        hdrs.pop("Content-Type", None)
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    ctype = (r.getheader("content-type") or "").split(";")[0].strip()
    conn.close()
    return r.status, ctype, text


def shape(v, key=None):
    if isinstance(v, dict):
        if key in ("top_logprobs", "prompt_logprobs"):
            # keyed by token text / id: only the value types count
            return {"<token>": sorted({json.dumps(shape(x)) for x in v.values()})}
        return {k: shape(x, k) for k, x in sorted(v.items())}
    if isinstance(v, list):
        return ["list", shape(v[0], key) if v else None]
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "num"
    if v is None:
        return "null"
    return "str"


def chunk_kind(c):
    ch = c.get("choices")
    if ch == []:
        return "usage"
    ch0 = ch[0] if ch else {}
    if ch0.get("finish_reason") is not None:
        return "finish"
    if "delta" in ch0 and "role" in ch0["delta"]:
        return "role"
    return "content"


def observe_sse(text):
    obs = {"events": [], "shapes": {}, "finish": {}, "usage": None, "bad_lines": 0}
    for ev in text.split("\n\n"):
        if not ev.strip():
            continue
        if not ev.startswith("data: "):
            obs["bad_lines"] += 1
            continue
        data = ev[len("data: "):]
        if data == "[DONE]":
            kind = "[DONE]"
        else:
            c = json.loads(data)
            if "error" in c:
                kind = "error"
            else:
                kind = chunk_kind(c)
                idx = c["choices"][0]["index"] if c.get("choices") else None
                if idx not in (None, 0) and kind in ("role", "content", "finish"):
                    obs["shapes"].setdefault(kind, shape(c))
                    if kind == "finish":
                        obs["finish"][str(idx)] = c["choices"][0]["finish_reason"]
                    continue
                obs["shapes"].setdefault(kind, shape(c))
                if kind == "finish":
                    obs["finish"][str(idx)] = c["choices"][0]["finish_reason"]
                if c.get("usage"):
                    obs["usage"] = c["usage"]
        if not obs["events"] or obs["events"][-1] != kind:
            obs["events"].append(kind)
    return obs


def observe(status, ctype, text, stream):
    o = {"status": status, "ctype": ctype}
    if ctype == "text/event-stream" and status == 200:  # also `stream: "yes"` (lax bool)
        o["sse"] = observe_sse(text)
        return o
    try:
        v = json.loads(text)
    except ValueError:
        o["body"] = text[:200]
        return o
    o["shape"] = shape(v)
    if isinstance(v, dict):
        if isinstance(v.get("error"), dict):
            e = v["error"]
            o["error"] = {k: e.get(k) for k in ("type", "param", "code")}
        if "detail" in v:
            o["detail"] = v["detail"]
        if isinstance(v.get("usage"), dict):
            o["usage"] = v["usage"]
        if isinstance(v.get("choices"), list):
            o["n_choices"] = len(v["choices"])
            o["finish"] = {
                str(c.get("index")): c.get("finish_reason") for c in v["choices"]
            }
        if "count" in v and "tokens" in v:
            o["tokens"] = v["tokens"]
        if "prompt" in v and set(v) <= {"prompt"}:
            o["detok"] = v["prompt"]
    return o


def texts(text, stream, chat):
    """The generated text per choice index."""
    out = {}
    if stream:
        for ev in text.split("\n\n"):
            if not ev.startswith("data: {"):
                continue
            c = json.loads(ev[6:])
            for ch in c.get("choices", []):
                piece = ch.get("delta", {}).get("content") if chat else ch.get("text")
                out[ch["index"]] = out.get(ch["index"], "") + (piece or "")
    else:
        v = json.loads(text)
        for ch in v["choices"]:
            out[ch["index"]] = ch["message"]["content"] if chat else ch["text"]
    return out


def cmpl(**kw):
    b = {"model": MODEL, "prompt": "Hello, my name is", "max_tokens": 5}
    b.update(kw)
    return {"path": "/v1/completions", "body": b}


def chat(**kw):
    b = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5}
    b.update(kw)
    return {"path": "/v1/chat/completions", "body": b}


def drop(case, key):
    case["body"].pop(key, None)
    return case


def cases():
    c = {}
    # completions: prompts
    c["cmpl_basic"] = cmpl()
    c["cmpl_sentence"] = cmpl(prompt=SENTENCE)
    c["cmpl_hello_x1000"] = cmpl(prompt="hello " * 1000, max_tokens=2)
    c["cmpl_unicode"] = cmpl(prompt="Grüße, 世界! Ça va? 🙂")
    c["cmpl_token_ids"] = cmpl(prompt=[1, 2, 3, 4])
    c["cmpl_one_string_list"] = cmpl(prompt=["Once upon a time"])
    c["cmpl_batch_strings"] = cmpl(prompt=["Once upon a time", "The capital of France"])
    c["cmpl_batch_token_lists"] = cmpl(prompt=[[1, 2, 3], [4, 5, 6, 7]])
    c["cmpl_batch_stream"] = cmpl(
        prompt=["a b c", "d e f", "g h i"], stream=True,
        stream_options={"include_usage": True})
    c["cmpl_empty_prompt"] = cmpl(prompt="")
    c["cmpl_empty_list"] = cmpl(prompt=[])
    c["cmpl_missing_prompt"] = drop(cmpl(), "prompt")
    c["cmpl_prompt_number"] = cmpl(prompt=5)
    c["cmpl_prompt_bad_ids"] = cmpl(prompt=[1, "x"])
    c["cmpl_prompt_oov_id"] = cmpl(prompt=[999999])
    c["cmpl_no_model"] = drop(cmpl(), "model")
    c["cmpl_wrong_model"] = cmpl(model="nope")
    c["cmpl_unknown_field"] = cmpl(foo=1)
    # completions: max_tokens and length
    c["cmpl_max_tokens_0"] = cmpl(max_tokens=0)
    c["cmpl_max_tokens_neg"] = cmpl(max_tokens=-1)
    c["cmpl_max_tokens_str"] = cmpl(max_tokens="5")
    c["cmpl_max_tokens_float"] = cmpl(max_tokens=1.5)
    c["cmpl_max_tokens_1"] = cmpl(max_tokens=1)
    c["cmpl_over_len_capped"] = cmpl(prompt="hello " * 16370, max_tokens=40)
    c["cmpl_prompt_over_len"] = cmpl(prompt="hello " * 16400, max_tokens=4)
    c["cmpl_prompt_exactly_len"] = cmpl(prompt="hello " * 16384, max_tokens=4)
    # completions: sampling parameters
    c["cmpl_temp_neg"] = cmpl(temperature=-1)
    c["cmpl_temp_0"] = cmpl(temperature=0)
    c["cmpl_temp_3"] = cmpl(temperature=3)
    c["cmpl_temp_str"] = cmpl(temperature="hot")
    c["cmpl_top_p_2"] = cmpl(top_p=2)
    c["cmpl_top_p_0"] = cmpl(top_p=0)
    c["cmpl_top_k_neg5"] = cmpl(top_k=-5)
    c["cmpl_top_k_minus1"] = cmpl(top_k=-1)
    c["cmpl_top_k_10"] = cmpl(top_k=10)
    c["cmpl_min_p_2"] = cmpl(min_p=2)
    c["cmpl_presence_3"] = cmpl(presence_penalty=3)
    c["cmpl_frequency_neg3"] = cmpl(frequency_penalty=-3)
    c["cmpl_repetition_0"] = cmpl(repetition_penalty=0)
    c["cmpl_repetition_1_2"] = cmpl(repetition_penalty=1.2)
    c["cmpl_min_tokens_2"] = cmpl(min_tokens=2)
    c["cmpl_min_tokens_gt_max"] = cmpl(min_tokens=9, max_tokens=3)
    c["cmpl_ignore_eos"] = cmpl(ignore_eos=True)
    c["cmpl_seed_neg"] = cmpl(seed=-1, temperature=1)
    c["cmpl_n_0"] = cmpl(n=0)
    c["cmpl_n_2"] = cmpl(n=2)
    c["cmpl_n_2_stream"] = cmpl(n=2, stream=True, stream_options={"include_usage": True})
    c["cmpl_user"] = cmpl(user="someone")
    c["cmpl_logit_bias"] = cmpl(logit_bias={"17": 5})
    # completions: logprobs and echo
    c["cmpl_logprobs_0"] = cmpl(logprobs=0)
    c["cmpl_logprobs_2"] = cmpl(logprobs=2)
    c["cmpl_logprobs_50"] = cmpl(logprobs=50)
    c["cmpl_logprobs_neg"] = cmpl(logprobs=-1)
    c["cmpl_logprobs_stream"] = cmpl(logprobs=1, stream=True)
    c["cmpl_echo"] = dict(cmpl(echo=True), check="echo")
    c["cmpl_echo_stream"] = dict(cmpl(echo=True, stream=True), check="echo")
    c["cmpl_echo_logprobs"] = cmpl(echo=True, logprobs=1)
    # completions: stop
    c["cmpl_stop_never"] = cmpl(stop="\u0007never\u0007")
    c["cmpl_stop_list_never"] = cmpl(stop=["\u0007a\u0007", "\u0007b\u0007"])
    c["cmpl_stop_bad_type"] = cmpl(stop=5)
    c["cmpl_stop_from_text"] = dict(cmpl(temperature=0, max_tokens=8), check="stop")
    c["cmpl_stop_from_text_stream"] = dict(
        cmpl(temperature=0, max_tokens=8, stream=True), check="stop")
    c["cmpl_stop_token_ids"] = cmpl(stop_token_ids=[199999])
    c["cmpl_include_stop_str"] = cmpl(stop="\u0007z\u0007", include_stop_str_in_output=True)
    # completions: streaming
    c["cmpl_stream"] = cmpl(stream=True)
    c["cmpl_stream_usage"] = cmpl(stream=True, stream_options={"include_usage": True})
    c["cmpl_stream_continuous"] = cmpl(
        stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    c["cmpl_stream_options_no_stream"] = cmpl(stream_options={"include_usage": True})
    c["cmpl_stream_str"] = cmpl(stream="yes")
    # determinism
    c["cmpl_temp0_twice"] = dict(cmpl(temperature=0, max_tokens=8), check="twice")
    c["cmpl_seed_twice"] = dict(cmpl(temperature=1, seed=1234, max_tokens=8), check="twice")
    # bodies
    c["body_invalid_json"] = {"path": "/v1/completions", "raw": b"{not json"}
    c["body_array"] = {"path": "/v1/completions", "raw": b"[1, 2]"}
    c["body_empty"] = {"path": "/v1/completions", "raw": b""}
    c["body_text_plain"] = {
        "path": "/v1/completions", "raw": json.dumps(cmpl()["body"]).encode(),
        "headers": {"Content-Type": "text/plain"}}
    # chat
    c["chat_basic"] = chat()
    c["chat_system"] = chat(messages=[
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": SENTENCE}])
    c["chat_multi_turn"] = chat(messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."}])
    c["chat_parts"] = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]}])
    c["chat_empty_messages"] = chat(messages=[])
    c["chat_missing_messages"] = drop(chat(), "messages")
    c["chat_missing_role"] = chat(messages=[{"content": "hi"}])
    c["chat_custom_role"] = chat(messages=[{"role": "robot", "content": "beep"}])
    c["chat_max_completion_tokens"] = drop(chat(max_completion_tokens=4), "max_tokens")
    c["chat_n_2"] = chat(n=2)
    c["chat_n_2_stream"] = chat(n=2, stream=True, stream_options={"include_usage": True})
    c["chat_stream"] = chat(stream=True)
    c["chat_stream_usage"] = chat(stream=True, stream_options={"include_usage": True})
    c["chat_stream_continuous"] = chat(
        stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True})
    c["chat_logprobs"] = chat(logprobs=True, top_logprobs=2)
    c["chat_logprobs_stream"] = chat(logprobs=True, top_logprobs=1, stream=True)
    c["chat_top_logprobs_50"] = chat(logprobs=True, top_logprobs=50)
    c["chat_top_logprobs_no_logprobs"] = chat(top_logprobs=2)
    c["chat_stop_never"] = chat(stop=["\u0007never\u0007"])
    c["chat_stop_from_text"] = dict(chat(temperature=0, max_tokens=8), check="stop")
    c["chat_temp_neg"] = chat(temperature=-1)
    c["chat_top_p_2"] = chat(top_p=2)
    c["chat_seed_twice"] = dict(chat(temperature=1, seed=99, max_tokens=8), check="twice")
    c["chat_temp0_twice"] = dict(chat(temperature=0, max_tokens=8), check="twice")
    c["chat_echo"] = chat(echo=True)
    c["chat_no_generation_prompt"] = chat(add_generation_prompt=False)
    c["chat_continue_final"] = chat(
        messages=[{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello, I"}],
        add_generation_prompt=False, continue_final_message=True)
    c["chat_wrong_model"] = chat(model="nope")
    c["chat_over_len"] = chat(messages=[{"role": "user", "content": "hello " * 16400}])
    # other endpoints
    c["get_models"] = {"method": "GET", "path": "/v1/models"}
    c["get_health"] = {"method": "GET", "path": "/health"}
    c["get_ping"] = {"method": "GET", "path": "/ping"}
    c["get_version"] = {"method": "GET", "path": "/version"}
    c["get_unknown_path"] = {"method": "GET", "path": "/v2/nothing"}
    c["get_on_post_route"] = {"method": "GET", "path": "/v1/completions"}
    c["post_on_get_route"] = {"method": "POST", "path": "/v1/models", "body": {}}
    c["tokenize_prompt"] = {"path": "/tokenize", "body": {"model": MODEL, "prompt": SENTENCE}}
    c["tokenize_hello_x1000"] = {
        "path": "/tokenize", "body": {"model": MODEL, "prompt": "hello " * 1000}}
    c["tokenize_messages"] = {"path": "/tokenize", "body": {
        "model": MODEL, "messages": [{"role": "user", "content": "Say hi."}]}}
    c["tokenize_token_strs"] = {"path": "/tokenize", "body": {
        "model": MODEL, "prompt": "Hello world", "return_token_strs": True}}
    c["tokenize_specials_text"] = {"path": "/tokenize", "body": {
        "model": MODEL, "prompt": "<|im_start|>user\nhi<|im_end|>"}}
    c["tokenize_missing"] = {"path": "/tokenize", "body": {"model": MODEL}}
    c["detokenize"] = {"path": "/detokenize", "body": {"model": MODEL, "tokens": [13225, 2375]}}
    c["detokenize_oov"] = {"path": "/detokenize", "body": {"model": MODEL, "tokens": [999999]}}
    c["detokenize_bad"] = {"path": "/detokenize", "body": {"model": MODEL, "tokens": "x"}}
    c["metrics"] = {"method": "GET", "path": "/metrics", "check": "metrics"}
    return c


def first_word(t):
    """A stop string from a generated text: its second whitespace-separated piece, else a
    middle slice."""
    parts = [p for p in t.split() if p]
    if len(parts) >= 2:
        return parts[1]
    s = t.strip()
    return s[len(s) // 3: len(s) // 3 + 2] if len(s) >= 3 else None


def metric_families(text):
    fams = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            fams.setdefault(name, {"type": kind, "labels": set()})
        elif line and not line.startswith("#"):
            series = line.rsplit(" ", 1)[0]
            name, _, labels = series.partition("{")
            labels = labels.rstrip("}")
            keys = []
            for part in _split_labels(labels):
                keys.append(part.split("=", 1)[0])
            base = name
            for suf in ("_bucket", "_count", "_sum"):
                if name.endswith(suf) and name[: -len(suf)] in fams:
                    base = name[: -len(suf)]
            keys = sorted(k for k in keys if k != "le")
            if base in fams:
                fams[base]["labels"].add(",".join(keys))
    return {
        k: {"type": v["type"], "labels": sorted(v["labels"])}
        for k, v in fams.items()
        if k.startswith("vllm:")
    }


def _split_labels(s):
    out, cur, q = [], "", False
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and q:
            cur += s[i: i + 2]
            i += 2
            continue
        if ch == '"':
            q = not q
        if ch == "," and not q:
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    if cur:
        out.append(cur)
    return out


def run_case(base, name, case):
    method = case.get("method", "POST")
    body = case.get("body")
    stream = bool(body and body.get("stream") is True)
    chat_ep = case["path"] == "/v1/chat/completions"
    check = case.get("check")
    if check == "stop":
        st, ct, tx = request(base, method, case["path"], dict(body, stream=False))
        if st != 200:
            return {"status": st, "prior_failed": True}
        word = first_word(texts(tx, False, chat_ep)[0])
        body = dict(body, stop=[word])
    st, ct, tx = request(base, method, case["path"], body, case.get("headers"), case.get("raw"))
    o = observe(st, ct, tx, stream)
    if check == "stop" and st == 200:
        v = observe_sse(tx) if stream else None
        if stream:
            fin = [json.loads(e[6:]) for e in tx.split("\n\n") if e.startswith("data: {")]
            fin = [c["choices"][0] for c in fin if c.get("choices") and
                   c["choices"][0].get("finish_reason")]
            o["property"] = {"finish": fin[0]["finish_reason"] if fin else None,
                             "stop_reason_is_stop": bool(fin) and fin[0].get("stop_reason") == word}
        else:
            ch = json.loads(tx)["choices"][0]
            o["property"] = {"finish": ch["finish_reason"],
                             "stop_reason_is_stop": ch.get("stop_reason") == word,
                             "text_has_no_stop": word not in (
                                 ch["message"]["content"] if chat_ep else ch["text"])}
        del v
    if check == "twice" and st == 200:
        st2, _, tx2 = request(base, method, case["path"], body)
        o["property"] = {"same_text": st2 == 200 and texts(tx, stream, chat_ep) == texts(
            tx2, stream, chat_ep)}
    if check == "echo" and st == 200:
        t = texts(tx, stream, chat_ep)
        o["property"] = {"echo_starts_with_prompt": t.get(0, "").startswith(body["prompt"])}
    if check == "metrics":
        o = {"status": st, "ctype": ct, "metrics": metric_families(tx)}
    return o


def compare(name, v, s):
    """Differences between vLLM's observation `v` and serve's `s` (empty: the same)."""
    d = []
    if v.get("status") != s.get("status"):
        return [f"status {v.get('status')} vs {s.get('status')}"]
    if "metrics" in v:
        fv, fs = v["metrics"], s.get("metrics", {})
        missing = sorted(set(fv) - set(fs))
        if missing:
            d.append(f"{len(missing)} of {len(fv)} vllm:* families missing: {', '.join(missing)}")
        for k in sorted(set(fv) & set(fs)):
            if fv[k]["type"] != fs[k]["type"]:
                d.append(f"{k}: type {fv[k]['type']} vs {fs[k]['type']}")
            elif fv[k]["labels"] != fs[k]["labels"]:
                d.append(f"{k}: labels {fv[k]['labels']} vs {fs[k]['labels']}")
        return d
    if v.get("ctype") != s.get("ctype"):
        d.append(f"content-type {v.get('ctype')} vs {s.get('ctype')}")
    for key in ("error", "detail", "n_choices", "property", "tokens", "detok"):
        if v.get(key) != s.get(key):
            d.append(f"{key} {v.get(key)} vs {s.get(key)}")
    if "body" in v and v["body"] != s.get("body"):
        d.append(f"body {v['body']!r} vs {s.get('body')!r}")
    if "shape" in v:
        diff = shape_diff(v["shape"], s.get("shape"), "")
        if diff:
            d.append("keys: " + "; ".join(diff[:4]))
    d += usage_diff(v.get("usage"), s.get("usage"), v.get("finish"), s.get("finish"))
    if v.get("finish") != s.get("finish") and not finish_random(v.get("finish")):
        d.append(f"finish {v.get('finish')} vs {s.get('finish')}")
    if "sse" in v:
        a, b = v["sse"], s.get("sse") or {}
        stop_case = "stop_reason_is_stop" in (v.get("property") or {})
        # a stop ends the answer where each model's text has the stop string: the number of
        # events before it differs
        if a["events"] != b.get("events") and not stop_case:
            d.append(f"SSE events {a['events']} vs {b.get('events')}")
        for kind, sh in a["shapes"].items():
            diff = shape_diff(sh, b.get("shapes", {}).get(kind), "")
            if diff:
                d.append(f"SSE {kind} chunk keys: " + "; ".join(diff[:3]))
        if b.get("bad_lines"):
            d.append(f"{b['bad_lines']} SSE events without 'data: '")
        d += usage_diff(a.get("usage"), b.get("usage"), a.get("finish"), b.get("finish"))
        if a.get("finish") != b.get("finish") and not finish_random(a.get("finish")):
            d.append(f"SSE finish {a.get('finish')} vs {b.get('finish')}")
    return d


def finish_random(f):
    """A random-weight model can sample its end-of-sequence token: a `stop` finish of vLLM's
    that was not asked for is not held against serve."""
    return bool(f) and any(x == "stop" for x in f.values())


def usage_diff(u, w, fu, fw):
    if u is None and w is None:
        return []
    if u is None or w is None:
        return [f"usage {u} vs {w}"]
    d = []
    if u.get("prompt_tokens") != w.get("prompt_tokens"):
        d.append(f"prompt_tokens {u.get('prompt_tokens')} vs {w.get('prompt_tokens')}")
    if fu == fw and not finish_random(fu):
        for k in ("completion_tokens", "total_tokens"):
            if u.get(k) != w.get(k):
                d.append(f"{k} {u.get(k)} vs {w.get(k)}")
    pu = (u.get("prompt_tokens_details") or {}).get("cached_tokens")
    pw = (w.get("prompt_tokens_details") or {}).get("cached_tokens")
    if (pu is None) != (pw is None):
        d.append(f"cached_tokens {pu} vs {pw}")
    return d


def shape_diff(a, b, path):
    if a == b:
        return []
    if path.lstrip(".") in NULL_OK and a == "null":
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}"
            if k not in b:
                out.append(f"{p} missing")
            elif k not in a:
                out.append(f"{p} extra")
            else:
                out += shape_diff(a[k], b[k], p)
        return out
    if isinstance(a, list) and isinstance(b, list):
        if a[1] is None or b[1] is None:
            return []
        return shape_diff(a[1], b[1], path + "[]")
    return [f"{path or '.'} {json.dumps(a)[:40]} vs {json.dumps(b)[:40]}"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm", help="vLLM base URL, e.g. http://127.0.0.1:18750")
    ap.add_argument("--serve", help="inferencelab serve base URL")
    ap.add_argument("--golden", help="stored vLLM observations to compare serve with")
    ap.add_argument("--record-golden", help="store vLLM's observations here")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--json", help="write the per-case table here")
    a = ap.parse_args()
    all_cases = cases()
    names = [n for n in all_cases if not a.only or a.only in n]
    # /metrics last: after every request
    names.sort(key=lambda n: n == "metrics")
    if a.golden:
        with open(a.golden) as f:
            golden = json.load(f)
        vobs = golden["cases"]
        names = [n for n in names if n in vobs]
    elif a.vllm:
        vobs = {n: run_case(a.vllm, n, all_cases[n]) for n in names}
        if a.record_golden:
            with open(a.record_golden, "w") as f:
                json.dump({"server": request(a.vllm, "GET", "/version")[2].strip(),
                           "cases": vobs}, f, indent=1, sort_keys=True)
                f.write("\n")
            print(f"recorded {len(vobs)} cases in {a.record_golden}")
            if not a.serve:
                return 0
    else:
        ap.error("give --vllm or --golden")
    if not a.serve:
        ap.error("give --serve")
    rows = []
    for n in names:
        s = run_case(a.serve, n, all_cases[n])
        diff = compare(n, vobs[n], s)
        rows.append((n, vobs[n].get("status"), s.get("status"), diff))
    w = max(len(r[0]) for r in rows)
    print(f"{'case':<{w}}  vLLM  serve  result")
    for n, sv, ss, diff in rows:
        print(f"{n:<{w}}  {sv!s:>4}  {ss!s:>5}  {'same' if not diff else 'DIFF: ' + ' | '.join(diff)}")
    same_status = sum(r[1] == r[2] for r in rows)
    same = sum(not r[3] for r in rows)
    print(f"\n{len(rows)} cases: same status in {same_status}, identical in {same}, "
          f"different in {len(rows) - same}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"case": r[0], "vllm": r[1], "serve": r[2], "diff": r[3]} for r in rows],
                      f, indent=1)
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
