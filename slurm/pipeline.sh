#!/usr/bin/env bash
# Submit a whole run as a chain of Slurm jobs: generate -> train -> merge + eval + report (report.md in the
# run folder). Each job starts only when the one before it completed successfully (--dependency=afterok);
# if one fails, the rest are cancelled (--kill-on-invalid-dep=yes). A requeued job (preemption) keeps its
# dependents waiting.
#
#   slurm/pipeline.sh --recipe configs/qwen2.5_0.5b_gpu.yaml --profile zero2
#   slurm/pipeline.sh --recipe configs/my.yaml --nodes 4 --skip-generate -- --partition=gpu --account=abc
#
# Options (or the environment variables in brackets):
#   --recipe FILE       recipe YAML for every stage                       [RECIPE]
#   --profile NAME      accelerate profile for training (launch/NAME.yaml) [PROFILE, default ddp]
#   --nodes N           1: train_single_node.sbatch; >1: train_multi_node.sbatch on N nodes [NODES]
#   --skip-generate     start at training (the data is already there)     [SKIP_GENERATE=1]
#   --dry-run           print the sbatch commands, submit nothing          [DRY_RUN_SUBMIT=1]
#   -- OPTIONS...       sbatch options for every job (--partition=..., --account=..., --gpus-per-node=...)
# More, shell-quoted: SUBMIT_ARGS (every job), GEN_SUBMIT_ARGS, TRAIN_SUBMIT_ARGS, EVAL_SUBMIT_ARGS
# (one stage), EXTRA_ARGS (recipe overrides for every stage, e.g. '--output_dir runs/exp1').
# Any other variable the templates read (NUM_PROCESSES, GEN_MODE, VENV, PYTHON, ...) is passed on
# through the environment: sbatch exports it to the jobs.
# Prints one line per job and, last, "generate=<id> train=<id> merge_eval=<id>".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RECIPE=${RECIPE:-configs/qwen2.5_0.5b_gpu.yaml}
PROFILE=${PROFILE:-ddp}
NODES=${NODES:-1}
SKIP_GENERATE=${SKIP_GENERATE:-}
DRY_RUN_SUBMIT=${DRY_RUN_SUBMIT:-}
all=()
while [ $# -gt 0 ]; do
  case "$1" in
    --recipe) RECIPE=$2; shift 2 ;;
    --recipe=*) RECIPE=${1#*=}; shift ;;
    --profile) PROFILE=$2; shift 2 ;;
    --profile=*) PROFILE=${1#*=}; shift ;;
    --nodes) NODES=$2; shift 2 ;;
    --nodes=*) NODES=${1#*=}; shift ;;
    --skip-generate) SKIP_GENERATE=1; shift ;;
    --dry-run) DRY_RUN_SUBMIT=1; shift ;;
    --) shift; all=("$@"); break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "pipeline.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -f "$RECIPE" ] || { echo "pipeline.sh: recipe '$RECIPE' not found" >&2; exit 2; }
export RECIPE PROFILE
eval "all+=(${SUBMIT_ARGS:-})"
gen_args=() train_args=() eval_args=()
eval "gen_args=(${GEN_SUBMIT_ARGS:-})"
eval "train_args=(${TRAIN_SUBMIT_ARGS:-})"
eval "eval_args=(${EVAL_SUBMIT_ARGS:-})"
# A cluster without GPUs rejects the templates' --gpus-per-node at submission ("Invalid generic resource (gres)
# specification"): say what to pass instead of letting the first sbatch fail.
if [ -z "$DRY_RUN_SUBMIT" ] && command -v sinfo >/dev/null && ! sinfo -h -o %G | grep -q gpu; then
  case " ${all[*]} ${gen_args[*]} ${train_args[*]} ${eval_args[*]} " in
    *" --gpus-per-node="* | *" --gpus="* | *" --gres="*) ;;
    *) echo "pipeline.sh: this cluster has no GPUs (sinfo lists no gpu gres): pass the CPU nodes' resources," \
         "e.g. -- --gpus-per-node=0 --cpus-per-task=<cores> (slurm/README.md, CPU-only clusters)" >&2
       exit 2 ;;
  esac
fi
if [ "$NODES" -gt 1 ]; then
  train_args=(--nodes="$NODES" "${train_args[@]}")
  train_script=$here/train_multi_node.sbatch
else
  train_script=$here/train_single_node.sbatch
fi
mkdir -p logs  # the templates write logs/%x-%j.out, relative to this folder

submit() {  # submit <stage> <sbatch args...>; sets $job to the new job id
  local stage=$1 out
  shift
  if [ -n "$DRY_RUN_SUBMIT" ]; then
    job="<$stage>"
    echo "sbatch --parsable $*"
    return
  fi
  out=$(sbatch --parsable "$@")
  job=${out%%;*}  # --parsable prints "id" or "id;cluster"
  echo "$stage: job $job"
}

dep=()
gen=
if [ -z "$SKIP_GENERATE" ]; then
  submit generate "${all[@]}" "${gen_args[@]}" "$here/generate.sbatch"
  gen=$job
  dep=(--dependency="afterok:$gen" --kill-on-invalid-dep=yes)
fi
submit train "${dep[@]}" "${all[@]}" "${train_args[@]}" "$train_script"
train=$job
submit merge_eval --dependency="afterok:$train" --kill-on-invalid-dep=yes "${all[@]}" "${eval_args[@]}" \
  "$here/merge_eval.sbatch"
echo "generate=${gen:-skipped} train=$train merge_eval=$job"
