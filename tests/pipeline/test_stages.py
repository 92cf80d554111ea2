"""dvc.yaml is the one place the artefact paths are written: each stage gets every path it reads
or writes on its command line, and the tools around the pipeline look them up by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier.pipeline.common import PipelineError
from classifier.pipeline.stages import load_stages, output

REPO = Path(__file__).resolve().parents[2]
DVC_FILE = REPO / "dvc.yaml"
STAGES = load_stages(DVC_FILE)


def path_arguments(cmd: str) -> list[str]:
    """The arguments after `python -m MODULE` that are not options."""
    words = cmd.split()
    assert words[:2] == ["python", "-m"], cmd
    return [w for w in words[3:] if not w.startswith("-")]


def under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_path_a_stage_reads_or_writes_is_on_its_command_line(stage: str) -> None:
    spec = STAGES[stage]
    arguments = path_arguments(spec.cmd)
    ours = [d for d in spec.deps if not d.startswith("src/")]  # the data, not the code
    for path in [*ours, *spec.outputs]:
        assert any(under(path, a) for a in arguments), (
            f"stage {stage}: {path} is declared in dvc.yaml but not given on its command line "
            f"{spec.cmd!r}: the code would be choosing the path itself"
        )
    for argument in arguments:
        assert any(under(path, argument) for path in [*ours, *spec.outputs]), (
            f"stage {stage}: {argument} is on the command line but neither a dep nor an output"
        )


def test_tools_find_the_outputs_by_stage_and_name() -> None:
    assert output("export", "model_card.json", DVC_FILE) == REPO / "models/model_card.json"
    assert output("train", "model.keras", DVC_FILE) == REPO / "models/model.keras"
    assert output("evaluate", "metrics.json", DVC_FILE) == REPO / "metrics/metrics.json"
    assert output("prepare", "prepared", DVC_FILE) == REPO / "data/prepared"


@pytest.mark.parametrize(
    ("stage", "name", "message"),
    [
        ("deploy", "model.keras", "has no stage 'deploy'"),
        ("train", "model.tflite", "exactly one output named 'model.tflite', found none"),
    ],
)
def test_a_lookup_that_dvc_yaml_cannot_answer_says_what_it_has(
    stage: str, name: str, message: str
) -> None:
    with pytest.raises(PipelineError, match=message):
        output(stage, name, DVC_FILE)


def test_a_missing_dvc_yaml_says_where_to_run_from(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="run from the repository root"):
        load_stages(tmp_path / "dvc.yaml")
