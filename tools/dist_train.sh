#!/usr/bin/env bash
# bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
# One process per GPU; without a GPU the processes train on the CPU over gloo.
CONFIG=$1
GPUS=$2
if [ -z "$GPUS" ] || ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "dist_train.sh: error: NUM_PROCESSES must be a positive integer, got '$GPUS' (usage: bash tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options])" >&2
    exit 2
fi
if [ ! -f "$CONFIG" ]; then
    echo "dist_train.sh: error: config file '$CONFIG' does not exist" >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
