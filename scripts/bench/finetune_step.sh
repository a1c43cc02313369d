#!/usr/bin/env bash
# The speed and peak memory of one fine-tuning step of FineTuningNetwork (issue 15): forward,
# backward and an RMSprop update of layers[fine_tune_at:] and the head on entry activations
# computed beforehand, and the frozen oneDNN forward pass up to the entry layer, separately.
#
#   scripts/bench/finetune_step.sh [FineTuningBenchmark options]
#     default: --batch 32 --steps 5 --fine-tune-at 100 --size 224 --alpha 1.0 (shared weights)
#
# Builds the FineTuningBenchmark example in release and runs it under /usr/bin/time -v (peak RSS).
# MOBILENET_SHARED_DIR (default ../shared) holds data/weights/mobilenet_v2_1.0_224_dequant_no_top.h5.
set -euo pipefail
cd "$(dirname "$0")/../.."
swift build -c release --product FineTuningBenchmark >&2
binary="$(swift build -c release --show-bin-path)/FineTuningBenchmark"
# glibc returns large freed blocks to the kernel and page-faults them back in on the next step
# (14% of the cycles in the kernel's page clearing); keeping them is what a training process wants.
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-1073741824}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-1073741824}"
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$binary" "$@" 2> >(grep -E "Maximum resident|Elapsed|Percent of CPU" >&2)
else
    "$binary" "$@"
fi
