# shellcheck shell=bash
# Shared by slurm/train.sbatch and slurm/convert.sbatch (sourced, never run on its own).
#
# One process per GPU, started by srun (srun-native: nemo_repo/training/distenv.py maps
# SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID to RANK / WORLD_SIZE / LOCAL_RANK). Every setting
# below is an environment variable the user may set before `sbatch` (sbatch exports the
# submitting environment by default) or that recipes/launch.py writes into a rendered script.

: "${SLURM_JOB_ID:?not inside a Slurm job: submit with sbatch (or python -m recipes.launch)}"

# Repository to run from: the submit directory unless REPO_DIR says otherwise.
REPO_DIR="${REPO_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-${SLURM_NTASKS_PER_NODE:-8}}"
CONTAINER_IMAGE="${CONTAINER_IMAGE:-}"        # pyxis/enroot image; empty = run on the host
CONTAINER_MOUNTS="${CONTAINER_MOUNTS:-}"      # e.g. /scratch:/scratch (the repo is always mounted)
SRUN_EXTRA_ARGS="${SRUN_EXTRA_ARGS:-}"        # extra srun flags, split on whitespace

# The interpreter: the container's python, else the repository's virtual environment if any.
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -z "$CONTAINER_IMAGE" && -x "$REPO_DIR/.venv/bin/python" ]]; then
        PYTHON="$REPO_DIR/.venv/bin/python"
    else
        PYTHON=python
    fi
fi

# Rendezvous: rank 0 runs on the first node of the allocation. The port is derived from the job id
# (stable across requeues of the same job, different for jobs sharing a node) unless set.
MASTER_ADDR="${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)}"
MASTER_PORT="${MASTER_PORT:-$((10000 + SLURM_JOB_ID % 50000))}"
export MASTER_ADDR MASTER_PORT

# Communication defaults, each overridable from the environment.
export CUDA_DEVICE_MAX_CONNECTIONS="${CUDA_DEVICE_MAX_CONNECTIONS:-1}"   # megatron's TP/compute overlap
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"  # a dead rank ends the job
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"                                  # INFO to debug topology / IB
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Fabric selection is cluster specific: passed through only when set, e.g.
#   NCCL_SOCKET_IFNAME=ib0 (bootstrap / socket interface), NCCL_IB_HCA=mlx5 (InfiniBand adapters),
#   NCCL_IB_DISABLE=1 (no InfiniBand), NCCL_IB_GID_INDEX=3 (RoCE), NCCL_NET_GDR_LEVEL, NCCL_P2P_LEVEL.
for name in NCCL_SOCKET_IFNAME NCCL_IB_HCA NCCL_IB_DISABLE NCCL_IB_GID_INDEX NCCL_IB_TIMEOUT \
            NCCL_NET_GDR_LEVEL NCCL_P2P_LEVEL GLOO_SOCKET_IFNAME; do
    if [[ -n "${!name:-}" ]]; then export "${name?}"; fi
done

SRUN=(srun --nodes="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}" --ntasks-per-node="$GPUS_PER_NODE"
      --kill-on-bad-exit=1 --chdir="$REPO_DIR")
if [[ -n "$CONTAINER_IMAGE" ]]; then
    SRUN+=(--container-image="$CONTAINER_IMAGE"
           --container-mounts="$REPO_DIR:$REPO_DIR${CONTAINER_MOUNTS:+,$CONTAINER_MOUNTS}"
           --container-workdir="$REPO_DIR")
fi
if [[ -n "$SRUN_EXTRA_ARGS" ]]; then
    read -r -a extra <<< "$SRUN_EXTRA_ARGS"
    SRUN+=("${extra[@]}")
fi

describe_job() {
    echo "job ${SLURM_JOB_ID}: ${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}} node(s) x $GPUS_PER_NODE" \
         "process(es), rendezvous $MASTER_ADDR:$MASTER_PORT, restart ${SLURM_RESTART_COUNT:-0}," \
         "image ${CONTAINER_IMAGE:-none}"
}

# run_step CMD...: run CMD on every task with srun, in the background so that the batch shell can
# take USR1 / TERM (`#SBATCH --signal=B:USR1@...` reaches only this shell) and forward them to the
# step; srun hands them to every task. Sets STEP_STATUS to the step's exit code.
run_step() {
    "${SRUN[@]}" "$@" &
    STEP_PID=$!
    trap 'forward_signal USR1' USR1
    trap 'forward_signal TERM' TERM
    while :; do
        SIGNALLED=0
        STEP_STATUS=0
        wait "$STEP_PID" || STEP_STATUS=$?
        # a trapped signal interrupts `wait` (status > 128) while the step runs on: wait again
        if (( ! SIGNALLED || STEP_STATUS <= 128 )); then break; fi
    done
    trap - USR1 TERM
}

forward_signal() {
    SIGNALLED=1
    echo "batch script: SIG$1 received, forwarding to the job step" >&2
    kill -s "$1" "$STEP_PID" 2>/dev/null || true
}
