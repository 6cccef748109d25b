#!/usr/bin/env bash
# Starts a real SLURM cluster on this host (munged, slurmctld and two slurmd
# daemons posing as two nodes, all under a temporary directory on ports of
# their own), submits the job scripts in this directory with sbatch (the GPU
# one on stand-in GPUs, computing on the CPU), and checks every job's output
# against a single-process run of the same model.
# Prints one PASS/FAIL line per job and exits non-zero if any failed. Stops
# exactly the daemons it started and removes its directory, however it ends
# (MPINFER_SLURM_KEEP=1 keeps the directory, logs included).
#
# Needs root (the daemons run as root, as they do on a cluster); without root
# it re-runs itself through sudo, and skips only when sudo is unavailable.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n -E bash "$0" "$@"
    fi
    echo "SKIP slurm job scripts: the SLURM test needs root (or passwordless sudo) to run munged, slurmctld and slurmd"
    exit 0
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

# The daemons, the client commands and the MPI plugin; Debian 12 ships
# Slurm 22.05 built against the same PMIx as its Open MPI.
need_pkgs=0
for cmd in munged slurmctld slurmd sbatch srun squeue scontrol; do
    command -v "$cmd" >/dev/null 2>&1 || need_pkgs=1
done
[ -e /usr/lib/x86_64-linux-gnu/slurm-wlm/mpi_pmix.so ] || [ -n "$(find /usr/lib -name mpi_pmix.so -print -quit 2>/dev/null)" ] || need_pkgs=1
if [ "$need_pkgs" = 1 ]; then
    echo "installing SLURM and munge from apt"
    pkgs=(slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }
fi

mpinfer=$repo/target/release/mpinfer
py=$repo/.venv/bin/python
if [ ! -x "$mpinfer" ] || [ ! -x "$py" ]; then
    bash "$repo/scripts/setup.sh"
fi

# The job scripts must get the Open MPI root permission from the cluster (its
# TaskProlog) like any job would, not from whoever called this script; and
# under SLURM the slots are the allocation's, so no oversubscription switch.
unset OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM OMPI_MCA_rmaps_base_oversubscribe
# Nothing from a surrounding allocation or the caller's own job settings may
# leak into this cluster's jobs.
unset MODEL INPUT OUTPUT STRATEGY DEVICE MPINFER MPINFER_ARGS
while IFS='=' read -r name _; do
    case $name in SLURM_* | SBATCH_* | SRUN_* | SALLOC_*) unset "$name" ;; esac
done < <(env)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpinfer-slurm.XXXXXX")
# Job steps run as the submitting user and must reach munged's socket.
chmod 755 "$tmp"
mkdir -p "$tmp"/{etc,run,log,munge,state,spool,tmpfs,jobs,ref}

