#!/usr/bin/env python3
"""Train the `lightgbm` eviction policy's model with Python lightgbm on our exported features,
and save it in LightGBM's text format for `inferencelab` to load (docs/policies.md).

    inferencelab train -i TRACE --export-features /tmp/rows.csv --export-only
    python3 scripts/train_lgbm_python.py /tmp/rows.csv /tmp/python_model.txt
    inferencelab train -i TRACE --model /tmp/python_model.txt     # train/test report vs LRU, Belady
    inferencelab simulate -i TRACE -p lightgbm --lightgbm-model /tmp/python_model.txt --gpu-blocks 2000

The CSV has a header `label,<feature names>` (label = ln(1 + seconds to the block's next use),
empty cell = missing). Same objective as `inferencelab train`: L2 regression, 40 trees of 16
leaves, learning rate 0.15, and the prefix-monotone constraints of
`crates/cache/src/learned/features.rs` (PREFIX_MONOTONE): a child block must never be predicted to
be needed before its parent. The features `inferencelab train` leaves out (no monotone relation
along a prefix chain) are blanked to a constant here, so no tree splits on them.
Needs `pip install lightgbm numpy` (4.x).
"""
import csv
import math
import sys

import lightgbm as lgb
import numpy as np

# keep in sync with PREFIX_MONOTONE in crates/cache/src/learned/features.rs (None -> unused)
MONOTONE = {
    "depth": 1, "uses": -1, "gap1": 1, "gap2": None, "gap3": None, "gap4": None,
    "gap_ewma": None, "edc_10s": -1, "edc_100s": -1, "edc_1000s": -1, "edc_10000s": -1,
    "sharing": -1, "conv_requests": 0, "conv_gap_ewma": 0, "conv_since_prev": 0,
}


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        r = csv.reader(f)
        header = next(r)
        data = [[float(x) if x != "" else math.nan for x in row] for row in r]
    if header[0] != "label":
        sys.exit(f"{src}: the first column must be `label` (written by `inferencelab train --export-features`)")
    names = header[1:]
    unknown = [n for n in names if n not in MONOTONE]
    if unknown:
        sys.exit(f"{src}: unknown feature columns {unknown}; update MONOTONE in {__file__}")
    arr = np.array(data, dtype=np.float64)
    y, X = arr[:, 0], arr[:, 1:].copy()
    for j, n in enumerate(names):
        if MONOTONE[n] is None:
            X[:, j] = 0.0
    params = dict(
        objective="regression", num_leaves=16, learning_rate=0.15, min_data_in_leaf=50,
        lambda_l2=1.0, max_bin=63, monotone_constraints=[MONOTONE[n] or 0 for n in names],
        monotone_constraints_method="basic", verbose=-1, seed=1, deterministic=True,
        num_threads=1,
    )
    model = lgb.train(params, lgb.Dataset(X, y, feature_name=names), num_boost_round=40)
    model.save_model(dst)
    pred = model.predict(X)
    mse = float(np.mean((pred - y) ** 2))
    print(f"{len(y)} rows, train MSE {mse:.4f} (label variance {float(np.var(y)):.4f}); "
          f"wrote {dst} (lightgbm {lgb.__version__})")


if __name__ == "__main__":
    main()
