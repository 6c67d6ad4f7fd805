"""``fidan pipeline --nproc=N``: the training stages under torchrun, the rest in this process.

The pipeline keeps the run's lock and decides, as always, which stages are up to date; a
training stage that must run is launched as ``torchrun --nproc_per_node=N -m fidan <stage>``
on the same run (whose saved ``config.toml`` the ranks read) with the same command-line
overrides, and the ranks write under the pipeline's lock (``FIDAN_LOCK_HOLDER``). ``--nnodes``,
``--node-rank``, ``--rdzv-endpoint``, ``--rdzv-backend`` and ``--rdzv-id`` go to torchrun as
they are, for a job over several machines.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from fidan.config import Config
from fidan.errors import FidanError
from fidan.rundir import LOCK_HOLDER_ENV, RunDir
from fidan.stages import BY_NAME, TRAINING, stage_hash


@dataclass(frozen=True)
class Launch:
    nproc: int = 1                 # processes per node
    nnodes: str = "1"              # torchrun's --nnodes (a number or MIN:MAX)
    node_rank: int | None = None
    rdzv_endpoint: str = ""        # host:port of the rendezvous (multi-node)
    rdzv_backend: str = "c10d"
    rdzv_id: str = ""

    def __post_init__(self) -> None:
        if self.nproc < 1:
            raise FidanError(f"--nproc={self.nproc}: give at least 1 process per node")
        if self.nnodes != "1" and not self.rdzv_endpoint:
            raise FidanError(f"--nnodes={self.nnodes} needs --rdzv-endpoint=HOST:PORT (a node all of them reach)")

    @property
    def distributed(self) -> bool:
        return self.nproc > 1 or self.nnodes != "1"

    def command(self, stage: str, run: RunDir, overrides: tuple[str, ...]) -> list[str]:
        args = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}"]
        if self.nnodes == "1":
            args.append("--standalone")
        else:
            args += [f"--nnodes={self.nnodes}", f"--rdzv-backend={self.rdzv_backend}",
                     f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={self.rdzv_id or run.path.name}"]
            if self.node_rank is not None:
                args.append(f"--node-rank={self.node_rank}")
        return args + ["-m", "fidan", stage, f"--run.root={run.path.parent}", f"--run.name={run.path.name}",
                       *[f"--{o}" for o in overrides if not o.startswith(("run.root=", "run.name="))]]


def up_to_date(cfg: Config, run: RunDir, name: str) -> bool:
    spec = BY_NAME[name]
    done = run.path / spec.out_folder(cfg) / spec.done
    return run.stage_hash(spec.instance(cfg)) == stage_hash(cfg, name, run.path) and done.exists()


def wants_torchrun(launch: Launch | None, name: str) -> bool:
    return launch is not None and launch.distributed and name in TRAINING


def run_stage_torchrun(cfg: Config, run: RunDir, name: str, launch: Launch, overrides: tuple[str, ...]) -> None:
    """Run training stage ``name`` under torchrun unless it is up to date (the caller holds the lock)."""
    instance = BY_NAME[name].instance(cfg)
    if up_to_date(cfg, run, name):
        print(f"  {instance:<10} up to date, skipped")
        return
    command = launch.command(name, run, overrides)
    print(f"  {instance}: {' '.join(command[2:])}", flush=True)
    env = {**os.environ, LOCK_HOLDER_ENV: str(run.path.resolve())}
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        raise FidanError(f"{instance} under torchrun failed (exit {done.returncode}, its output is above); "
                         f"run the same command again to resume from its last checkpoint")
