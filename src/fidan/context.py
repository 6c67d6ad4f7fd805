"""The stage contract: what a stage declares, and the one object the pipeline hands it.

A stage is a module with ``run(ctx) -> dict`` (its summary) and, optionally, ``check(cfg)``
(validation before any stage runs). Its :class:`StageSpec` in ``fidan/stages.py`` declares, in
one place:

* ``reads``: the settings it may read, as whole sections (``"sft"``) or single settings of
  other sections (``"rlhf.eval_prompts"``); ``run`` (seed, device, threads) is always readable;
* ``after``: the stages whose outputs it reads, and ``inputs``: those outputs by name, as paths
  in the run directory that may name settings (``"{sft.out}/model.safetensors"``);
* ``files``: the files from outside the stage chain whose *content* it reads (data sources,
  ``preferences.jsonl``, ``--sft.data``);
* ``out`` and ``done``: its output folder and the file it writes last before its stamp.

That declaration is the only source of the stage's hash (:func:`stage_hash`): the declared
settings that can change its output (``settings.matters``), the input paths, content digests of
the files, and the upstream stages' hashes. And it is enforced: ``ctx.cfg`` is a view of the
config that refuses any setting the stage did not declare, so a stage cannot depend on a
setting its hash does not cover.

The :class:`StageContext` carries the declared settings, the resolved device and precision,
the distributed rank and world size (read from torchrun's environment), the resolved input
paths and the output folder. Stage modules never import the stage table.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fidan import dist
from fidan.atomic import file_sha256
from fidan.errors import FidanError
from fidan.settings import hashed_values

if TYPE_CHECKING:
    import torch

    from fidan.config import Config
    from fidan.rundir import RunDir

ALWAYS_READ = ("run",)


class UndeclaredSetting(AttributeError):
    """A stage read a setting its StageSpec does not declare: a bug in fidan, not the user's input."""


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str                                      # has run(ctx) -> summary dict, maybe check(cfg)
    help: str
    reads: tuple[str, ...] = ()                      # "section" or "section.key"
    after: tuple[str, ...] = ()                      # upstream stages
    inputs: tuple[tuple[str, str, str], ...] = ()    # (name, stage that writes it, path in the run;
                                                     # the path may name settings: {section.key})
    files: Callable[[Any, Path], list[Path]] | None = None  # external files whose content the stage reads
    out: str = ""                                    # output folder ("" = the run directory itself)
    done: str = ""                                   # written last-but-one, relative to ``out``
    resume: tuple[str, ...] = ("ckpt", "metrics.jsonl")  # resumable state in ``out`` (fidan/staging.py)

    def allowed(self) -> dict[str, frozenset[str] | None]:
        """Section -> the declared keys (None = the whole section)."""
        out: dict[str, set[str] | None] = {s: None for s in ALWAYS_READ}
        for item in self.reads:
            section, _, key = item.partition(".")
            if not key:
                out[section] = None
            elif section not in out or out[section] is not None:
                out.setdefault(section, set()).add(key)
        return {s: (frozenset(k) if k is not None else None) for s, k in out.items()}

    def out_folder(self, cfg: Any) -> str:
        return resolve(self.out, cfg)

    def instance(self, cfg: Any) -> str:
        """The name of this run of the stage: its stamp is ``stages/<instance>.json``. A stage
        written to another output folder (``--rlhf.out=rlhf-dpo``) is another instance."""
        if "{" not in self.out:
            return self.name
        folder = self.out_folder(cfg)
        return self.name if folder == self.name else folder.replace("/", "-")

    def input_paths(self, cfg: Any) -> dict[str, str]:
        return {name: resolve(path, cfg) for name, _, path in self.inputs}

    def producer(self, name: str) -> str:
        return next(stage for n, stage, _ in self.inputs if n == name)


_FIELD = re.compile(r"\{(\w+)\.(\w+)\}")


def resolve(template: str, cfg: Any) -> str:
    """``"{sft.out}/model.safetensors"`` -> ``"sft/model.safetensors"`` for this config."""
    return _FIELD.sub(lambda m: str(getattr(getattr(cfg, m.group(1)), m.group(2))), template)


