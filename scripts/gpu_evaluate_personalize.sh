#!/bin/bash
# The personalisation benchmark (`mien evaluate --personalize`, docs/personalize.md) on one lent GPU, as one
# device call. Inputs are prepared here first (MediaPipe; the GPU machine has none):
#
#   python -m mien.evaluate.personalize prepare --ks 1,3,5 --max-photos 10 --people ID,ID,... --out CARRY/inputs
#
# CARRY holds src/ (without the shipped model: the tracked one is linked in), whl/ (diffusers, importlib_metadata,
# zipp, tflite, flatbuffers), weights/ (MIEN_WEIGHTS) and inputs/. The first run goes alone (the time to
# personalise without sharing the GPU); the rest are split between PROCESSES processes on the one GPU (each
# step is latency-bound, so several processes fill it better than one). Everything comes back under OUT:
# personalize.tar (items*.jsonl, sheets/, summary.*), summary.md and log.txt.
#
#   usage: scripts/gpu_evaluate_personalize.sh CARRY OUT KS PROCESSES MINUTES [ALONE]
#   e.g.   scripts/gpu_evaluate_personalize.sh .gpu_a20 $OUT 5,1,3 6 6.5
#   ALONE=0 skips the run alone (every run then shares the GPU: its time to personalise is not one run's).
#   BENCH_ARGS (environment): more options of every run, e.g. BENCH_ARGS="--identity-weight 1.0".
set -u
CARRY=$1 OUT=$2 KS=$3 PROCESSES=$4 MINUTES=$5 ALONE=${6:-1} BENCH_ARGS=${BENCH_ARGS:-}
python3 -m pip install -q --no-index --no-deps --no-compile --target /root/run/site "$CARRY"/whl/*.whl
ln -sfn "$PWD/src/mien/resources/model" "$CARRY/src/mien/resources/model"
export PYTHONPATH="$CARRY/src:/root/run/site" MIEN_WEIGHTS="$CARRY/weights" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
RUN=${RUN:-/root/run/personalize}  # RUN (environment): another folder, for a second run in the same call
mkdir -p "$RUN"
export CARRY KS RUN BENCH_ARGS
bench() { python3 -m mien.evaluate.personalize run --inputs "$CARRY/inputs" --out "$RUN" --ks "$KS" --device cuda $BENCH_ARGS "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$RUN/device.txt"
START=$(date +%s)
[ "$ALONE" = 1 ] && bench --max-runs 1 > "$RUN/log-alone.txt" 2>&1
LEFT=$(python3 -c "print(max(0.5, $MINUTES - ($(date +%s) - $START) / 60))")
HARD=$(python3 -c "print(int(60 * ($LEFT + 2.2)))")  # a run started just before LEFT ends has 2.2 minutes; then killed
for i in $(seq 0 $((PROCESSES - 1))); do
    timeout "$HARD" bash -c "$(declare -f bench); bench --shard $i/$PROCESSES --minutes $LEFT" > "$RUN/log-$i.txt" 2>&1 &
done
wait
python3 -m mien.evaluate.personalize report --out "$RUN" > "$OUT/summary.md" 2>&1
cat "$RUN"/device.txt "$RUN"/log-*.txt > "$OUT/log.txt"
tar cf "$OUT/personalize.tar" -C "$RUN" .
