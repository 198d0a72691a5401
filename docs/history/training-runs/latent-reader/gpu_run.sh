#!/bin/bash
# One device call of the latent-reader run: real guided states of the carried train people recorded on the GPU
# (PROCS processes side by side, each its share of blocks, PPB people edited in one batch:
# scripts/record_guided_states.py record --people-per-batch), then two readers
# trained on them side by side (the shipped size and a wider one: scripts/train_latent_reader.py, the last 5 % of the
# states held out; EXTRA: more of its flags); the readers, their .sha256 files and the logs come back in $OUT.
# Carried (build_carry.sh): site.tar.xz, weights.tar.xz, people.npz, this script. The code is the checkout's.
# Usage there: bash .gpu_reader/gpu_run.sh [RECORD_S] [TRAIN_S]   (seconds for the recording processes and for the
#   training ones, their loading included; with the unpacking, about RECORD_S + TRAIN_S + 20 in all)
# Environment: PROCS (4), PPB (people per batch and per part file, 32: PPB x SEEDS rows a sampler step; about 52 MiB of
#   activations a row in the critic's bfloat16 backward, measured on a CPU, so about 7 GB a process at 128 rows),
#   SEEDS (seeds per person and label, 4), DEVICE (cuda), RUN (/root/run), LIMIT (people),
#   SKIP_RECORD=1 (train again on the states a still-warm machine kept in $RUN/states), WIDE ("96 192 3": width,
#   deep width, blocks of the wider reader), BATCH (256), LR (2e-3).
set -u
G=$(cd "$(dirname "$0")" && pwd)
RECORD_S=${1:-280} TRAIN_S=${2:-180}
R=${RUN:-/root/run} DEVICE=${DEVICE:-cuda} PROCS=${PROCS:-4} PPB=${PPB:-32}
OUT=${OUT:?set OUT}
mkdir -p "$R/site" "$R/weights" "$R/logs"
START=$(date +%s)
tar xJf "$G/site.tar.xz" -C "$R/site"
tar xJf "$G/weights.tar.xz" -C "$R/weights"
export PYTHONPATH=$PWD/src:$R/site MIEN_WEIGHTS=$R/weights PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$R/logs/device.txt"
if [ -z "${SKIP_RECORD:-}" ]; then
  for i in $(seq 0 $((PROCS - 1))); do
    python3 scripts/record_guided_states.py record --people "$G/people.npz" --out "$R/states" --device "$DEVICE" \
      --seeds "${SEEDS:-4}" --people-per-batch "$PPB" --block "$PPB" --shard "$i/$PROCS" --time-budget "$RECORD_S" \
      ${LIMIT:+--limit $LIMIT} \
      > "$R/logs/record-$i.log" 2>&1 &
  done
  wait
fi
echo "recorded: $(ls "$R/states" | wc -l) part files, $(du -sh "$R/states" | cut -f1), $(( $(date +%s) - START )) s" | tee "$R/logs/summary.txt"
train() {  # name, then train_latent_reader.py's size flags
  local name=$1; shift
  python3 scripts/train_latent_reader.py --data "$R/states" --out "$OUT/$name.safetensors" --device "$DEVICE" \
    --time-budget "$TRAIN_S" --batch "${BATCH:-256}" --lr "${LR:-2e-3}" ${EXTRA:-} "$@" > "$R/logs/train-$name.log" 2>&1
}
read -r W D B <<< "${WIDE:-96 192 3}"
train reader &
train reader_wide --width "$W" --deep-width "$D" --blocks "$B" &
wait
for f in "$R"/logs/train-*.log; do echo "== $f"; tail -4 "$f"; done | tee -a "$R/logs/summary.txt"
echo "done in $(( $(date +%s) - START )) s" | tee -a "$R/logs/summary.txt"
for f in "$R"/logs/record-*.log; do tr '\r' '\n' < "$f" | tail -3 > "$f.tail"; done  # tqdm's bars: the last lines
tar cf "$OUT/logs.tar" -C "$R/logs" device.txt summary.txt $(cd "$R/logs" && ls train-*.log record-*.log.tail)
ls -la "$OUT"