# ---------------------------------------------------------------------------------------------
# The config as one stage may see it

class SectionView:
    """One section of the config, reading only the declared keys (``keys`` None = all)."""

    def __init__(self, section: Any, name: str, keys: frozenset[str] | None, stage: str):
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, key: str) -> Any:
        keys = object.__getattribute__(self, "_keys")
        section = object.__getattribute__(self, "_section")
        name = object.__getattribute__(self, "_name")
        if keys is not None and key not in keys and not key.startswith("__"):
            raise UndeclaredSetting(f"stage '{object.__getattribute__(self, '_stage')}' read '{name}.{key}', "
                                    f"which its StageSpec in fidan/stages.py does not declare")
        return getattr(section, key)

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("a stage's settings are read-only; pass changed values explicitly")

    def __repr__(self) -> str:
        return f"<settings [{object.__getattribute__(self, '_name')}] as seen by a stage>"


class ConfigView:
    """The config as one stage sees it: its declared sections and settings, nothing else."""

    def __init__(self, cfg: Config, allowed: dict[str, frozenset[str] | None], stage: str):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_stage", stage)

    def __getattr__(self, section: str) -> Any:
        allowed = object.__getattribute__(self, "_allowed")
        cfg = object.__getattribute__(self, "_cfg")
        stage = object.__getattribute__(self, "_stage")
        if section.startswith("__"):
            raise AttributeError(section)
        if section not in allowed:
            raise UndeclaredSetting(f"stage '{stage}' read the [{section}] settings, which its StageSpec "
                                    f"in fidan/stages.py does not declare")
        return SectionView(getattr(cfg, section), section, allowed[section], stage)

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("a stage's settings are read-only; pass changed values explicitly")

    def section(self, name: str) -> Any:
        """A private copy of a whole declared section, as its dataclass (for ``replace`` and
        friends)."""
        if object.__getattribute__(self, "_allowed").get(name, ()) is not None:
            raise UndeclaredSetting(f"stage '{object.__getattribute__(self, '_stage')}' asked for all of "
                                    f"[{name}], which it does not declare whole")
        return dataclasses.replace(getattr(object.__getattribute__(self, "_cfg"), name))


# ---------------------------------------------------------------------------------------------
# Hashes

