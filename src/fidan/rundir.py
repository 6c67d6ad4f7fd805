"""The run directory: every stage reads its inputs from it and writes its outputs into it.

``runs/<name>/`` holds the resolved ``config.toml``, a ``fidan.json`` stamp with the layout
version, and one folder per stage. A stage that finishes writes ``stages/<stage>.json`` with the
hash of the config it ran with and its summary; the pipeline skips a stage whose stamp matches.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fidan import RUN_FORMAT, __version__, atomic
from fidan.config import Config, to_toml
from fidan.errors import FidanError


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def for_config(cls, cfg: Config, create: bool = True) -> "RunDir":
        run = cls(Path(cfg.run.root) / cfg.run.name)
        run.check_format()
        if create:
            run.path.mkdir(parents=True, exist_ok=True)
            if not (run.path / "fidan.json").exists():
                atomic.write_json(run.path / "fidan.json", {"format": RUN_FORMAT, "fidan": __version__})
            names = list(cfg.to_dict())
            header = (f"# resolved by fidan {__version__}; config hash {cfg.section_hash(*names)} "
                      f"(per-stage hashes in stages/*.json)\n")
            atomic.write_text(run.path / "config.toml", header + to_toml(cfg))
        return run

    def check_format(self) -> None:
        stamp = self.path / "fidan.json"
        if not stamp.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise FidanError(f"{self.path}: not a fidan run directory (no fidan.json); "
                                 f"choose another --run.name")
            return
        try:
            found = json.loads(stamp.read_text()).get("format")
        except (ValueError, OSError):
            raise FidanError(f"{stamp}: unreadable run stamp; choose another --run.name") from None
        if found != RUN_FORMAT:
            raise FidanError(f"{self.path}: written by run-directory format {found}, this fidan reads format "
                             f"{RUN_FORMAT}; start a new run with --run.name=<new name>")

    def stage(self, name: str) -> Path:
        path = self.path / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stamp(self, name: str) -> Path:
        return self.path / "stages" / f"{name}.json"

    def stage_hash(self, name: str) -> str | None:
        stamp = self.stamp(name)
        if not stamp.exists():
            return None
        try:
            return json.loads(stamp.read_text()).get("config_hash")
        except ValueError:
            return None

    def mark_done(self, name: str, config_hash: str, summary: dict[str, Any]) -> None:
        atomic.write_json(self.stamp(name), {
            "stage": name, "config_hash": config_hash, "fidan": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "summary": summary})

    def require(self, relative: str, produced_by: str) -> Path:
        path = self.path / relative
        if not path.exists():
            raise FidanError(f"{path} is missing; run `fidan {produced_by} --run.name={self.path.name}` first")
        return path
