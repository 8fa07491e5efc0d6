#!/bin/sh
# Regenerates the chart copies shown in the README from default runs of the three experiments
# (about 1 + 0.2 + 2 minutes on 2 cores).
set -e
cd "$(dirname "$0")/.."
cargo run --release -- experiment vanishing
cargo run --release -- experiment exploding
cargo run --release -- experiment seed-classifier
mkdir -p docs/exploding docs/seed-classifier
cp plots/vanishing/*.png docs/
cp plots/exploding/*.png docs/exploding/
cp plots/seed-classifier/*.png docs/seed-classifier/
