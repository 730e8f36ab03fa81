#!/usr/bin/env bash
# Latent-first workflow: align and invert once, then try many edits on the stored latents.
# Editing a .pt reuses its W+ code and distortion map: no encoder, no first generator pass.
set -euo pipefail
faces=${1:-../shared/data/faces}
work=${2:-out/latents}
hfgi invert "$faces" --aligned -o "$work/inverted"
for s in -3 -1.5 1.5 3; do
  hfgi edit "$work"/inverted/*.pt --attr age --strength "$s" -o "$work/age"
done
hfgi edit "$work"/inverted/*.pt --attr eyes --attr lip --attr beard --strength 1 -o "$work/ganspace"
