"""The Slurm templates (slurm/), submitted for real to a Slurm 22.05 cluster on this machine.

CPU stands in for GPUs: the nodes advertise fake `gpu` gres (so --gpus-per-node=2 sets
SLURM_GPUS_ON_NODE=2 and CUDA_VISIBLE_DEVICES=0,1 as on a GPU cluster), the templates start one
process per "GPU", and the `ddp` profile runs them over gloo. The model is the tiny TinyLM from
tests.helpers.tiny_model (org_name TinyLM, pos_name "Deep TinyLM").
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dpo_scale.io import read_json, write_jsonl
from tests.helpers.tiny_model import toy_pairs

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = REPO / "slurm"
ORG, POS = "TinyLM", "Deep TinyLM"
TEMPLATES = ("generate.sbatch", "train_single_node.sbatch", "train_multi_node.sbatch", "merge_eval.sbatch")
# the tiny node has 2 cores: every job asks for 2 "GPUs" and both cores
SMALL = ("--gpus-per-node=2", "--cpus-per-task=2")


def write_recipe(path: Path, **keys) -> Path:
    base = {"org_name": ORG, "pos_name": POS, "report_to": "none", "learning_rate": 5e-3, "seed": 0}
    path.write_text(yaml.safe_dump({**base, **keys}, sort_keys=False))
    return path


def job_env(**extra: str) -> dict[str, str]:
    """What a job needs besides the submitting environment: this Python and checkout, no network."""
    return {"PYTHON": sys.executable, "REPO_DIR": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def job_log(folder: Path, job_id: str) -> str:
    logs = sorted((folder / "logs").glob(f"*-{job_id}.out"))
    return logs[0].read_text(errors="replace") if logs else f"(no log for job {job_id} in {folder / 'logs'})"


def finish(cluster, job_id: str, folder: Path, timeout: float = 300) -> dict:
    """Wait for the job to end; it must have COMPLETED (else show its log)."""
    info = cluster.wait(job_id, timeout=timeout)
    assert info.get("JobState") == "COMPLETED", (
        f"job {job_id} ended {info.get('JobState')} ({info.get('Reason')}, exit {info.get('ExitCode')}):\n"
        + job_log(folder, job_id)[-6000:]
    )
    return info


# ---- no cluster needed --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*TEMPLATES, "pipeline.sh"])
def test_templates_are_valid_bash_and_hard_code_no_cluster(name):
    path = SLURM_DIR / name
    assert os.access(path, os.X_OK), f"{path} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    active = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ("--partition", "--account", "--qos", "--nodelist", "--reservation"):
        assert not any(option in line for line in active), f"{name}: {option} must be left to the user (##SBATCH)"
    if name.endswith(".sbatch"):
        assert "#SBATCH --output=logs/%x-%j.out" in active and "#SBATCH --open-mode=append" in active
        assert "#SBATCH --requeue" in active
    if name in ("generate.sbatch", "train_single_node.sbatch", "train_multi_node.sbatch"):
        assert any(re.match(r"#SBATCH --signal=B:USR1@\d+", line) for line in active)
        assert "trap on_usr1 USR1" in text and 'scontrol requeue "$SLURM_JOB_ID"' in text


def _fake_slurm_bin(folder: Path, nodes: list[str], addr: dict[str, str]) -> Path:
    """`scontrol` and `srun` stand-ins: srun runs its command once per node, with that node's
    SLURM_NODEID/SLURM_PROCID/SLURMD_NODENAME, as the real one does on each node."""
    folder.mkdir()
    node_lines = "\n".join(f'  {n}) echo "NodeName={n} Arch=x86_64"; echo "   NodeAddr={addr[n]} NodeHostName={n}";;'
                           for n in nodes)
    scripts = {
        "scontrol": f"""#!/bin/bash
case "$1 $2" in
  "show hostnames") printf '%s\\n' {' '.join(nodes)} ;;
  "show node") case "$3" in
{node_lines}
  esac ;;
  *) echo "fake scontrol: $*" >&2; exit 1 ;;
