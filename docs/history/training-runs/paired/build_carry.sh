#!/bin/bash
# Build the folder one device call of the paired run carries (commands.txt says what is in it and why).
# Usage, from a worktree whose code is committed:  bash docs/history/training-runs/paired/build_carry.sh WORK DEST
#   WORK: scratch folder (the subset, its annotations and the pack; annotation resumes if interrupted)
#   DEST: the carried folder inside the checkout the device tool sends, ignored by git (e.g. /work/main/.gpu_b18)
# Then:  device run, carry [DEST relative to that checkout], command "bash DEST/gpu_run.sh 470".
set -euo pipefail
WORK=$1 DEST=$2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
PY=${PYTHON:-python}
DATA=${MIEN_DATA:-$ROOT/../shared/data/faces128}
WEIGHTS=${MIEN_WEIGHTS:-$ROOT/../shared/weights}
mkdir -p "$WORK/sub"
"$PY" "$HERE/select_people.py" "$DATA" "$WORK/sub"
for f in "$DATA"/*.tar; do ln -sf "$f" "$WORK/sub/"; done
"$PY" -m mien annotate --data "$WORK/sub" --split train --only landmarks faceapi --out "$WORK/ann" --workers 2 --threads 1
rm -rf "$WORK/pack"
"$PY" -m mien data pack --annotations "$WORK/ann/annotations.parquet" --data "$WORK/sub" --out "$WORK/pack" \
    --max-mb ${MAXMB:-19} --threads 1
rm -rf "$DEST" && mkdir -p "$DEST/pack"
. "$HERE/../carry_site_weights.sh"
carry_site_and_weights
# the code: when DEST is inside this checkout, its tracked src/ travels anyway; otherwise a copy of HEAD's
if [ "$(git -C "$DEST/.." rev-parse --show-toplevel)" != "$ROOT" ]; then
  git -C "$ROOT" archive HEAD src | tar x -C "$DEST"
  rm -rf "$DEST/src/mien/resources/model"  # the shipped model travels as a tracked file
fi
cp "$WORK/pack/chunk-00.npz" "$DEST/pack/"
cp "$HERE/gpu_run.sh" "$DEST/"
# what the call sends: the checkout's tracked files plus this folder, at most 64 MiB
CHECKOUT=$(git -C "$DEST/.." rev-parse --show-toplevel)
TRACKED=$(cd "$CHECKOUT" && git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
CARRIED=$(du -sb "$DEST" | cut -f1)
echo "tracked $TRACKED + carried $CARRIED = $((TRACKED + CARRIED)) bytes of $((64 * 2**20))"
[ $((TRACKED + CARRIED)) -le $((64 * 2**20)) ] || { echo "over the 64 MiB a call takes: lower MAXMB (the pack's size) or CAP in select_people.py"; exit 1; }
