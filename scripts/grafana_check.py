#!/usr/bin/env python3
"""vLLM's example Grafana dashboard against `inferencelab serve`'s /metrics (issue 25).

Every PromQL query of the dashboard names series (`vllm:e2e_request_latency_seconds_bucket{
model_name="$model_name"}`, ...); a panel shows data when its series exist with the dashboard's
label matchers, and a histogram panel (histogram_quantile, rate(_sum)/rate(_count)) only once
the histogram has observations. For each series name the script reports

  ok         serve exposes it with matching labels (a histogram with at least one observation)
  v0-only    neither vLLM 0.32 (the recorded CPU vLLM's /metrics) nor serve has it: a V0 engine
             name the dashboard still queries (vllm:num_requests_swapped, ...); no V1 vLLM
             fills that panel either, so serve does not add it
  MISSING    vLLM has it and serve does not, or not with the dashboard's labels
  NO DATA    serve has it but the histogram is empty after the script's traffic
  EXTRA      serve has it and vLLM 0.32 does not (serve must not invent names)

and the dashboard's `label_values(model_name)` variable (a series labelled with serve's model).

Modes:
  --dashboard FILE... --extract OUT      the selectors of dashboard JSON files (vLLM's
                                         examples/observability/prometheus_grafana/grafana.json
                                         and examples/observability/dashboards/grafana/*.json),
                                         written as a selector file (the test's fixture)
  --dashboard FILE... --serve URL        check serve against the dashboards directly
  --queries SELECTORS --serve URL        check serve against a selector file
  --self-test                            the PromQL extraction and the verdicts on made-up input
Add --vllm-golden FILE (scripts/api_compat_check.py's recording of a real vLLM; its /metrics
families) to tell V0-only names from missing ones; without it every absent name is MISSING.
Before scraping, the script sends --traffic completions (streamed and not) so histograms have
observations. Only the standard library. Exit status 0 when nothing is MISSING, NO DATA or EXTRA.
"""

import argparse
import http.client
import json
import re
import sys
import urllib.parse

KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


# ---------------------------------------------------------------- PromQL: series selectors


def selectors(expr):
    """(name, [(label, op, value)]) of every series selector in a PromQL expression."""
    # grouping clauses and range/subquery brackets hold label names and durations, not series
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    out = []
    i = 0
    while i < len(e):
        ch = e[i]
        if ch == '"' or ch == "'":  # a string argument (label_replace, ...)
            j = i + 1
            while j < len(e) and e[j] != ch:
                j += 2 if e[j] == "\\" else 1
            i = j + 1
            continue
        if ch == "{":  # a selector without a name: {__name__="..."}
            end = e.index("}", i)
            ms = parse_matchers(e[i + 1:end])
            names = [v for (k, op, v) in ms if k == "__name__" and op == "="]
            if names:
                out.append((names[0], [m for m in ms if m[0] != "__name__"]))
            i = end + 1
            continue
        m = NAME.match(e, i)
        if m and (i == 0 or not (e[i - 1].isalnum() or e[i - 1] in "_$.")):
            name = m.group(0)
            j = m.end()
            while j < len(e) and e[j] == " ":
                j += 1
            if j < len(e) and e[j] == "(":  # a function
                i = j
                continue
            if name.lower() in KEYWORDS:
                i = m.end()
                continue
            ms = []
            if j < len(e) and e[j] == "{":
                end = e.index("}", j)
                ms = parse_matchers(e[j + 1:end])
                j = end + 1
            out.append((name, ms))
            i = j
            continue
        i += 1
    return out


def parse_matchers(s):
    out = []
    pos = 0
    while pos < len(s):
        if not s[pos:].strip():
            break
        m = MATCHER.match(s, pos)
        if not m:
            raise ValueError(f"cannot read label matchers {s!r}")
        out.append((m.group(1), m.group(2), m.group(3).replace('\\"', '"')))
        pos = m.end()
    return out


