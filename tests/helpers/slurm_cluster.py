#!/usr/bin/env python3
"""A real Slurm cluster on this machine, for the tests in tests/slurm and for trying the templates.

Debian bookworm packages (Slurm 22.05), no systemd: munged with its own key and socket, slurmctld
and slurmd in the foreground under their own sessions, all files in one folder. Two layouts:

* one node (default): `NodeName=localhost NodeAddr=127.0.0.1`, everything on the loopback;
* several nodes (`--nodes 2`): each slurmd runs in a network namespace that this script creates
  (`<prefix>-n1`, `<prefix>-n2`, ...) joined by veth pairs on 10.123.0.0/24; slurmctld runs beside
  node1 (a head node). Client commands must then run in node1's namespace: `Cluster.client()`
  prefixes them with `nsenter --net=...`. No interface outside these namespaces is touched.

GPUs are faked: each node gets `Gres=gpu:N` backed by character devices (`mknod f c 1 3`), so
`--gpus-per-node=2` sets CUDA_VISIBLE_DEVICES=0,1 and SLURM_GPUS_ON_NODE=2 as on a GPU cluster.

Daemons are stopped by the PIDs saved in <dir>/pids.json, never by name.

    python tests/helpers/slurm_cluster.py up /tmp/slurm [--nodes 2]    # prints `export SLURM_CONF=...`
    python tests/helpers/slurm_cluster.py down /tmp/slurm
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "scancel", "sinfo", "munged")
TERMINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
    "PREEMPTED",
}
SUBNET = "10.123.0"


class Unavailable(RuntimeError):
    """Slurm cannot be installed or started here (not root, no apt, no network namespaces, ...)."""


def _which_sbin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def ensure_installed(log=print) -> None:
    """Install Debian's Slurm + munge packages when they are missing (root + apt-get needed)."""
    if all(_which_sbin(b) for b in BINARIES):
        return
    if os.geteuid() != 0:
        raise Unavailable("Slurm is not installed and installing it needs root (apt-get install "
                          + " ".join(PACKAGES) + ")")
    if not shutil.which("apt-get"):
        raise Unavailable("Slurm is not installed and there is no apt-get to install it (needs Debian/Ubuntu)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {' '.join(PACKAGES)} with apt-get ...")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Unavailable(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    missing = [b for b in BINARIES if not _which_sbin(b)]
    if missing:
        raise Unavailable(f"installed {' '.join(PACKAGES)} but {missing} are still missing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


@dataclass
class Node:
    name: str
    addr: str
    netns: str | None = None


@dataclass
class Cluster:
    TERMINAL_STATES = TERMINAL_STATES
    root: Path
    nodes: list[Node]
    cpus: int
    gpus: int
    use_netns: bool = False
    cred_expire: int = 10
    pids: dict[str, int] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)

    # -- paths and environment ----------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket.2"

    @property
    def multi_node(self) -> bool:
        return self.use_netns

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        # variables of an enclosing Slurm job (tests run inside one) would leak into ours as options
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

    def client(self, args: list[str]) -> list[str]:
        """A client command (sbatch, scontrol, ...) as it must run to reach slurmctld."""
        head = self.nodes[0]
        return (["nsenter", f"--net=/run/netns/{head.netns}"] if head.netns else []) + args

    def run(self, args: list[str], check: bool = True, env: dict[str, str] | None = None,
            cwd: str | Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.client(args), env=self.env(env), cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    # -- jobs -----------------------------------------------------------------------------------
    def sbatch(self, script: str | Path, *args: str, sbatch_args: tuple[str, ...] = (),
               env: dict[str, str] | None = None, cwd: str | Path | None = None) -> str:
        out = self.run(["sbatch", "--parsable", *sbatch_args, str(script), *args], env=env, cwd=cwd).stdout
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job -o` as a dict ({} once the job is forgotten)."""
        proc = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if proc.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", proc.stdout))

    def wait(self, job_id: str, timeout: float = 300, states: set[str] | None = None,
             poll: float = 1.0) -> dict[str, str]:
        """Wait until the job reaches one of `states` (default: any terminal state)."""
        states = states or TERMINAL_STATES
        deadline = time.time() + timeout
        info: dict[str, str] = {}
        while time.time() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {info}")

    def cancel_all(self, timeout: float = 60) -> None:
        ids = self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
        if ids:
            self.run(["scancel", *ids], check=False)
        deadline = time.time() + timeout
        while time.time() < deadline and self.run(["squeue", "-h", "-o", "%i"], check=False).stdout.strip():
            time.sleep(0.5)

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text(errors="replace") if path.is_file() else ""

    # -- lifecycle ------------------------------------------------------------------------------
    def _write_config(self, slurmctld_port: int, slurmd_port: int) -> None:
        r = self.root
        head = self.nodes[0]
        mem = max(1024, min(_memory_mb() - 1024, 8192))
        lines = [
            "# written by tests/helpers/slurm_cluster.py",
            "ClusterName=dposcale",
            f"SlurmctldHost=localhost({head.addr})",
            f"SlurmctldPort={slurmctld_port}",
            f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
            f"AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",  # start requeued/eligible jobs promptly
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            "JobRequeue=1",
            "MinJobAge=3600",  # keep finished jobs visible to `scontrol show job` (no sacct here)
            "KillWait=5",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
            "SlurmctldTimeout=60",
        ]
        # gpus=0: a CPU-only cluster, configured as one is (no GresTypes, no Gres)
        lines += ["GresTypes=gpu"] if self.gpus else []
        gres = []
        for node in self.nodes:
            lines.append(f"NodeName={node.name} NodeAddr={node.addr} CPUs={self.cpus} RealMemory={mem} "
                         + (f"Gres=gpu:{self.gpus} " if self.gpus else "") + "State=UNKNOWN")
            devdir = r / "dev" / node.name
            devdir.mkdir(parents=True, exist_ok=True)
            for i in range(self.gpus):
                dev = devdir / f"gpu{i}"
                if not dev.exists():
                    os.mknod(dev, 0o666 | 0o020000, os.makedev(1, 3))  # a char device, like /dev/null
            if self.gpus:
                files = f"{devdir}/gpu[0-{self.gpus - 1}]" if self.gpus > 1 else f"{devdir}/gpu0"
                gres.append(f"NodeName={node.name} Name=gpu File={files}")
        lines.append(f"PartitionName=debug Nodes={','.join(n.name for n in self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")
        (self.conf.parent / "gres.conf").write_text("\n".join(gres) + "\n")

    def _setup_netns(self, prefix: str) -> None:
        """One namespace per node, joined to node1's by veth pairs (and a bridge beyond two nodes)."""
        def ip(*args: str) -> None:
            proc = subprocess.run(["ip", *args], capture_output=True, text=True)
            if proc.returncode != 0:
                raise Unavailable(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()} (network namespaces "
                                  "need root with CAP_NET_ADMIN)")

        if not shutil.which("ip"):
            raise Unavailable("no `ip` command (iproute2) for network namespaces")
        for i, node in enumerate(self.nodes, start=1):
            node.netns = f"{prefix}-n{i}"
            ip("netns", "add", node.netns)
            self.netns.append(node.netns)
            self._save()
            ip("-n", node.netns, "link", "set", "lo", "up")
        head, others = self.nodes[0], self.nodes[1:]
        # Every node's interface is called dpo0, so GLOO_SOCKET_IFNAME/NCCL_SOCKET_IFNAME=dpo0 fits all.
        if len(others) == 1:
            ip("-n", head.netns, "link", "add", "dpo0", "type", "veth", "peer", "name", "dpo0",
               "netns", others[0].netns)
        else:  # a bridge in the head namespace joins one veth pair per other node
            ip("-n", head.netns, "link", "add", "dpo0", "type", "bridge")
            for i, node in enumerate(others, start=2):
                ip("-n", head.netns, "link", "add", f"dpv{i}", "type", "veth", "peer", "name", "dpo0",
                   "netns", node.netns)
                ip("-n", head.netns, "link", "set", f"dpv{i}", "master", "dpo0")
                ip("-n", head.netns, "link", "set", f"dpv{i}", "up")
        for node in self.nodes:
            ip("-n", node.netns, "addr", "add", f"{node.addr}/24", "dev", "dpo0")
            ip("-n", node.netns, "link", "set", "dpo0", "up")

    def _save(self) -> None:
        (self.root / "pids.json").write_text(json.dumps({"pids": self.pids, "netns": self.netns}, indent=1))

    def _spawn(self, name: str, cmd: list[str], netns: str | None = None) -> None:
        if netns:
            # nsenter joins only the network namespace (`ip netns exec` would also remount /sys, hiding
            # /sys/fs/cgroup from slurmd) and execs the daemon: the PID is the daemon's
            cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
        out = open(self.root / "log" / f"{name}.stdout", "ab")
        proc = subprocess.Popen(cmd, env=self.env(), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True)
        out.close()
        self.pids[name] = proc.pid
        self._save()

    def start(self, timeout: float = 60) -> Cluster:
        r = self.root
        for sub in ("etc", "munge", "state", "spool", "run", "log", "dev"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)  # munged refuses group/world-writable folders on its paths
        for node in self.nodes:
            (r / "spool" / node.name).mkdir(exist_ok=True)
        if self.multi_node:
            self._setup_netns(prefix=f"dpo{os.getpid() % 100000}{secrets.token_hex(2)}")
        key = r / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        os.chmod(r / "munge", 0o700)
        self._spawn("munged", [_which_sbin("munged") or "munged", "--foreground", "--force",
                               f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/log/munged.log",
                               f"--seed-file={r}/munge/munged.seed"])
        self._wait_for(lambda: self.munge_socket.exists(), timeout, "munged socket")
        self._write_config(slurmctld_port=6817 if self.multi_node else _free_port(),
                           slurmd_port=6818 if self.multi_node else _free_port())
        head = self.nodes[0]
        self._spawn("slurmctld", [_which_sbin("slurmctld") or "slurmctld", "-D", "-i", "-f", str(self.conf)],
                    head.netns)
        for node in self.nodes:
            self._spawn(f"slurmd-{node.name}", [_which_sbin("slurmd") or "slurmd", "-D", "-N", node.name,
                                                "-f", str(self.conf)], node.netns)

        def nodes_idle() -> bool:
            self._check_alive()
            out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout.split()
            states = dict(zip(out[::2], out[1::2], strict=False))
            return len(states) == len(self.nodes) and all(s.rstrip("*") == "idle" for s in states.values())

        self._wait_for(nodes_idle, timeout, "all nodes idle (sinfo)")
        return self

    def _check_alive(self) -> None:
        for name, pid in self.pids.items():
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = 0, 0  # not our child (e.g. `down` from another process)
            if done:
                tail = self.log(f"{name}.stdout")[-1500:] + self.log(f"{name}.log")[-1500:]
                raise RuntimeError(f"{name} exited ({status}) while starting:\n{tail}")

    def _wait_for(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if ready():
                return
            time.sleep(0.3)
        logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in
                         sorted((self.root / "log").glob("*")))
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")

    def stop(self) -> None:
        try:
            if self.pids.get("slurmctld"):
                self.cancel_all(timeout=30)
        except Exception as e:  # noqa: BLE001 - stopping must go on
            print(f"slurm_cluster: cancelling jobs failed: {e}", file=sys.stderr)
        stop_pids(self.pids)
        self.pids = {name: pid for name, pid in self.pids.items() if _alive(pid)}
        for ns in list(reversed(self.netns)):
            if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
                self.netns.remove(ns)
        self._save()
        if self.pids:
            print(f"slurm_cluster: still running: {self.pids}", file=sys.stderr)


def stop_pids(pids: dict[str, int], timeout: float = 15) -> None:
    """SIGTERM the daemons we started (slurmd first, munged last), then SIGKILL what is left."""
    order = sorted(pids, key=lambda n: (n.startswith("munged"), n.startswith("slurmctld")))
    for name in order:
        pid = pids[name]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.time() + timeout
        while time.time() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _alive(pid)


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of another parent is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def start_cluster(root: str | Path, nodes: int = 1, cpus: int | None = None, gpus: int = 2,
                  timeout: float = 60) -> Cluster:
    """Install if needed, then start a cluster in `root`; on failure stop what was started."""
    if os.geteuid() != 0:
        raise Unavailable("a localhost Slurm cluster needs root (slurmd runs jobs as any user)")
    ensure_installed()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cpus = cpus or os.cpu_count() or 2
    if nodes == 1:
        node_list = [Node("localhost", "127.0.0.1")]
    else:
        node_list = [Node(f"node{i}", f"{SUBNET}.{i}") for i in range(1, nodes + 1)]
    cluster = Cluster(root, node_list, cpus, gpus, use_netns=nodes > 1)
    try:
        return cluster.start(timeout)
    except BaseException:
        cluster.stop()
        raise


def load(root: str | Path) -> Cluster:
    """The cluster whose files are in `root` (for `down`)."""
    root = Path(root).resolve()
    saved = json.loads((root / "pids.json").read_text())
    cluster = Cluster(root, [Node("localhost", "127.0.0.1")], 0, 0, use_netns=bool(saved.get("netns")),
                      pids=saved.get("pids", {}), netns=saved.get("netns", []))
    conf = (root / "etc" / "slurm.conf").read_text() if (root / "etc" / "slurm.conf").is_file() else ""
    addr = re.search(r"SlurmctldHost=\w+\(([\d.]+)\)", conf)
    if cluster.netns and addr:
        cluster.nodes = [Node("node1", addr.group(1), cluster.netns[0])]
    return cluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="install if needed and start a cluster whose files live in DIR")
    up.add_argument("dir")
    up.add_argument("--nodes", type=int, default=1, help="1: localhost; >1: one network namespace per node")
    up.add_argument("--gpus", type=int, default=2, help="fake GPUs per node (gres gpu)")
    up.add_argument("--cpus", type=int, default=None, help="CPUs per node (default: this machine's)")
    down = sub.add_parser("down", help="cancel jobs, stop the daemons started by `up DIR`, remove its namespaces")
    down.add_argument("dir")
    args = p.parse_args(argv)
    if args.cmd == "up":
        try:
            cluster = start_cluster(args.dir, args.nodes, args.cpus, args.gpus)
        except Unavailable as e:
            print(f"slurm_cluster: {e}", file=sys.stderr)
            return 2
        print(f"export SLURM_CONF={cluster.conf}")
        if cluster.multi_node:
            head = cluster.nodes[0].netns
            print(f"# clients must run in the head node's namespace: nsenter --net=/run/netns/{head} sinfo")
        return 0
    load(args.dir).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