# shellcheck disable=SC2317  # reached through the EXIT trap
stop_pid() { # pid file: TERM, then KILL if it has not gone within 10 s
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

submitted=()
# shellcheck disable=SC2317  # reached through the EXIT trap
cleanup() {
    local rc=$?
    set +e
    if [ "${#submitted[@]}" -gt 0 ] && [ -e "$tmp/run/slurmctld.pid" ]; then
        scancel "${submitted[@]}" 2>/dev/null
        for _ in $(seq 50); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for d in slurmd-n2 slurmd-n1 slurmctld munged; do
        stop_pid "$tmp/run/$d.pid"
    done
    if [ "${MPINFER_SLURM_KEEP:-0}" = 1 ]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_setup() {
    echo "FAIL cluster: $1"
    for f in "$tmp"/log/*; do
        [ -s "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
    done
    exit 1
}

# Ports the kernel just handed out are free now and, unlike fixed ones, do
# not clash with another copy of this test running beside this one.
read -r ctld_port n1_port n2_port < <("$py" -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))
')

host=$(hostname -s)
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$EPOCHREALTIME

# munge: a fresh key of our own, so nothing here depends on /etc/munge.
# --force because munged refuses to run as root otherwise.
dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$tmp/munge/munge.key"
munged --foreground --force --socket="$tmp/munge/munge.socket" \
    --key-file="$tmp/munge/munge.key" --pid-file="$tmp/run/munged.pid" \
    --seed-file="$tmp/munge/munged.seed" --log-file="$tmp/log/munged.log" \
    </dev/null >>"$tmp/log/munged.log" 2>&1 &
echo $! >"$tmp/run/munged.pid"
for _ in $(seq 100); do
    [ -S "$tmp/munge/munge.socket" ] && break
    kill -0 "$(cat "$tmp/run/munged.pid")" 2>/dev/null || fail_setup "munged exited"
    sleep 0.05
done
[ -S "$tmp/munge/munge.socket" ] || fail_setup "munged did not create its socket"

# Every step of every job exports the Open MPI root permission, which the
# mpirun job script needs here because the jobs run as root.
cat >"$tmp/etc/task-prolog.sh" <<'EOF'
#!/bin/sh
echo export OMPI_ALLOW_RUN_AS_ROOT=1
echo export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
EOF
chmod 755 "$tmp/etc/task-prolog.sh"

# Job ids start from this cluster's own port: Open MPI names its shared-memory
# files after the job and step, so two copies of this test running side by
# side must not both run a job 1.
# Two nodes on this one host: distinct names and ports, the same host name,
# and per-node spool and temporary directories (%n) so their step sockets
# and PMIx files do not collide. config_overrides lets each claim 4 CPUs,
# 8 GiB and 2 GPUs whatever the host has; nothing here enforces them. The
# GPUs are links to /dev/null: Slurm schedules and binds them like real ones,
# and the ranks compute on the CPU. A finished job's record stays for
# MinJobAge seconds, long enough to read its state and exit code.
cat >"$tmp/etc/slurm.conf" <<EOF
ClusterName=mpinfer-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$tmp/munge/munge.socket
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
TmpFS=$tmp/tmpfs/%n
SlurmctldPidFile=$tmp/run/slurmctld-own.pid
SlurmdPidFile=$tmp/run/slurmd-%n-own.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$tmp/etc/task-prolog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
KillWait=5
MinJobAge=300
FirstJobId=$((ctld_port * 100))
GresTypes=gpu
NodeName=n1 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n1_port CPUs=4 RealMemory=8192 Gres=gpu:2 State=UNKNOWN
NodeName=n2 NodeHostname=$host NodeAddr=127.0.0.1 Port=$n2_port CPUs=4 RealMemory=8192 Gres=gpu:2 State=UNKNOWN
PartitionName=test Nodes=n1,n2 Default=YES MaxTime=00:30:00 State=UP
EOF
# Slurm counts GPUs by their device files; links to /dev/null stand in.
mkdir -p "$tmp/dev"
ln -s /dev/null "$tmp/dev/nvidia0"
ln -s /dev/null "$tmp/dev/nvidia1"
echo "Name=gpu File=$tmp/dev/nvidia[0-1]" >"$tmp/etc/gres.conf"
export SLURM_CONF=$tmp/etc/slurm.conf
mkdir -p "$tmp"/spool/{n1,n2} "$tmp"/tmpfs/{n1,n2}

# In the foreground, so $! is the daemon itself: the pid files written here
# exist even for a daemon that dies before writing its own.
slurmctld -D -c -f "$SLURM_CONF" </dev/null >>"$tmp/log/slurmctld.out" 2>&1 &
echo $! >"$tmp/run/slurmctld.pid"
for n in n1 n2; do
    slurmd -D -N "$n" -f "$SLURM_CONF" </dev/null >>"$tmp/log/slurmd-$n.out" 2>&1 &
    echo $! >"$tmp/run/slurmd-$n.pid"
done

for _ in $(seq 300); do
    [ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -c '^idle')" = 2 ] && break
    for d in slurmctld slurmd-n1 slurmd-n2; do
        kill -0 "$(cat "$tmp/run/$d.pid")" 2>/dev/null || fail_setup "$d exited"
    done
    sleep 0.1
done
[ "$(sinfo -h -N -o '%t' 2>/dev/null | grep -c '^idle')" = 2 ] ||
    fail_setup "nodes not idle after 30 s: $(sinfo -h -N -o '%N %t %E' 2>&1 | tr '\n' ';')"
printf 'cluster up: 2 nodes in %s s (SLURM %s)\n' "$(since "$t_start")" \
    "$(sinfo -V | awk '{print $2}')"

# Sets model and input for a model's short name.
model_input() {
    case $1 in
        seed_net) model=$repo/examples/seed_net/seed_net.onnx input=$repo/examples/seed_net/images.npy ;;
        seed_x16) model=$repo/examples/seed_net/seed_net.onnx input=$tmp/ref/seed_x16.input.npy ;;
        digits) model=$repo/examples/digits/model.onnx input=$repo/examples/digits/images.npy ;;
    esac
}

# The seed network's images 16 times over: enough rows (16 blocks) for a
# run to commit some before it is killed.
"$py" -c "import numpy as np, sys; np.save(sys.argv[2], np.tile(np.load(sys.argv[1]), (16, 1, 1, 1)))" \
    examples/seed_net/images.npy "$tmp/ref/seed_x16.input.npy"
# One reference per model: a single process, no launcher at all.
declare -A ref
for m in seed_net digits seed_x16; do
    model_input "$m"
    "$mpinfer" run --model "$model" --input "$input" --output "$tmp/ref/$m.npy" \
        --strategy data --threads 1 >"$tmp/ref/$m.log" 2>&1 ||
        { cat "$tmp/ref/$m.log"; fail_setup "reference run of $m failed"; }
    ref[$m]=$tmp/ref/$m.npy
done

compare() { # output reference: max difference relative to the largest reference value
    "$py" - "$1" "$2" <<'EOF'
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
if a.shape != b.shape or a.dtype != b.dtype:
    print(f"shape/dtype {a.shape} {a.dtype} != {b.shape} {b.dtype}")
    sys.exit(1)
rel = float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), 1e-30) if a.size else 0.0
print(f"max rel diff {rel:.1e}")
sys.exit(0 if rel <= 1e-5 else 1)
EOF
}

# Stands in for mpinfer in the GPU job: notes the GPUs Slurm gave each rank
# of each step, then runs the real binary.
cat >"$tmp/etc/gpu-probe.sh" <<EOF
#!/bin/sh
echo "\${CUDA_VISIBLE_DEVICES-none}" >"$tmp/jobs/gpus.\$SLURM_JOB_ID.\$SLURM_STEP_ID.\$SLURM_PROCID"
exec "$mpinfer" "\$@"
EOF
chmod 755 "$tmp/etc/gpu-probe.sh"

# Stands in for mpinfer in the retry job: in a job's first attempt, the
# step's last rank is killed (SIGKILL) a second after the run's resume
# manifest appears (rows are committed every half second).
cat >"$tmp/etc/crash-once.sh" <<EOF
#!/bin/bash
marker=$tmp/jobs/crashed.\$SLURM_JOB_ID
if [ "\$SLURM_PROCID" = "\$((SLURM_NTASKS - 1))" ] && [ ! -e "\$marker" ]; then
    touch "\$marker"
    out="" prev=""
    for a in "\$@"; do [ "\$prev" = --output ] && out=\$a; prev=\$a; done
    "$mpinfer" "\$@" &
    for _ in \$(seq 400); do [ -e "\$out.resume" ] && break; sleep 0.05; done
    sleep 1
    kill -9 \$!
    kill -9 \$\$
fi
exec "$mpinfer" "\$@"
EOF
chmod 755 "$tmp/etc/crash-once.sh"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# wait_job ID: until the job ends (at most 120 s, then cancelled); sets info
# (its record) and state. sbatch --wait polls every few seconds; the job
# record answers at once.
wait_job() {
    local deadline=$(($(date +%s) + 120))
    while :; do
        info=$(scontrol -o show job "$1" 2>/dev/null || true)
        state=$(field JobState <<<"$info")
        case $state in
            PENDING | CONFIGURING | RUNNING | COMPLETING | "") ;;
            *) return ;;
        esac
        if [ "$(date +%s)" -ge "$deadline" ]; then
            scancel "$1" 2>/dev/null || true
            state="TIMEOUT (120 s)"
            return
        fi
        sleep 0.1
    done
}

failed=0
# job script, model, how the output must match (exact: byte for byte;
# close: within 1e-5 of the largest output), extra sbatch options.
# Besides the output, checks that the run used every task of the job, that
# a multi-node job started its step on every node, and that the GPU job
# gave each rank a GPU of its own.
run_job() {
    local script=$1 m=$2 match=$3
    shift 3
    local name
    name=$(basename "$script" .sbatch)
    local label="$name $m${*:+ $*}"
    local out=$tmp/jobs/$name-$m-$RANDOM.npy
    local t0 id info state="" detail="" model input
    model_input "$m"
    t0=$EPOCHREALTIME
    id=$(cd "$tmp/jobs" && MODEL=$model INPUT=$input OUTPUT=$out sbatch --parsable "$@" "$here/$script") ||
        { echo "FAIL $label: sbatch refused it"; failed=1; return; }
    submitted+=("$id")
    wait_job "$id"
    local secs
    secs=$(since "$t0")
    local log tasks nodes
    log=$(compgen -G "$tmp/jobs/*-$id.out" | head -n 1 || true)
    tasks=$(field NumTasks <<<"$info")
    nodes=$(field NumNodes <<<"$info")
    local ok=1
    if [ "$state" != COMPLETED ] || [ "$(field ExitCode <<<"$info")" != 0:0 ]; then
        ok=0 detail="job $state, exit $(field ExitCode <<<"$info")"
    elif [ ! -f "$out" ]; then
        ok=0 detail="no output written"
    elif [ "$match" = exact ]; then
        if cmp -s "$out" "${ref[$m]}"; then
            detail="byte-identical to 1 process"
        else
            ok=0 detail="differs from 1 process: $(compare "$out" "${ref[$m]}")"
        fi
    else
        if detail=$(compare "$out" "${ref[$m]}"); then
            detail="$detail from 1 process"
        else
            ok=0
        fi
    fi
    # The retry job finishes on the node left: its tasks only.
    local ranks=$tasks
    [ "${MPINFER:-}" = "$tmp/etc/crash-once.sh" ] && ranks=$((tasks / nodes * (nodes - 1)))
    # mpirun's [job,rank] tags may land inside a line; drop them first.
    if [ "$ok" = 1 ] && ! sed 's/\[[0-9]*,[0-9]*\]<std[a-z]*>://g' "$log" | grep -q "parallel on $ranks ranks"; then
        ok=0 detail="the log does not show a run on $ranks tasks"
    fi
    if [ "$ok" = 1 ] && [ "${nodes:-1}" -gt 1 ]; then
        for n in n1 n2; do
            grep -q "launch task StepId=$id\.0 " "$tmp/log/slurmd-$n.log" ||
                { ok=0 detail="step $id.0 never started on $n"; }
        done
    fi
    if [ "$ok" = 1 ] && [ "${MPINFER:-}" = "$tmp/etc/gpu-probe.sh" ]; then
        local f step gpus
        for f in "$tmp/jobs/gpus.$id".*; do
            [ -e "$f" ] || { ok=0 detail="no rank recorded its GPU"; break; }
            step=${f#"$tmp/jobs/gpus.$id."}
            step=${step%%.*}
            gpus=$(cat "$tmp/jobs/gpus.$id.$step".* | sort)
            if grep -qv '^[0-9][0-9]*$' <<<"$gpus" || [ -n "$(uniq -d <<<"$gpus")" ] ||
                [ "$(wc -l <<<"$gpus")" != "$tasks" ]; then
                ok=0 detail="step $step: ranks did not get one GPU each: $(tr '\n' ' ' <<<"$gpus")"
            fi
        done
        [ "$ok" = 1 ] && detail="$detail, one GPU per rank"
    fi
    if [ "$ok" = 1 ] && [ "${MPINFER:-}" = "$tmp/etc/crash-once.sh" ]; then
        local resumed
        resumed=$(sed -n 's/.*resuming: \([0-9]*\) of .*/\1/p' "$log" | head -n 1)
        if ! grep -q "retry: attempt 1 of 3 failed.*leaving out n2" "$log"; then
            ok=0 detail="no retry leaving out n2 after the rank there was killed"
        elif ! grep -q "retry: attempt 2 of 3 succeeded" "$log"; then
            ok=0 detail="the second attempt did not succeed"
        elif [ "${resumed:-0}" -le 0 ]; then
            ok=0 detail="the second attempt did not resume from committed rows"
        else
            detail="$detail after a rank on n2 was killed: resumed from $resumed rows on n1 alone"
        fi
    fi
    if [ "$ok" = 1 ]; then
        echo "PASS $label (job $id, $tasks ranks on $nodes node$([ "$nodes" = 1 ] || echo s)): $secs s, $detail"
    else
        failed=1
        echo "FAIL $label (job $id): $secs s, $detail"
        [ -n "$log" ] && sed 's/^/    | /' "$log" | tail -n 40
    fi
}

run_job cpu-data.sbatch seed_net exact
run_job cpu-data.sbatch digits exact
run_job cpu-tensor.sbatch seed_net close
run_job cpu-tensor.sbatch digits close
run_job cpu-data-mpirun.sbatch seed_net exact
# Both "nodes" have one host name, so Open MPI's shared-memory transport
# would take ranks on different nodes for neighbours and collide; TCP only.
OMPI_MCA_btl=self,tcp run_job cpu-data-mpirun.sbatch digits exact -N 2 --ntasks-per-node=2 --cpus-per-task=1
OMPI_MCA_btl=self,tcp run_job cpu-tensor.sbatch seed_net close -N 2 --ntasks-per-node=2 --cpus-per-task=1
# The GPUs are stand-ins with no driver behind them: the job's default
# device, auto, finds none usable, says so, and the ranks compute on the CPU.
MPINFER=$tmp/etc/gpu-probe.sh run_job gpu.sbatch digits exact --ntasks-per-node=2 --cpus-per-task=1 --mem=1G

# A batch of two tasks on 4 ranks over both nodes, weights 2 and 1: ranks
# split 3 and 1, both outputs byte-identical to one process.
run_batch_job() {
    local dir=$tmp/jobs/batch t0 id info state log detail="" ok=1
    mkdir -p "$dir"
    cat >"$dir/tasks.toml" <<TOML
[[task]]
model = "$repo/examples/seed_net/seed_net.onnx"
input = "$repo/examples/seed_net/images.npy"
output = "seed.npy"
weight = 2

[[task]]
model = "$repo/examples/digits/model.onnx"
input = "$repo/examples/digits/images.npy"
output = "digits.npy"
TOML
    t0=$EPOCHREALTIME
    id=$(cd "$tmp/jobs" && TASKS=$dir/tasks.toml OMPI_MCA_btl=self,tcp sbatch --parsable -N 2 \
        --ntasks-per-node=2 --cpus-per-task=1 "$here/cpu-batch.sbatch") ||
        { echo "FAIL cpu-batch: sbatch refused it"; failed=1; return; }
    submitted+=("$id")
    wait_job "$id"
    log=$(compgen -G "$tmp/jobs/*-$id.out" | head -n 1 || true)
    if [ "$state" != COMPLETED ]; then
        ok=0 detail="job $state, exit $(field ExitCode <<<"$info")"
    elif ! cmp -s "$dir/seed.npy" "${ref[seed_net]}" || ! cmp -s "$dir/digits.npy" "${ref[digits]}"; then
        ok=0 detail="an output differs from 1 process"
    elif ! grep -q "task 1: .*parallel on 3 ranks" "$log" || ! grep -q "task 2: .*parallel on 1 ranks" "$log"; then
        ok=0 detail="the tasks did not get 3 and 1 ranks"
    else
        detail="2 tasks on 3 and 1 ranks of 2 nodes, both byte-identical to 1 process"
    fi
    if [ "$ok" = 1 ]; then
        echo "PASS cpu-batch (job $id): $(since "$t0") s, $detail"
    else
        failed=1
        echo "FAIL cpu-batch (job $id): $detail"
        [ -n "$log" ] && sed 's/^/    | /' "$log" | tail -n 40
    fi
}
run_batch_job

# A rank killed in the first attempt: the job retries with --resume without
# the node it died on, and the output is byte-identical all the same.
# The last rank computes 30 times slower, so the others' rows are committed
# well before it is killed, and it is killed well before it is done.
RETRY_DELAY=1 MPINFER_TIMEOUT=30 MPINFER_SLOW_RANK=3:30 MPINFER_ARGS="--batch-size 64" \
    MPINFER=$tmp/etc/crash-once.sh OMPI_MCA_btl=self,tcp \
    run_job cpu-data.sbatch seed_x16 exact -N 2 --ntasks-per-node=2 --cpus-per-task=1

printf 'slurm: %s in %s s\n' "$([ "$failed" = 0 ] && echo "all jobs passed" || echo "some jobs FAILED")" \
    "$(since "$t_start")"
exit "$failed"
