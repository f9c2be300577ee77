#!/usr/bin/env bash
# Nightly geoseg batch over a landing folder; called by cron (see crontab) or by hand.
#
# Everything is configured by environment variables, so the same script serves every machine:
#   GEOSEG_BIN        the geoseg command            (default: geoseg on PATH)
#   GEOSEG_LANDING    folder, glob, text manifest or STAC JSON with new scenes   (default: /data/landing)
#   GEOSEG_RESULTS    output folder: outputs, geoseg-batch.sqlite, summary JSON  (default: /data/results)
#   GEOSEG_SCHEDULER  threads, processes or tcp://HOST:PORT                      (default: processes)
#   GEOSEG_WORKERS    local worker processes                                     (default: number of cores)
#   GEOSEG_ARGS       any further `geoseg batch` options, e.g. "--pipeline /etc/geoseg/buildings.yaml"
#
# geoseg batch itself makes reruns safe: finished scenes are skipped, a killed run is resumed, a second run
# on the same output folder is refused while one is running. Its exit status is cron's: 1 if a scene
# failed, 130/143 if it was stopped by SIGINT/SIGTERM.
set -euo pipefail

landing="${GEOSEG_LANDING:-/data/landing}"
results="${GEOSEG_RESULTS:-/data/results}"
scheduler="${GEOSEG_SCHEDULER:-processes}"
workers="${GEOSEG_WORKERS:-$(nproc)}"
read -r -a bin <<< "${GEOSEG_BIN:-geoseg}"
read -r -a extra <<< "${GEOSEG_ARGS:-}"

mkdir -p "$results"
echo "$(date -u +%FT%TZ) nightly run: $landing -> $results" >&2
exec "${bin[@]}" batch "$landing" --out-dir "$results" --scheduler "$scheduler" --workers "$workers" \
    --json "${extra[@]}"
