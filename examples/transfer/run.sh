#!/usr/bin/env bash
# Pre-train two micro backbones with SGD-M and AdamW, fine-tune them on
# another synthetic dataset with SGD-M, SGD-M + frozen embedding and AdamW,
# and print the transfer table (and the gradient diagnostic). A few minutes
# on a laptop CPU. Usage: examples/transfer/run.sh [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$here/../../target/transfer-example}
bocb=${BOCB:-$here/../../target/release/bocb}
mkdir -p "$work"
cp "$here"/*.yaml "$work"/
# Two datasets of 4 classes from different seeds: the downstream task differs.
"$bocb" data synth --out "$work/data/pre" --format cifar100-bin --classes 4 --train 512 --test 128 --seed 1
"$bocb" data synth --out "$work/data/down" --format cifar100-bin --classes 4 --train 512 --test 128 --seed 2
for leg in pretrain finetune finetune-frozen; do
  "$bocb" run "$work/$leg.yaml" --store "$work/store" --quiet
done
"$bocb" report --store "$work/store" --format md
