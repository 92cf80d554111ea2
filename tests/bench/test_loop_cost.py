"""bench.loop_cost on the tiny model: both arms answer on both APIs, and the FastAPI arm really
bypasses the direct layer (its route table is emptied), so the comparison compares two paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
import uvloop

from bench import loop_cost


def test_one_round_measures_both_paths(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # FastAPI's route solves dependencies for every request it handles; the direct one never.
    solved = []
    solve = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        solved.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    results = uvloop.run(loop_cost.run(tiny_model_dir, rounds=1, per_caller=2))
    # the FastAPI arm's requests only: warm-up (10 each) and the round (2 each), 16 callers,
    # on each of the two APIs
    assert len(solved) == loop_cost.CALLERS * (10 + 2) * 2
    assert list(results) == [
        (api, app) for api in loop_cost.APIS for app in (loop_cost.SHIPPED, loop_cost.FASTAPI)
    ]
    for samples in results.values():
        ((cpu_us, rps),) = samples
        assert cpu_us > 0
        assert rps > 0
    markdown = loop_cost.report(results, 1, 2, "tiny")
    assert "| Open Inference Protocol (JSON) | as shipped (direct route) |" in markdown
    assert markdown.count("direct / FastAPI's route") == 2


@pytest.mark.parametrize("argv", [["--rounds", "0"], ["--requests", "0"]])
def test_refuses_empty_runs(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        loop_cost.main([*argv, "--no-report"])
    assert exc.value.code == 2
