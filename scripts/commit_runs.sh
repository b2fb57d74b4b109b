#!/usr/bin/env bash
# Commit the training run folders (runs/) every INTERVAL seconds (default 1200), so that
# a session that ends at any moment leaves the last checkpoint in git. Only runs/ is
# committed ('git commit -- runs', other staged work is left alone); a busy index is retried.
set -u
cd "$(dirname "$0")/.."
INTERVAL=${INTERVAL:-1200}
while true; do
  sleep "$INTERVAL"
  for attempt in 1 2 3 4 5; do
    git add runs >/dev/null 2>&1 && break
    sleep 5
  done
  if ! git diff --cached --quiet -- runs; then
    steps=$(for d in runs/*/; do [ -f "$d/metrics.csv" ] && echo "$(basename "$d") $(tail -1 "$d/metrics.csv" | cut -d, -f1)"; done | tr '\n' ' ')
    for attempt in 1 2 3 4 5; do
      git commit -q -m "runs: checkpoints ($steps)" -- runs && break
      sleep 7
    done
  fi
done
