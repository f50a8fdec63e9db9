#!/usr/bin/env bash
# bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py options]
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
if [ -z "$GPUS" ] || ! [[ "$GPUS" =~ ^[1-9][0-9]*$ ]]; then
    echo "dist_test.sh: error: NUM_PROCESSES must be a positive integer, got '$GPUS' (usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [test.py options])" >&2
    exit 2
fi
if [ ! -f "$CONFIG" ]; then
    echo "dist_test.sh: error: config file '$CONFIG' does not exist" >&2
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
    "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"
