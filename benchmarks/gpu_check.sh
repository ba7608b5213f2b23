#!/usr/bin/env bash
# GPU check, for when a GPU machine is lent (budget: ~15 minutes of device time in all, so this is short).
# Runs the project's GPU tests (marked gpu; out of `make test`), then each
# benchmark with --device cuda. Results go to $OUT (default gpu_results/): one text file per step.
#   bash benchmarks/gpu_check.sh            # everything (about 6-8 minutes on one H200)
#   ONLY="patching probes" bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device visible to $PY; nothing to check" >&2
  exit 2
fi
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")' | tee "$OUT/device.txt"

status=0
echo "== GPU tests" | tee "$OUT/tests.txt"
timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tee -a "$OUT/tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

# patching first: its GPU target (>= 20x over TransformerLens) is the one most at stake here
# (the dashboard benchmark is left out: it times a browser, and the lent machine has none)
topics=${ONLY:-"patching $(ls benchmarks/bench_*.py | sed 's|benchmarks/bench_||; s|\.py$||' | grep -v -e '^patching$' -e '^dashboard$' | tr '\n' ' ')"}
for t in $topics; do
  echo "== benchmark $t (cuda)" | tee "$OUT/bench_$t.txt"
  timeout 200 "$PY" -m "benchmarks.bench_$t" --device cuda 2>&1 | tee -a "$OUT/bench_$t.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "benchmark $t failed or timed out" | tee -a "$OUT/bench_$t.txt"; status=1; }
done
exit $status