_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (a folder: of its files' names and contents), cached for as
    long as its size and modification time stay the same."""
    path = Path(path)
    if not path.exists():
        return "missing"
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{child.relative_to(path)}\0{file_digest(child)}\0".encode())
        return h.hexdigest()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def declared_values(cfg: Config, spec: StageSpec) -> dict[str, Any]:
    """The declared settings that can change the stage's output, as ``section -> {key: value}``."""
    out: dict[str, Any] = {}
    for section, keys in spec.allowed().items():
        values = hashed_values(getattr(cfg, section))
        out[section] = values if keys is None else {k: v for k, v in values.items() if k in keys}
    return out


def stage_hash(cfg: Config, spec: StageSpec, table: dict[str, StageSpec], run_path: Path | None = None) -> str:
    """The hash that says whether a stage's outputs are still valid (see the module docstring)."""
    import json

    h = hashlib.sha256(spec.name.encode())
    h.update(json.dumps(declared_values(cfg, spec), sort_keys=True, separators=(",", ":")).encode())
    h.update(json.dumps(spec.input_paths(cfg), sort_keys=True).encode())
    if spec.files is not None:
        for path in spec.files(cfg, run_path or Path(cfg.run.root) / cfg.run.name):
            h.update(f"{path}\0{file_digest(path)}".encode())
    for upstream in spec.after:  # upstream hashes already cover their own upstream
        h.update(_upstream_hash(cfg, table[upstream], table, run_path).encode())
    return h.hexdigest()[:16]


def _upstream_hash(cfg: Config, spec: StageSpec, table: dict[str, StageSpec], run_path: Path | None) -> str:
    """What an upstream stage's outputs were made from: the hash in its stamp when it has run
    (a one-off `fidan sft --sft.lr=...` made them from other settings than config.toml's),
    else the hash this config would give it."""
    import json

    if run_path is not None:
        stamp = Path(run_path) / "stages" / f"{spec.instance(cfg)}.json"
        try:
            return json.loads(stamp.read_text())["config_hash"]
        except (OSError, ValueError, KeyError):
            pass
    return stage_hash(cfg, spec, table, run_path)


def paths_in(value: str, named: bool = False) -> list[Path]:
    """The local paths in a comma-separated setting; ``named``: items look like ``name=path``.
    ``hf:`` dataset names and ``embedded`` are not files and are hashed as the setting's text."""
    out = []
    for part in (p.strip() for p in value.split(",")):
        if named and "=" in part:
            part = part.split("=", 1)[1].strip()
        if part and part != "embedded" and not part.startswith("hf:"):
            out.append(Path(part))
    return out


# ---------------------------------------------------------------------------------------------
# The context

def pick_device(name: str) -> torch.device:
    """``auto``: CUDA, then MPS, then the CPU; otherwise the named device."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


@dataclass
class StageContext:
    spec: StageSpec
    cfg: ConfigView
    run: RunDir
    hash: str
    quiet: bool = False
    overrides: tuple[str, ...] = ()
    inputs: dict[str, str] = field(default_factory=dict)
    staging: Path | None = None                      # where ``out`` points while the stage runs
    rank: int = field(default_factory=lambda: int(os.environ.get("RANK", 0)))
    world_size: int = field(default_factory=lambda: int(os.environ.get("WORLD_SIZE", 1)))
    local_rank: int = field(default_factory=lambda: int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def name(self) -> str:
        return self.spec.name

    @functools.cached_property
    def out(self) -> Path:
        """Where the stage writes: its staging folder when the pipeline runs it (the outputs move
        to :attr:`final_out` when it succeeds; see ``fidan/staging.py``), else its output folder."""
        if self.staging is not None:
            self.staging.mkdir(parents=True, exist_ok=True)
            return self.staging
        return self.final_out

    @functools.cached_property
    def final_out(self) -> Path:
        """The stage's output folder, which later stages read (created on first use)."""
        folder = self.spec.out_folder(self.cfg)
        return self.run.stage(folder) if folder else self.run.path

    @functools.cached_property
    def device(self) -> torch.device:
        """The one device every model of this stage lives on (``run.device``; ``auto`` picks CUDA,
        then MPS, then the CPU). Asking for it also sets the CPU thread count (``run.threads``)."""
        import torch

        torch.set_num_threads(self.cfg.run.threads or os.cpu_count() or 1)
        device = pick_device(self.cfg.run.device)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", self.local_rank)
        dist.init(device.type)  # under torchrun: the process group (NCCL on CUDA, else gloo)
        return device

    @property
    def precision(self) -> str:
        """bf16 autocast on CUDA, fp32 elsewhere."""
        return "bf16" if self.device.type == "cuda" else "fp32"

    def autocast(self):
        import torch
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext()

    def input(self, name: str) -> Path:
        """The path of a declared input; a missing one names the stage that makes it."""
        if name not in self.inputs:
            raise UndeclaredSetting(f"stage '{self.name}' asked for input '{name}', which its StageSpec "
                                    f"does not declare (declared: {', '.join(self.inputs) or 'none'})")
        path = self.run.path / self.inputs[name]
        if not path.exists():
            raise FidanError(f"{path} is missing; run `fidan {self.spec.producer(name)} "
                             f"--run.name={self.run.path.name}` first")
        return path

    def tokenizer_of(self, model: str) -> Path:
        """The tokenizer of the model input ``model``: the model's own (``tokenizer.json`` in its
        folder: a model imported from Hugging Face, and every model trained from one), else the
        run's ``tokenizer`` input. The chat template comes with it (``tokenizer_config.json``)."""
        own = self.input(model).parent / "tokenizer.json"
        return own if own.exists() else self.input("tokenizer")

    def has_input(self, name: str) -> bool:
        return name in self.inputs and (self.run.path / self.inputs[name]).exists()

    def say(self, *parts: Any) -> None:
        if not self.quiet and self.rank == 0:
            print(*parts, flush=True)