def walk_panels(panels):
    for p in panels or []:
        yield p
        yield from walk_panels(p.get("panels"))


def extract(dashboard, source):
    """A selector file's entry for one dashboard JSON."""
    sels, label_values = [], []
    for p in walk_panels(dashboard.get("panels")):
        for t in p.get("targets") or []:
            expr = t.get("expr")
            if not expr:
                continue
            for name, ms in selectors(expr):
                sels.append({"panel": p.get("title", ""), "metric": name,
                             "matchers": [list(m) for m in ms]})
    for v in (dashboard.get("templating") or {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and isinstance(q, str):
            m = re.match(r"\s*label_values\(\s*(?:([^,()]+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)", q)
            if m:
                label_values.append({"variable": v.get("name"), "label": m.group(2),
                                     "metric": (m.group(1) or "").strip() or None})
    return {"source": source, "title": dashboard.get("title", ""), "selectors": sels,
            "label_values": label_values}


# ---------------------------------------------------------------- the exposition


def samples(text):
    """[(name, {label: value}, value)] of a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, labels = series.partition("{")
        lab = {}
        if labels:
            for k, _, v in parse_matchers(labels.rstrip("}")):
                lab[k] = v
        try:
            val = float(value)
        except ValueError:
            val = float("nan")
        out.append((name, lab, val))
    return out


def vllm_series_names(golden_path):
    """Sample names a recorded vLLM exposed (a histogram family gives _bucket, _sum, _count)."""
    g = json.load(open(golden_path))
    fams = None
    for c in g["cases"].values():
        if isinstance(c, dict) and "metrics" in c:
            fams = c["metrics"]
            break
    if fams is None:
        raise SystemExit(f"{golden_path}: no /metrics observation in this recording")
    names = set()
    for n, f in fams.items():
        if f["type"] == "histogram":
            names |= {n + "_bucket", n + "_sum", n + "_count"}
        else:
            names.add(n)
    server = g.get("server", {})
    if isinstance(server, str):  # /version's body as recorded
        try:
            server = json.loads(server)
        except ValueError:
            server = {}
    return names, server.get("version", "?")


def matches(labels, ms, model):
    for k, op, v in ms:
        v = v.replace("$model_name", model).replace("${model_name}", model)
        have = labels.get(k, "")
        if op == "=" and have != v:
            return False
        if op == "!=" and have == v:
            return False
        if op == "=~" and not re.fullmatch(v, have):
            return False
        if op == "!~" and re.fullmatch(v, have):
            return False
    return True


def verdicts(dashboards, exposition, model, vllm_names):
    """Rows (metric, panels, serve, vllm, verdict) and the label_values rows."""
    ss = samples(exposition)
    by_metric = {}
    for di, d in enumerate(dashboards, 1):
        for s in d["selectors"]:
            e = by_metric.setdefault(s["metric"], {"panels": [], "matchers": []})
            panel = f"{di}:{s['panel']}"
            if panel not in e["panels"]:
                e["panels"].append(panel)
            e["matchers"].append([tuple(m) for m in s["matchers"]])
    rows = []
    for metric in sorted(by_metric):
        e = by_metric[metric]
        have = [x for x in ss if x[0] == metric]
        ok_all = all(any(matches(lab, ms, model) for _, lab, _ in have) for ms in e["matchers"])
        in_vllm = None if vllm_names is None else metric in vllm_names
        if have and ok_all:
            verdict = "ok"
            hist = None
            for suf in ("_bucket", "_sum", "_count"):
                if metric.endswith(suf):
                    hist = metric[: -len(suf)] + "_count"
            if hist is not None:
                counts = [v for n, lab, v in ss if n == hist and lab.get("model_name") == model]
                if not counts or sum(counts) <= 0:
                    verdict = "NO DATA"
            if in_vllm is False:
                verdict = "EXTRA"
        elif have:
            verdict = "MISSING"  # present, not with the dashboard's labels
        elif in_vllm is False:
            verdict = "v0-only"
        else:
            verdict = "MISSING"
        rows.append((metric, e["panels"], bool(have), in_vllm, verdict))
    lv_rows = []
    for d in dashboards:
        for lv in d["label_values"]:
            vals = {lab.get(lv["label"]) for n, lab, _ in ss
                    if lv["label"] in lab and (lv["metric"] in (None, n))}
            lv_rows.append((lv["variable"], lv["label"], sorted(v for v in vals if v),
                            "ok" if model in vals else "MISSING"))
    return rows, lv_rows


# ---------------------------------------------------------------- serve


def call(base, method, path, body=None):
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    data = None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data,
                 headers={"Content-Type": "application/json"} if data else {})
    r = conn.getresponse()
    text = r.read().decode("utf-8", "replace")
    conn.close()
    if r.status != 200:
        raise SystemExit(f"{method} {base}{path}: HTTP {r.status}: {text[:300]}")
    return text


def traffic(base, model, n):
    for i in range(n):
        call(base, "POST", "/v1/completions", {
            "model": model, "prompt": f"Request {i}: the quick brown fox jumps over the dog.",
            "max_tokens": 4 + i % 3, "stream": i % 2 == 1,
        })


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", nargs="*", default=[], help="Grafana dashboard JSON file(s)")
    ap.add_argument("--source", help="with --extract: where the dashboards came from "
                    "(repository path @ commit), stored in the selector file")
    ap.add_argument("--extract", metavar="OUT", help="write the dashboards' selectors to OUT")
    ap.add_argument("--queries", help="a selector file written by --extract")
    ap.add_argument("--serve", metavar="URL", help="serve's base URL (http://127.0.0.1:PORT)")
    ap.add_argument("--vllm-golden", help="scripts/api_compat_check.py's recording of a vLLM")
    ap.add_argument("--traffic", type=int, default=6,
                    help="completions sent before scraping (default 6; 0: none)")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    dashboards = []
    for f in a.dashboard:
        try:
            d = json.load(open(f))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{f}: not a dashboard JSON file: {e}")
        dashboards.append(extract(d, a.source or f))
    if a.queries:
        dashboards += json.load(open(a.queries))["dashboards"]
    if not dashboards:
        raise SystemExit("give --dashboard FILE... or --queries FILE (see --help)")
    if a.extract:
        with open(a.extract, "w") as f:
            json.dump({"note": "series selectors of vLLM's example Grafana dashboards, written "
                       "by scripts/grafana_check.py --extract", "dashboards": dashboards},
                      f, indent=1)
            f.write("\n")
        n = sum(len(d["selectors"]) for d in dashboards)
        print(f"{a.extract}: {n} selectors of {len(dashboards)} dashboard(s)")
        return 0
    if not a.serve:
        raise SystemExit("give --serve URL (or --extract OUT)")
    model = json.loads(call(a.serve, "GET", "/v1/models"))["data"][0]["id"]
    traffic(a.serve, model, a.traffic)
    exposition = call(a.serve, "GET", "/metrics")
    vllm_names, version = (None, None)
    if a.vllm_golden:
        vllm_names, version = vllm_series_names(a.vllm_golden)
    rows, lv_rows = verdicts(dashboards, exposition, model, vllm_names)
    return report(rows, lv_rows, dashboards, version)


def report(rows, lv_rows, dashboards, version):
    for di, d in enumerate(dashboards, 1):
        print(f"dashboard {di}: {d['title']!r} from {d['source']}")
    w = max(len(r[0]) for r in rows)
    vcol = f"vllm {version}" if version else "vllm"
    print(f"{'series':<{w}}  serve  {vcol:<11} verdict   dashboard:panel")
    bad = 0
    for metric, panels, serve, in_vllm, verdict in rows:
        v = "-" if in_vllm is None else ("yes" if in_vllm else "no")
        print(f"{metric:<{w}}  {'yes' if serve else 'no':<5}  {v:<11} {verdict:<9} "
              f"{'; '.join(panels)}")
        bad += verdict not in ("ok", "v0-only")
    for var, label, vals, verdict in lv_rows:
        print(f"variable ${var} = label_values({label}): {vals} {verdict}")
        bad += verdict != "ok"
    counts = {}
    for r in rows:
        counts[r[4]] = counts.get(r[4], 0) + 1
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 1 if bad else 0


def self_test():
    d = {"title": "t", "panels": [
        {"title": "row", "panels": [{"title": "lat", "targets": [{"expr":
            'histogram_quantile(0.99, sum by(le) (rate(vllm:lat_seconds_bucket'
            '{model_name="$model_name"}[$__rate_interval])))'}, {"expr":
            'rate(vllm:lat_seconds_sum{model_name="$model_name"}[5m])\n/\n'
            'rate(vllm:lat_seconds_count{model_name="$model_name"}[5m])'}]}]},
        {"title": "reasons", "targets": [{"expr":
            'sum by(finished_reason) (increase(vllm:request_success_total'
            '{model_name="$model_name",finished_reason!="abort"}[$__rate_interval]))'}]},
        {"title": "old", "targets": [{"expr": 'vllm:num_requests_swapped{model_name="$model_name"}'},
                                     {"expr": "up"}]},
    ], "templating": {"list": [{"type": "query", "name": "model_name",
                                "query": {"query": "label_values(model_name)"}}]}}
    e = extract(d, "self-test")
    got = [(s["metric"], s["matchers"]) for s in e["selectors"]]
    mn = [["model_name", "=", "$model_name"]]
    want = [("vllm:lat_seconds_bucket", mn), ("vllm:lat_seconds_sum", mn),
            ("vllm:lat_seconds_count", mn),
            ("vllm:request_success_total", mn + [["finished_reason", "!=", "abort"]]),
            ("vllm:num_requests_swapped", mn), ("up", [])]
    assert got == want, got
    assert e["label_values"] == [{"variable": "model_name", "label": "model_name",
                                  "metric": None}], e["label_values"]
    expo = "\n".join([
        '# TYPE vllm:lat_seconds histogram',
        'vllm:lat_seconds_bucket{engine="0",le="+Inf",model_name="m"} 2.0',
        'vllm:lat_seconds_sum{engine="0",model_name="m"} 0.5',
        'vllm:lat_seconds_count{engine="0",model_name="m"} 2.0',
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0',
        'up 1',
    ])
    vllm = {"vllm:lat_seconds_bucket", "vllm:lat_seconds_sum", "vllm:lat_seconds_count",
            "vllm:request_success_total"}
    rows, lv = verdicts([e], expo, "m", vllm)
    assert {r[0]: r[1] for r in rows}["vllm:lat_seconds_sum"] == ["1:lat"], rows
    v = {r[0]: r[4] for r in rows}
    assert v == {"vllm:lat_seconds_bucket": "ok", "vllm:lat_seconds_sum": "ok",
                 "vllm:lat_seconds_count": "ok", "vllm:request_success_total": "ok",
                 "vllm:num_requests_swapped": "v0-only", "up": "EXTRA"}, v
    assert lv == [("model_name", "model_name", ["m"], "ok")], lv
    # another model's series, an empty histogram, a name vLLM has and serve lacks
    rows, lv = verdicts([e], expo.replace("2.0", "0"), "m",
                        vllm | {"vllm:num_requests_swapped"})
    v = {r[0]: r[4] for r in rows}
    assert v["vllm:lat_seconds_bucket"] == "NO DATA", v
    assert v["vllm:num_requests_swapped"] == "MISSING", v
    rows, lv = verdicts([e], expo, "other", vllm)
    assert {r[4] for r in rows if r[0].startswith("vllm:lat")} == {"MISSING"}, rows
    assert lv[0][3] == "MISSING", lv
    print("self-test: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