esac
""",
        "srun": f"""#!/bin/bash
printf '%s\\n' "$@" > "{folder}/srun.args"
while [ $# -gt 0 ] && [ "$1" != bash ]; do shift; done
i=0
for node in {' '.join(nodes)}; do
  SLURM_NODEID=$i SLURM_PROCID=$i SLURMD_NODENAME=$node CUDA_VISIBLE_DEVICES=0,1,2,3 "$@" || exit $?
  i=$((i + 1))
done
""",
    }
    for name, text in scripts.items():
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def test_multi_node_command_per_node_without_a_cluster(tmp_path):
    """The per-node command of train_multi_node.sbatch, with srun/scontrol faked: each node gets its
    own machine rank (the batch shell's own SLURM_NODEID=0 must not leak into it) and all nodes the
    same rendezvous endpoint."""
    nodes = ["gpu07", "gpu08", "gpu09"]
    addr = {n: f"{n}-ib.cluster" for n in nodes}
    fake = _fake_slurm_bin(tmp_path / "bin", nodes, addr)
    recipe = write_recipe(tmp_path / "r.yaml", output_dir=str(tmp_path / "run"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env.update({
        "PATH": f"{fake}:{env['PATH']}", "PYTHON": sys.executable, "REPO_DIR": str(REPO), "DRY_RUN": "1",
        "RECIPE": str(recipe), "PROFILE": "zero2", "EXTRA_ARGS": f'--pos_name "{POS}"',
        # what the batch shell itself sees on the first node
        "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "dpo-train-mn", "SLURM_JOB_NODELIST": "gpu[07-09]",
        "SLURM_JOB_NUM_NODES": "3", "SLURM_NNODES": "3", "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "16",
        "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURMD_NODENAME": "gpu07",
    })
    proc = subprocess.run(["bash", str(SLURM_DIR / "train_multi_node.sbatch"), "--max_steps", "3"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    launches = [line.split() for line in proc.stdout.splitlines() if "accelerate.commands.launch" in line]
    assert len(launches) == 3, proc.stdout

    def opt(cmd: list[str], name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert [opt(c, "--machine_rank") for c in launches] == ["0", "1", "2"]
    for cmd in launches:
        assert opt(cmd, "--num_machines") == "3" and opt(cmd, "--num_processes") == "12"  # 3 nodes x 4 GPUs
        assert opt(cmd, "--main_process_ip") == "gpu07-ib.cluster"  # NodeAddr of the first host
        assert opt(cmd, "--main_process_port") == str(20000 + 4242 % 20000)
        assert opt(cmd, "--rdzv_backend") == "c10d"
        assert opt(cmd, "--config_file") == "launch/zero2.yaml"
        assert opt(cmd, "--deepspeed_multinode_launcher") == "standard"
        assert cmd[cmd.index("-m", cmd.index("--config_file")):] == [
            "-m", "dpo_scale.train", "--config", str(recipe), "--pos_name", "Deep", "TinyLM", "--max_steps", "3"]
    # only node 0 serves the c10d store
    assert [opt(c, "--rdzv_conf") for c in launches] == ["is_host=true", "is_host=false", "is_host=false"]
    for rank, node in enumerate(nodes):
        assert f"[{node}] machine_rank={rank} of 3 nodes, task {rank}" in proc.stdout
    srun_args = (fake / "srun.args").read_text().splitlines()
    assert srun_args[:4] == ["--nodes=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=16"]
    assert "dry run finished" in proc.stdout and "training finished" not in proc.stdout


def test_pipeline_dry_run_chains_the_jobs(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml")
    env = {**os.environ, "PROFILE": "zero3", "SUBMIT_ARGS": "--partition=gpu --account='my lab'"}
    proc = subprocess.run(["bash", str(SLURM_DIR / "pipeline.sh"), "--recipe", str(recipe), "--nodes", "4",
                           "--dry-run", "--", "--qos=high"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    gen, train, merge_eval, summary = proc.stdout.strip().splitlines()
    assert gen.endswith("/slurm/generate.sbatch") and "--qos=high --partition=gpu --account=my lab" in gen
    assert "--dependency=afterok:<generate> --kill-on-invalid-dep=yes" in train
    assert "--nodes=4" in train and train.endswith("/slurm/train_multi_node.sbatch")
    assert "--dependency=afterok:<train>" in merge_eval and merge_eval.endswith("/slurm/merge_eval.sbatch")
    assert summary == "generate=<generate> train=<train> merge_eval=<merge_eval>"
    assert (tmp_path / "logs").is_dir()
    bad = subprocess.run(["bash", str(SLURM_DIR / "pipeline.sh"), "--recipe", str(tmp_path / "missing.yaml")],
                         cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_readme_gives_the_paths_a_new_user_needs():
    readme = (SLURM_DIR / "README.md").read_text()
    profiles = sorted(p.stem for p in (REPO / "launch").glob("*.yaml"))
    for profile in profiles:  # every profile, cpu included
        assert f"`{profile}`" in readme, profile
    assert "--gpus-per-node=0" in readme  # the CPU-only path
    dry_run = next(line for line in readme.splitlines() if "DRY_RUN=1 sbatch" in line)
    assert "--nodes=1" in dry_run  # a 2-node dry run never starts on a 1-node cluster
    assert "report.md" in readme


# ---- on the one-node cluster --------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(slurm, tiny_model, tmp_path_factory):
    """slurm/pipeline.sh: generate (2 processes) -> train (ddp, 2 processes) -> merge + eval."""
    folder = tmp_path_factory.mktemp("chain")
    run = folder / "run"
    recipe = write_recipe(
        folder / "recipe.yaml", model=tiny_model, output_dir=str(run),
        # data stage: 8 prompts in 4 chunks of 2, two ranks
        backend="hf", max_prompts=8, chunk_size=2, batch_size=4, max_new_tokens=16,
        # training
        max_steps=2, save_steps=2, per_device_train_batch_size=1, gradient_accumulation_steps=1,
        # evaluation
        max_eval_questions=4, eval_max_new_tokens=12, eval_batch_size=16,
    )
    env = job_env(EVAL_SUBMIT_ARGS="--gpus-per-node=1")
    started = time.time()
    proc = slurm.run(["bash", str(SLURM_DIR / "pipeline.sh"), "--recipe", str(recipe), "--profile", "ddp",
                      "--", *SMALL], env=env, cwd=folder)
    ids = dict(kv.split("=") for kv in proc.stdout.strip().splitlines()[-1].split())
    submitted = {stage: slurm.job(job_id) for stage, job_id in ids.items()}
    infos = {stage: finish(slurm, ids[stage], folder, timeout=420) for stage in ("generate", "train", "merge_eval")}
    print(f"\nslurm chain: generate -> train -> merge_eval in {time.time() - started:.0f} s")
    return {"folder": folder, "run": run, "ids": ids, "submitted": submitted, "infos": infos}


def test_generate_stage_runs_one_process_per_gpu(chain):
    data = chain["run"] / "data"
    manifest = read_json(data / "manifest.json")
    assert manifest["processes"] == 2  # --gpus-per-node=2 -> two ranks sharing the chunks
    assert sorted(p.name for p in (data / "parts").glob("chunk-*.jsonl")) == [f"chunk-{k:05d}.jsonl" for k in range(4)]
    stats = read_json(data / "stats.json")
    assert stats["answers"] == 8 and stats["pairs"] > 0  # the tiny model calls itself TinyLM
    log = job_log(chain["folder"], chain["ids"]["generate"])
    assert "--multi_gpu --num_processes 2" in log and "data stage finished" in log


def test_train_single_node_with_two_processes(chain):
    manifest = read_json(chain["run"] / "adapter" / "train_manifest.json")
    assert manifest["processes"] == 2 and "MULTI_CPU" in manifest["distributed_type"]
    assert manifest["global_step"] == 2 and manifest["resumed_from"] is None
    log = job_log(chain["folder"], chain["ids"]["train"])
    assert "--config_file launch/ddp.yaml --num_processes 2" in log and "training finished" in log


def test_chain_runs_in_order_with_afterok(chain):
    ids, submitted, infos = chain["ids"], chain["submitted"], chain["infos"]
    assert f"afterok:{ids['generate']}" in submitted["train"]["Dependency"]
    assert f"afterok:{ids['train']}" in submitted["merge_eval"]["Dependency"]
    # each started after the previous one ended
    assert infos["train"]["StartTime"] >= infos["generate"]["EndTime"]
    assert infos["merge_eval"]["StartTime"] >= infos["train"]["EndTime"]
    run = chain["run"]
    assert (run / "merged" / "merge_manifest.json").is_file()
    result = json.loads((run / "eval.json").read_text())
    assert result and (run / "eval.md").is_file()
    # the last job writes the run's report, as `dpo-scale run` does
    report = (run / "report.md").read_text()
    assert "## Training" in report and "## Evaluation" in report
    assert "-m dpo_scale report --config" in job_log(chain["folder"], ids["merge_eval"])


def test_preempted_training_requeues_and_resumes(slurm, tiny_model, tmp_path):
    """USR1 to the batch shell (what --signal=B:USR1@N sends before the time limit): the template
    stops the trainer and requeues the job; the rerun resumes from the last checkpoint."""
    data = tmp_path / "data"
    write_jsonl(data / "pairs.jsonl", toy_pairs(64))
    max_steps = 30
    recipe = write_recipe(
        tmp_path / "recipe.yaml", model=tiny_model, output_dir=str(tmp_path / "run"), data_dir=str(data),
        max_steps=max_steps, save_steps=2, save_total_limit=2, per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
    )
    (tmp_path / "logs").mkdir()
    env = job_env(RECIPE=str(recipe), PROFILE="ddp", GRACE="20")
    job_id = slurm.sbatch(SLURM_DIR / "train_single_node.sbatch", sbatch_args=SMALL, env=env, cwd=tmp_path)
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.time() + 300
    while not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
        info = slurm.job(job_id)
        assert info.get("JobState") in ("PENDING", "RUNNING"), job_log(tmp_path, job_id)[-6000:]
        assert time.time() < deadline, "no checkpoint after 300 s:\n" + job_log(tmp_path, job_id)[-6000:]
        time.sleep(0.2)
    slurm.run(["scancel", "--signal=USR1", "--batch", job_id])
    deadline = time.time() + 120
    while int(slurm.job(job_id).get("Restarts", 0)) < 1:
        info = slurm.job(job_id)
        assert info.get("JobState") not in slurm.TERMINAL_STATES, (
            f"job ended {info.get('JobState')} without a requeue:\n" + job_log(tmp_path, job_id)[-6000:])
        assert time.time() < deadline, "not requeued after 120 s:\n" + job_log(tmp_path, job_id)[-6000:]
        time.sleep(0.5)
    info = finish(slurm, job_id, tmp_path, timeout=360)
    assert int(info["Restarts"]) >= 1
    manifest = read_json(tmp_path / "run" / "adapter" / "train_manifest.json")
    assert manifest["global_step"] == max_steps
    assert manifest["resumed_from"], "the requeued run started over instead of resuming"
    resumed_step = int(Path(manifest["resumed_from"]).name.split("-")[-1])
    assert 2 <= resumed_step < max_steps
    log = job_log(tmp_path, job_id)  # one file, appended to by both runs
    assert "USR1" in log and "restart 0" in log and "restart 1" in log, log[-6000:]


# ---- on two nodes (network namespaces) ----------------------------------------------------------

def two_step_recipe(tmp_path: Path, tiny_model: str) -> Path:
    """16 toy pairs and a recipe that trains the tiny model 2 steps on them; a logs/ folder for the job."""
    data = tmp_path / "data"
    write_jsonl(data / "pairs.jsonl", toy_pairs(16))
    (tmp_path / "logs").mkdir()
    return write_recipe(
        tmp_path / "recipe.yaml", model=tiny_model, output_dir=str(tmp_path / "run"), data_dir=str(data),
        max_steps=2, save_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
    )


def test_train_multi_node_on_two_nodes(slurm_two_nodes, tiny_model, tmp_path):
    """train_multi_node.sbatch across two slurmd in separate network namespaces, 1 process per node."""
    cluster = slurm_two_nodes
    recipe = two_step_recipe(tmp_path, tiny_model)
    # gloo must use the link between the namespaces (this machine's hostname resolves to 127.0.0.1)
    env = job_env(RECIPE=str(recipe), PROFILE="ddp", GLOO_SOCKET_IFNAME="dpo0")
    job_id = cluster.sbatch(SLURM_DIR / "train_multi_node.sbatch",
                            sbatch_args=("--gpus-per-node=1", "--cpus-per-task=1"), env=env, cwd=tmp_path)
    info = finish(cluster, job_id, tmp_path, timeout=360)
    assert info["NodeList"] == "node[1-2]"
    log = job_log(tmp_path, job_id)
    assert "[node1] machine_rank=0 of 2 nodes, task 0" in log
    assert "[node2] machine_rank=1 of 2 nodes, task 1" in log
    assert "rendezvous c10d at 10.123.0.1:" in log
    manifest = read_json(tmp_path / "run" / "adapter" / "train_manifest.json")
    assert manifest["processes"] == 2 and manifest["global_step"] == 2


# ---- on a one-node cluster without GPUs -----------------------------------------------------------

def test_cpu_only_cluster(slurm_cpu_only, tiny_model, tmp_path):
    """A cluster configured without GPUs: the templates as shipped are refused at submission; pipeline.sh says
    what to pass; with --gpus-per-node=0 the multi-node dry run (--nodes=1) and a 2-process ddp training run."""
    cluster = slurm_cpu_only
    recipe = two_step_recipe(tmp_path, tiny_model)
    env = job_env(RECIPE=str(recipe), PROFILE="ddp")
    script = SLURM_DIR / "train_single_node.sbatch"
    refused = cluster.run(["sbatch", "--parsable", "--cpus-per-task=2", str(script)], check=False, env=env,
                          cwd=tmp_path)
    assert refused.returncode != 0 and "Invalid generic resource" in refused.stderr, refused.stderr

    told = cluster.run(["bash", str(SLURM_DIR / "pipeline.sh"), "--recipe", str(recipe)], check=False, env=env,
                       cwd=tmp_path)
    assert told.returncode == 2 and "--gpus-per-node=0" in told.stderr, told.stdout + told.stderr

    cpu = ("--gpus-per-node=0", "--cpus-per-task=2")
    dry = cluster.sbatch(SLURM_DIR / "train_multi_node.sbatch", sbatch_args=("--nodes=1", "--time=2", *cpu),
                         env={**env, "DRY_RUN": "1"}, cwd=tmp_path)
    finish(cluster, dry, tmp_path, timeout=120)
    log = job_log(tmp_path, dry)
    assert "dry run finished" in log and "training finished" not in log

    job_id = cluster.sbatch(script, sbatch_args=cpu, env={**env, "NUM_PROCESSES": "2"}, cwd=tmp_path)
    finish(cluster, job_id, tmp_path, timeout=360)
    manifest = read_json(tmp_path / "run" / "adapter" / "train_manifest.json")
    assert manifest["processes"] == 2 and manifest["distributed_type"] == "MULTI_CPU"
    assert manifest["global_step"] == 2
