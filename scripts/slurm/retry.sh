# Sourced by the job scripts: runs the job's step again when it fails,
# resuming from the rows it had committed.
#
#   with_retries LAUNCHER [OPTIONS] -- MPINFER run [OPTIONS]
#
# Environment:
#   RETRIES       attempts in all (default 3; 1 turns retrying off)
#   RETRY_DELAY   seconds before the second attempt (default 5); doubles
#                 after each further failure
#
# Attempts after the first add --resume, so rows committed before a crash
# are kept (the output is byte-identical to an uninterrupted run with the
# data strategy, on any rank count). When the launcher is srun, the
# allocation has several nodes, and srun names the node where the step
# first failed, the next attempt leaves that node out (srun --exclude),
# with as many tasks per node as before on the nodes left.

# The node srun reported first in "srun: error: NODE: task N: ..." lines of
# `log`: the others are usually the tasks srun itself ended after it.
first_failed_node() {
    sed -n 's/^srun: error: \([^: ]*\): tasks\{0,1\} [0-9].*/\1/p' "$1" | head -n 1
}

with_retries() {
    local launcher=()
    while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
        launcher+=("$1")
        shift
    done
    shift
    local attempts=${RETRIES:-3} delay=${RETRY_DELAY:-5} attempt=1 rc log
    local excluded=() nodes=() per_node
    log=$(mktemp)
    if [ "$(basename "${launcher[0]}")" = srun ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
        mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    fi
    per_node=${SLURM_NTASKS_PER_NODE:-$((${SLURM_NTASKS:-1} / ${SLURM_NNODES:-1}))}
    per_node=${per_node%%(*}
    while :; do
        local place=() resume=()
        [ "$attempt" -gt 1 ] && resume=(--resume)
        if [ "${#excluded[@]}" -gt 0 ]; then
            local left=$((${#nodes[@]} - ${#excluded[@]}))
            place=(--exclude="$(
                IFS=,
                echo "${excluded[*]}"
            )" --nodes="$left" --ntasks="$((left * per_node))")
        fi
        # stderr also to the log, for the nodes srun names; the pipeline
        # ends only when tee has written all of it.
        local errexit=$-
        set +e
        {
            "${launcher[@]}" "${place[@]}" "$@" "${resume[@]}" 2>&1 1>&3 3>&- | tee "$log" >&2
            rc=${PIPESTATUS[0]}
        } 3>&1
        [[ $errexit == *e* ]] && set -e
        if [ "$rc" = 0 ]; then
            [ "$attempt" -gt 1 ] && echo "retry: attempt $attempt of $attempts succeeded"
            rm -f "$log"
            return 0
        fi
        if [ "$attempt" -ge "$attempts" ]; then
            echo "retry: attempt $attempt of $attempts failed (exit $rc); giving up" >&2
            rm -f "$log"
            return "$rc"
        fi
        local bad why=""
        bad=$(first_failed_node "$log")
        if [ -n "$bad" ] && [ "$((${#nodes[@]} - ${#excluded[@]}))" -gt 1 ] &&
            ! printf '%s\n' "${excluded[@]}" | grep -qx "$bad"; then
            excluded+=("$bad")
            why=", leaving out $bad, where it failed"
        fi
        echo "retry: attempt $attempt of $attempts failed (exit $rc); attempt $((attempt + 1)) in $delay s with --resume$why" >&2
        sleep "$delay"
        delay=$((delay * 2))
        attempt=$((attempt + 1))
    done
}
