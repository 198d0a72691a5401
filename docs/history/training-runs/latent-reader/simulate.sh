#!/bin/bash
# gpu_run.sh rehearsed on a CPU, as the device call would run it: the committed tree (git archive HEAD) plus a
# carried folder in a temporary directory, no ../shared beside it, an empty user cache, and a python3 that sees only
# the packages the GPU image lists (KINDS.md's "Python packages already there", one name a line in GPU_PACKAGES),
# taken from this machine's environment by symlink. Tiny counts, --device cpu.
# Usage: bash simulate.sh CARRY GPU_PACKAGES [SIM_DIR]   (CARRY: build_carry.sh's DEST; prints the call's output)
set -euo pipefail
CARRY=$(cd "$1" && pwd) PKGS=$(cd "$(dirname "$2")" && pwd)/$(basename "$2") SIM=${3:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel)
PY=${PYTHON:-python}
rm -rf "$SIM/repo" "$SIM/run" "$SIM/out" "$SIM/site" "$SIM/bin" && mkdir -p "$SIM/repo" "$SIM/out" "$SIM/site" "$SIM/bin" "$SIM/cache"
git -C "$ROOT" archive HEAD | tar x -C "$SIM/repo"
cp -r "$CARRY" "$SIM/repo/.gpu_reader"
"$PY" - "$PKGS" "$SIM/site" <<'PYEOF'
import glob, os, re, sys, sysconfig
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()  # noqa: E731
want = {norm(line.strip()) for line in open(sys.argv[1]) if line.strip()}
site, dst = sysconfig.get_paths()["purelib"], sys.argv[2]
for d in glob.glob(site + "/*.dist-info"):
    if norm(os.path.basename(d).split("-")[0]) not in want:
        continue
    tops = {os.path.basename(d)} | {line.split(",")[0].split("/")[0] for line in open(d + "/RECORD")}
    for t in tops - {"", "..", "__pycache__"}:
        if not t.endswith(".pth") and os.path.exists(f"{site}/{t}") and not os.path.lexists(f"{dst}/{t}"):
            os.symlink(f"{site}/{t}", f"{dst}/{t}")
PYEOF
printf '#!/bin/sh\nPYTHONPATH="$PYTHONPATH:%s" exec %s -S "$@"\n' "$SIM/site" "$(command -v "$PY")" > "$SIM/bin/python3"
chmod +x "$SIM/bin/python3"
cd "$SIM/repo"
env -u MIEN_WEIGHTS -u MIEN_DATA PATH="$SIM/bin:$PATH" XDG_CACHE_HOME="$SIM/cache" HOME="$SIM" OUT="$SIM/out" \
  RUN="$SIM/run" DEVICE=cpu PROCS=${PROCS:-2} PPB=${PPB:-2} SEEDS=${SEEDS:-1} LIMIT=${LIMIT:-3} WIDE="16 16 1" \
  BATCH=16 bash .gpu_reader/gpu_run.sh ${RECORD_S:-120} ${TRAIN_S:-20}
