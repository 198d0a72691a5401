# Sourced by the device runs' build_carry.sh scripts: what the GPU image lacks, packed into DEST.
# site.tar.xz: diffusers without its pipeline subpackages (training_utils imports pipelines/pipeline_utils.py), plus
#   the pure-Python packages mien needs there, all from the local environment, whose versions constraints.txt pins;
# weights.tar.xz: TAEF2's encoder, MediaPipe's face_landmarker.task and MobileFaceNet, in mien's weights layout.
# Needs PY, WORK (scratch), DEST (exists) and WEIGHTS (a weights folder) set by the caller.
carry_site_and_weights() {
  local site
  site=$("$PY" -c "import diffusers, os; print(os.path.dirname(os.path.dirname(diffusers.__file__)))")
  rm -rf "$WORK/site" && mkdir -p "$WORK/site/diffusers/pipelines"
  (cd "$site" && tar c --exclude=__pycache__ --exclude=diffusers/pipelines --exclude=diffusers/modular_pipelines \
      diffusers diffusers-*.dist-info importlib_metadata importlib_metadata-*.dist-info zipp zipp-*.dist-info \
      tflite tflite-*.dist-info flatbuffers flatbuffers-*.dist-info) | tar x -C "$WORK/site"
  cp "$site"/diffusers/pipelines/*.py "$WORK/site/diffusers/pipelines/"
  (cd "$WORK/site" && tar cJf "$DEST/site.tar.xz" .)
  rm -rf "$WORK/w" && mkdir -p "$WORK/w/taef2" "$WORK/w/mediapipe" "$WORK/w/mobilefacenet"
  cp "$WEIGHTS/taef2/taef2_encoder.pth" "$WORK/w/taef2/"
  cp "$WEIGHTS/mediapipe/face_landmarker.task" "$WORK/w/mediapipe/"
  cp "$WEIGHTS/mobilefacenet/MobileFaceNet.tflite" "$WORK/w/mobilefacenet/"
  tar cf - -C "$WORK/w" . | xz -6 > "$DEST/weights.tar.xz"
}
