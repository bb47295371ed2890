#!/bin/bash
# The icl-theory runs of issue 15 items 1, 2 and 7, one after another, each on one thread.
# Resumable: a run whose final file exists is skipped. Each run's wall / CPU / load average is
# in its table header and, from /usr/bin/time and uptime, in OUT/time.log.
#   bash docs/figures/icl_theory/issue15_runs.sh
set -u
cd "$(dirname "$0")/../../.."
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
F=docs/figures/icl_theory
run() {  # run OUT FINAL_FILE ARGS...
  local out=$1 final=$2; shift 2
  if [ -s "$out/$final" ]; then echo "skip $out (has $final)"; return; fi
  mkdir -p "$out"
  { echo "command: python -m mamba_from_scratch icl-theory $* --out $out"; echo "start: $(date -u +%FT%TZ) $(uptime)"; } > "$out/time.log"
  /usr/bin/time -f "wall %e s, user %U s, system %S s, max RSS %M kB" -a -o "$out/time.log" \
    $PY -m mamba_from_scratch icl-theory "$@" --out "$out" --no-progress > "$out/stdout.txt" 2>&1
  echo "end: $(date -u +%FT%TZ) $(uptime)" >> "$out/time.log"
  echo "done $out"
}
# item 7: the third He4 draw (T1 = 1024; with --links he3,he4 the rng keys differ from the 3-link run)
run $F/more_prompts/he3he4_seed0 table.md --links he3,he4 --d 16,32 --N 4096 --gates normalized,none \
    --n-prompts 1024 --krr-max-N 0 --seed 0
# item 2: Stage I streamed over 65,536 prompts; same Stage II and test prompts as the T1 = 1024 runs
run $F/stage1_streamed/seed0 table.md --links he3,he4 --d 16,32 --N 4096 --gates normalized,none \
    --n-prompts 1024 --krr-max-N 0 --seed 0 --stage1-prompts 65536 --stage1-chunk 1024
# item 1: the product-gate sweep
run $F/product_gate_sweep product_gate_sweep.md --sweep-product-gate --n-prompts 512 --val-prompts 256
# item 2, second seed (pairs with more_prompts/metrics_seed1.csv, the T1 = 1024 run of seed 1)
run $F/stage1_streamed/seed1 table.md --links he3,he4 --d 16,32 --N 4096 --gates normalized,none \
    --n-prompts 1024 --krr-max-N 0 --seed 1 --stage1-prompts 65536 --stage1-chunk 1024
# item 7: the pretraining ablation at --quick sizes, as the page's table
run $F/ablate_pretraining ablate_pretraining.md --quick --ablate pretraining --N 4096
# item 2: the T1 = 1024 run of seed 1 again (it is more_prompts/metrics_seed1.csv), now with the
# split of the subspace's share into linear and quadratic features in metrics_stage1.csv
run $F/more_prompts/he3he4_seed1 table.md --links he3,he4 --d 16,32 --N 4096 --gates normalized,none \
    --n-prompts 1024 --krr-max-N 0 --seed 1
