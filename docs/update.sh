#!/bin/sh
# Regenerates the chart copies shown in the README from a default run of the headline experiment.
set -e
cd "$(dirname "$0")/.."
cargo run --release -- experiment vanishing
cp plots/vanishing/*.png docs/
