#!/usr/bin/env bash
# Edit every photo in a folder: make everyone smile, and also make them look younger.
# Each photo gets two outputs (photo_smile+2.jpg, photo_age-2.jpg) from ONE encoding per face,
# plus one latent .pt per face so later edits need no re-encoding.
set -euo pipefail
in=${1:-examples/photos}
out=${2:-out/edited}
hfgi edit "$in" --attr smile --strength 2 --attr age --strength -2 -o "$out"
