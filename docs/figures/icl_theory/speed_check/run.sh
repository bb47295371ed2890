#!/bin/bash
# Issue 15 leftovers: the full default icl-theory run re-timed on ONE thread, with the load
# average before and after; its metrics.csv is compared with the committed one.
#   bash docs/figures/icl_theory/speed_check/run.sh
set -u
cd "$(dirname "$0")/../../../.."
export NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
D=docs/figures/icl_theory/speed_check
OUT=${OUT:-/tmp/icl_speed}
rm -rf "$OUT"; mkdir -p "$OUT"
{ echo "command: NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m mamba_from_scratch icl-theory --out $OUT"
  echo "git: $(git rev-parse --short HEAD)"
  echo "start: $(date -u +%FT%TZ) $(uptime)"; } > $D/time.log
/usr/bin/time -f "wall %e s, user %U s, system %S s, max RSS %M kB" -a -o $D/time.log \
  $PY -m mamba_from_scratch icl-theory --out "$OUT" --no-progress > $D/stdout.txt 2>&1
echo "end: $(date -u +%FT%TZ) $(uptime)" >> $D/time.log
if cmp -s "$OUT/metrics.csv" docs/figures/icl_theory/metrics.csv; then
  echo "metrics.csv: byte-identical to docs/figures/icl_theory/metrics.csv" >> $D/time.log
else
  echo "metrics.csv: DIFFERS from docs/figures/icl_theory/metrics.csv:" >> $D/time.log
  diff "$OUT/metrics.csv" docs/figures/icl_theory/metrics.csv | head -20 >> $D/time.log
fi
