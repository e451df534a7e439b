#!/usr/bin/env bash
# Train every codec stage of one size, then export the codec.
#
#   recipes/codec/train_all.sh small runs/codec-small data/corpus/manifest.jsonl codec/pretrained/default
#
# Order: a (AudioMAE) -> b (k-means) and, alongside, d (VAE); then c (acoustic encoder + LDM, needs
# a, b, d) alongside e (vocoder); then export. Optional per-stage wall-clock limits (Lightning
# max_time, DD:HH:MM:SS), e.g. LDM_TIME=00:00:45:00; unset: each stage runs to its max_steps.
# EXTRA_ARGS is appended to every stage's overrides (e.g. "trainer.devices=4 trainer.strategy=ddp").
# Re-running resumes every stage from its last checkpoint. Logs: <runs>/<stage>.log.
set -euo pipefail
size=$1 runs=$2 manifest=$3 out=$4
python=${PYTHON:-python}
codec=$($python -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['model']['codec'])" \
  "recipes/codec/configs/ldm_${size}.yaml")
mkdir -p "$runs"

stage() {  # stage NAME TIME_LIMIT [overrides...]
  local name=$1 limit=$2; shift 2
  local extra=()
  [ -n "$limit" ] && extra+=("trainer.max_time=$limit")
  echo "$(date -u +%FT%TZ) start $name" >>"$runs/progress.log"
  $python "recipes/codec/train_${name}.py" --config "recipes/codec/configs/${name}_${size}.yaml" \
    "data.manifest=$manifest" "run_dir=$runs/$name" "${extra[@]}" "$@" ${EXTRA_ARGS:-} >"$runs/$name.log" 2>&1
  echo "$(date -u +%FT%TZ) done $name" >>"$runs/progress.log"
}

( stage audiomae "${AUDIOMAE_TIME:-}" && stage kmeans "${KMEANS_TIME:-}" "model.audiomae=$runs/audiomae" ) &
first=$!
stage vae "${VAE_TIME:-}"
wait $first
stage ldm "${LDM_TIME:-}" "model.audiomae=$runs/audiomae" "model.kmeans=$runs/kmeans" "model.vae=$runs/vae" &
second=$!
stage vocoder "${VOCODER_TIME:-}"
wait $second
$python recipes/codec/export.py --codec "$codec" --runs "$runs" --out "$out" | tee -a "$runs/progress.log"
