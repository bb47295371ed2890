#!/bin/bash
# The task-pool study of results_icl_trained.md re-run (issue 15 item 7): icl-train --quick on
# He2, d = 16, the prompts' beta drawn from a fixed pool of K tasks (K = 16, 256, 4096) or fresh
# for every prompt; then task_pool.csv from the runs' train_summary.json (the final validation
# gap to the context-free optimum over N = 8..32, 256 validation prompts on fresh tasks).
# Resumable: a finished run (train_summary.json) is skipped, a started one resumes.
#   bash docs/figures/icl_trained/task_pool/run.sh
set -u
cd "$(dirname "$0")/../../../.."
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
D=docs/figures/icl_trained/task_pool
for K in 16 256 4096 fresh; do
  out=runs/tasks/k$K
  if [ -s $out/train_summary.json ]; then echo "skip $out"; continue; fi
  opt=""; [ $K != fresh ] && opt="--n-tasks $K"
  res=""; [ -s $out/ckpt.npz ] && res="--resume"
  mkdir -p $out
  echo "k$K start $(date -u +%FT%TZ) $(uptime)" >> $D/time.log
  /usr/bin/time -f "k$K wall %e s, user %U s, system %S s" -a -o $D/time.log \
    $PY -m mamba_from_scratch icl-train --quick --model mamba --link he2 --d 16 $opt --out $out --no-progress $res \
    > $out/stdout.txt 2>&1
  echo "k$K end $(date -u +%FT%TZ) $(uptime)" >> $D/time.log
done
$PY - <<'PY'
import csv, json, os
D = "docs/figures/icl_trained/task_pool"
rows = []
for K in ("16", "256", "4096", "fresh"):
    s = json.load(open(f"runs/tasks/k{K}/train_summary.json"))
    gap, se = s["val_gap_to_context_free"]
    rows.append(dict(n_tasks=K, status=s["status"], steps=s["step"], val_gap_to_context_free=f"{gap:.6g}",
                     val_gap_se=f"{se:.6g}", tokens_per_s=f"{s['tokens_per_s']:.0f}", n_params=s["n_params"],
                     seed=s["train_config"]["seed"], n_val=s["train_config"]["n_val"]))
with open(os.path.join(D, "task_pool.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
print(open(os.path.join(D, "task_pool.csv")).read())
PY
