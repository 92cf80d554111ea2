"""The pipeline's stages as dvc.yaml declares them, for the tools that read their outputs.

dvc.yaml is the one place the artefact paths are written: each stage gets them on its command
line, and the tools around the pipeline (the gate, the summary, the benchmarks) look them up
here by stage and file name, e.g. `output("export", "model_card.json")`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from classifier.pipeline.common import PipelineError

DVC_FILE = Path("dvc.yaml")


@dataclass(frozen=True)
class Stage:
    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    plots: tuple[str, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        """Everything the stage writes: outs, metrics and plots."""
        return self.outs + self.metrics + self.plots


def _paths(entries: list[Any] | None) -> tuple[str, ...]:
    """The paths of a dvc.yaml list, whose entries are a path or {path: options}."""
    paths = []
    for entry in entries or []:
        paths.extend([entry] if isinstance(entry, str) else list(entry))
    return tuple(paths)


def load_stages(dvc_file: Path = DVC_FILE) -> dict[str, Stage]:
    try:
        raw = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PipelineError(f"{dvc_file} not found: run from the repository root") from exc
    stages = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages, dict):
        raise PipelineError(f"{dvc_file} has no `stages` mapping")
    return {
        name: Stage(
            name=name,
            cmd=str(spec["cmd"]),
            deps=_paths(spec.get("deps")),
            outs=_paths(spec.get("outs")),
            metrics=_paths(spec.get("metrics")),
            plots=_paths(spec.get("plots")),
        )
        for name, spec in stages.items()
    }


def output(stage: str, file_name: str, dvc_file: Path = DVC_FILE) -> Path:
    """The one output of `stage` (outs, metrics or plots) whose last path part is `file_name`."""
    stages = load_stages(dvc_file)
    if stage not in stages:
        raise PipelineError(f"{dvc_file} has no stage {stage!r} (it has {', '.join(stages)})")
    found = [p for p in stages[stage].outputs if Path(p).name == file_name]
    if len(found) != 1:
        raise PipelineError(
            f"{dvc_file}: stage {stage!r} should declare exactly one output named {file_name!r}, "
            f"found {found or 'none'} among {list(stages[stage].outputs)}"
        )
    return dvc_file.parent / found[0]
