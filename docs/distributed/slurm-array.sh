#!/bin/bash
# Embeds a list of images with a Slurm job array: task I of N gets SLURM_ARRAY_TASK_ID = I,
# which becomes `--shard I/N`. Submit with `sbatch docs/distributed/slurm-array.sh`; every node
# sees /shared at the same path. A task that is requeued or re-submitted resumes (each batch is
# committed to its shard index as it is done).
# Afterwards: mobilenet index merge --index /shared/out/photos.db /shared/out/shard-*.db
# See docs/distributed.md.
#SBATCH --job-name=mobilenet-embed
#SBATCH --array=0-7            # N = 8 shards: task ids 0 ... 7
#SBATCH --cpus-per-task=4
#SBATCH --mem=4G
#SBATCH --time=02:00:00
#SBATCH --output=/shared/out/logs/embed-%A-%a.log
set -euo pipefail
N=$SLURM_ARRAY_TASK_COUNT      # 8 here; Slurm sets it for arrays
exec mobilenet index add \
    --files-from /shared/list.txt \
    --shard "${SLURM_ARRAY_TASK_ID}/${N}" \
    --index "/shared/out/shard-${SLURM_ARRAY_TASK_ID}.db" \
    --weights /shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
    --threads "${SLURM_CPUS_PER_TASK}"
