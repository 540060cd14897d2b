#!/usr/bin/env bash
# The GPU checks in one command (about 5 minutes on one H100), from the project root:
#   bash bench/gpu_check.sh [OUT_DIR]
# On a machine without Ray and Optuna, with the bundle of Ray + Optuna + a Fashion-MNIST subset in
# .device/ (see bench/README.md, "GPU"), it runs everything through .device/run.sh.
# It prints every figure and leaves gpu.json (python -m bench --parts gpu --quick) and
# studies.json (the same TPE + ASHA study, Ray Tune's default concurrency vs every slot busy) in OUT_DIR.
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu_check}}; mkdir -p "$out"
run=(python3); [ -f .device/run.sh ] && run=(bash .device/run.sh python3)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "== bench --parts gpu --quick (no Ray)"
"${run[@]}" -m bench --parts gpu --quick --out "$out/gpu.json" --history ''

echo "== the same TPE + ASHA study, 45 s budget, 1/16 GPU per trial: Ray Tune's default vs every slot busy"
for side in ray_default all_slots; do
  extra=(); [ "$side" = ray_default ] && extra=(--max-concurrent 0)
  "${run[@]}" -m hpo.run studies/fashion_lenet5_tpe.py --results "$out/$side" --overwrite --no-analysis \
      --set time_budget_min=0.75 --set num_samples=64 --gpus-per-trial 0.0625 "${extra[@]}" | tail -4
done
"${run[@]}" - "$out" <<'PY'
import json, sys
from pathlib import Path
import pandas as pd
out, figures = Path(sys.argv[1]), {}
for side in ("ray_default", "all_slots"):
    report = out / side / "fashion_lenet5_tpe" / "report"
    trials, meta = pd.read_csv(report / "trials.csv"), json.loads((report / "study.json").read_text())
    spans = trials[["started_s", "ended_s"]].dropna()
    wall = spans["ended_s"].max() - spans["started_s"].min()
    figures[side] = {"trials": len(trials), "epochs": int(trials["epochs_run"].sum()),
                     "mean_in_flight": round(float((spans["ended_s"] - spans["started_s"]).sum() / wall), 2),
                     "slots": meta.get("slots"), "slot_utilisation": meta.get("slot_utilisation"),
                     "best_val_acc": round(float(trials["best_val_acc"].max()), 4)}
figures["epochs_ratio"] = round(figures["all_slots"]["epochs"] / max(1, figures["ray_default"]["epochs"]), 2)
(out / "studies.json").write_text(json.dumps(figures, indent=2))
print(json.dumps(figures, indent=2))
PY
echo "== gpu.json"; cat "$out/gpu.json" | head -c 4000
