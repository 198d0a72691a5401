#!/bin/bash
# Build the folder one device call of the latent-reader run carries (gpu_run.sh says what the call does).
# Usage, from a worktree whose code is committed:
#   bash docs/history/training-runs/latent-reader/build_carry.sh WORK DEST [PEOPLE]
#   WORK: scratch folder (the people file is kept there: a rerun reuses it)
#   DEST: the carried folder inside the checkout the device tool sends, ignored by git (e.g. /work/main/.gpu_reader)
#   PEOPLE: train people of faces128 to edit there (default 1300; faces128 has 1,938 with
#   two or more crops, 10.5 MB of people file: the call's whole carry, tracked files included, must stay under 65.8 MB)
# Carried: site.tar.xz (diffusers without its pipeline subpackages, importlib_metadata, zipp, tflite, flatbuffers:
# what the GPU image lacks), weights.tar.xz (taef2_encoder.pth, MobileFaceNet.tflite, face_landmarker.task: the
# edit's encode, the critic, fearful's blendshape nets; face-api and MediaPipe's landmarker are not needed there, the
# people file holds their outputs), people.npz (scripts/record_guided_states.py people), gpu_run.sh.
set -euo pipefail
WORK=$1 DEST=$2 PEOPLE=${3:-1300}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
PY=${PYTHON:-python}
WEIGHTS=${MIEN_WEIGHTS:-$ROOT/../shared/weights}
mkdir -p "$WORK"
[ -f "$WORK/people-$PEOPLE.npz" ] || OMP_NUM_THREADS=1 "$PY" "$ROOT/scripts/record_guided_states.py" people \
    --out "$WORK/people-$PEOPLE.npz" --people "$PEOPLE"
rm -rf "$DEST" && mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd)  # absolute: the packing cds elsewhere
. "$HERE/../carry_site_weights.sh"
carry_site_and_weights
cp "$WORK/people-$PEOPLE.npz" "$DEST/people.npz"
cp "$HERE/gpu_run.sh" "$DEST/"
CARRIED=$(du -sb "$DEST" | cut -f1)
TRACKED=$(cd "$ROOT" && git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
# 65.8 MB: the most a call has carried (the device tool counts a per-file overhead on top of the 64 MiB)
echo "carried $CARRIED bytes; with the tracked files $((TRACKED + CARRIED)) of 65800000"
[ $((TRACKED + CARRIED)) -le 65800000 ] || { echo "over 65.8 MB with the tracked files: give fewer PEOPLE"; exit 1; }
