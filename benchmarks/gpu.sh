#!/usr/bin/env bash
# GPU numbers in one run: explainer cost (passes) for torchvision resnet50 and vgg16 at 224 px,
# batch 64; the batch-1 vs batch-64 gain; the similarity metrics per 1,000 map pairs; the
# faithfulness check's cost. Writes one JSON (default gpu.json).
#
#   bash benchmarks/gpu.sh                          # on a CUDA machine
#   DEVICE=cpu MODELS=resnet18 BATCH=2 REPEATS=1 EXPLAINERS="gradient gradcam" bash benchmarks/gpu.sh
#                                                   # the CPU smoke run (what CI-less sessions do)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
MODELS=${MODELS:-"resnet50 vgg16"}
BATCH=${BATCH:-64}
REPEATS=${REPEATS:-3}
OUT=${OUT:-gpu.json}
PAIRS=${PAIRS:-1000}
explainers=()
if [ -n "${EXPLAINERS:-}" ]; then explainers=(--explainers $EXPLAINERS); fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2086
"$PY" benchmarks/explainer_cost.py --models $MODELS --batch "$BATCH" --repeats "$REPEATS" \
    --device "$DEVICE" "${explainers[@]}" --json "$tmp/explainer_cost.json"
# shellcheck disable=SC2086
"$PY" benchmarks/batching.py --models $MODELS --batch "$BATCH" --repeats "$REPEATS" --device "$DEVICE" \
    "${explainers[@]}" --json "$tmp/batching.json"
"$PY" benchmarks/similarity_speed.py --device "$DEVICE" --pairs "$PAIRS" --json "$tmp/similarity.json"
"$PY" benchmarks/faithfulness_cost.py --device "$DEVICE" --repeats "$REPEATS" --json "$tmp/faithfulness.json"
"$PY" - "$tmp" "$OUT" "$DEVICE" <<'PYEOF'
import json, sys, pathlib, torch
tmp, out, device = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
merged = {"device": device,
          "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
          "torch": torch.__version__}
for part in sorted(tmp.glob("*.json")):
    merged[part.stem] = json.loads(part.read_text())
pathlib.Path(out).write_text(json.dumps(merged, indent=1))
print(f"wrote {out}")
PYEOF
