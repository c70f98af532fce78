#!/usr/bin/env python3
"""Regenerate the Python-LightGBM fixture the Rust predictor is checked against
(crates/cache/tests/lightgbm_fixture.rs).

    target/release/inferencelab train -i data/traces/weka-agentic --export-features \
        /tmp/weka_features.csv --export-only --max-rows 4000
    python3 scripts/make_lgbm_fixture.py /tmp/weka_features.csv

Trains Python lightgbm (4.x) on our exported features (label = ln(1 + seconds to next use)),
with NaN-heavy columns, a categorical-free numeric model plus a binary model (sigmoid output), and
writes into crates/cache/tests/fixtures/lightgbm/:
  model_regression.txt, model_binary.txt   the models, as booster.save_model writes them
  rows.csv                                 200 feature rows (empty cell = missing)
  expected.csv                             Python's predictions for both models, repr() digits
"""
import csv
import math
import os
import sys

import lightgbm as lgb
import numpy as np

src = sys.argv[1]
out = os.path.join(os.path.dirname(__file__), "..", "crates", "cache", "tests", "fixtures", "lightgbm")
with open(src) as f:
    r = csv.reader(f)
    header = next(r)
    data = [[float(x) if x != "" else math.nan for x in row] for row in r]
arr = np.array(data, dtype=np.float64)
y, X = arr[:, 0], arr[:, 1:]
names = header[1:]
params = dict(objective="regression", num_leaves=15, learning_rate=0.1, min_data_in_leaf=20,
              verbose=-1, seed=7, deterministic=True, num_threads=1)
reg = lgb.train(params, lgb.Dataset(X, y, feature_name=names), num_boost_round=30)
median = float(np.median(y))
binp = dict(params, objective="binary")
clf = lgb.train(binp, lgb.Dataset(X, (y > median).astype(float), feature_name=names), num_boost_round=20)
os.makedirs(out, exist_ok=True)
reg.save_model(os.path.join(out, "model_regression.txt"))
clf.save_model(os.path.join(out, "model_binary.txt"))
rng = np.random.default_rng(3)
rows = X[rng.choice(len(X), size=min(200, len(X)), replace=False)]
# a few hand-made rows: all missing, zeros, huge values
rows = np.vstack([rows, np.full((1, X.shape[1]), np.nan), np.zeros((1, X.shape[1])),
                  np.full((1, X.shape[1]), 1e12)])
with open(os.path.join(out, "rows.csv"), "w") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(names)
    for row in rows:
        w.writerow(["" if math.isnan(v) else repr(float(v)) for v in row])
pr, pb = reg.predict(rows), clf.predict(rows)
with open(os.path.join(out, "expected.csv"), "w") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(["regression", "binary"])
    for a, b in zip(pr, pb):
        w.writerow([repr(float(a)), repr(float(b))])
print(f"wrote {out}: {len(rows)} rows, lightgbm {lgb.__version__}")
