#!/bin/bash
# One device call of the paired run: three fine-tunes of the shipped model side by side on one GPU, one per
# candidate pair of consistency weights (the tuning sweep), on every train person with several photos.
# Carried in .gpu_b18: src (without the shipped model, which travels as a tracked file and is the start),
# site.tar.xz (diffusers 0.42.1 without its pipelines, importlib_metadata, zipp, tflite, flatbuffers),
# weights.tar.xz (taef2_encoder.pth, face_landmarker.task, MobileFaceNet.tflite), pack/ (chunks).
# Usage there: bash .gpu_b18/gpu_run.sh BUDGET_S    (BUDGET_S: each training process's --time-budget)
# Environment: WARMUP (steps, default 200), NOMODELS=1 (return the logs only), EXTRA (more mien train flags, every run),
#   EXTRA_<NAME> (more flags for run NAME only, e.g. EXTRA_TW4="--source-weight tw=4"),
#   RUNS: the candidates, "NAME:EXPRESSION_WEIGHT:IDENTITY_WEIGHT[:FEEDBACK_START] ..." (default: the first sweep,
#   "flow:0:0 e05i2:0.5:2 e2i2:2:2"; FEEDBACK_START photo or other, mien train --feedback-start).
set -u
G=$(dirname "$0")   # the carried folder
BUDGET=${1:-470}
R=${RUN:-/root/run}
mkdir -p $R/site $R/weights $R/parts
tar xJf $G/site.tar.xz -C $R/site
tar xJf $G/weights.tar.xz -C $R/weights
SRC=$G/src; [ -d $SRC ] || SRC=src  # carried code, else the checkout's own
export PYTHONPATH=$SRC:$R/site MIEN_WEIGHTS=$R/weights PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee $R/parts/device.txt
CHUNKS=$(ls $G/pack/chunk-*.npz)
# encode every chunk once (TAEF2 latents of each photo and its mirror image, MobileFaceNet embeddings)
python3 - $R/latents $CHUNKS <<'EOF' 2>&1 | tee $R/parts/prep.log
import sys, time
from pathlib import Path
t = time.monotonic()
from mien.train.jobs import encoded_tensors
tensors, info = encoded_tensors([Path(p) for p in sys.argv[2:]], Path(sys.argv[1]), embeddings=True)
print("encoded", info, f"{time.monotonic() - t:.1f} s")
EOF
# the flow-only run (no identity loss) reads the same latents; the embeddings in the file go unused
for f in $R/latents/*-emb.latents.safetensors; do ln -sf "$(basename "$f")" "${f%-emb.latents.safetensors}.latents.safetensors"; done
run() {  # name expression_weight identity_weight [feedback_start]
  python3 -m mien train --chunks $CHUNKS --cache $R/latents --init-from src/mien/resources/model --config-from-init \
    --flip-prob 0.5 --lr 1e-4 --warmup-steps ${WARMUP:-200} --steps 100000 --log-every 50 --checkpoint-every 500 \
    --expression-weight $2 --identity-weight $3 --feedback-start ${4:-photo} --out $R/$1 --time-budget $BUDGET --parts-to $R/parts/$1 \
    ${EXTRA:-} $(eval echo \${EXTRA_$1:-}) > $R/parts/$1.log 2>&1
}
RUNS=${RUNS:-"flow:0:0 e05i2:0.5:2 e2i2:2:2"}
for c in $RUNS; do run ${c//:/ } & done
wait
nvidia-smi --query-gpu=name --format=csv,noheader
# a call returns at most 64 MiB: two 26.8 MB models (MODELS_BACK); the others stay in $R/parts/NAME until a second call fetches them
n=0
for c in $RUNS; do
  v=${c%%:*}
  tail -3 $R/parts/$v.log
  [ -n "${NOMODELS:-}" ] && continue  # a timing call: logs only
  n=$((n + 1)); [ $n -gt ${MODELS_BACK:-2} ] && continue  # the rest stay for a second call
  for p in $R/parts/$v/model.safetensors.part*; do mv "$p" "$OUT/$v.$(basename $p)"; done
done
tar cf $OUT/logs.tar -C $R/parts .
ls -la $OUT
