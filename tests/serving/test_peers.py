"""The peers benchmark (bench/peers): its process-tree accounting, and that every peer server
answers the same probability as our service for the same image.

The parity test starts the real servers from their venvs (.tools/peers/<name>, `make
peer-venvs`) and talks to them over HTTP only: marked slow, run by `make test-peers`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: bench/
from bench.peers.__main__ import (
    OURS,
    PEERS_DIR,
    ask,
    descendants,
    main,
    parse_variant,
    specs,
    stop_tree,
    tree_cpu_seconds,
    variant_spec,
)
from bench.serving import Server, free_port, sample_png, start
from PIL import Image

# A parent that starts a child and exits on SIGTERM without ending it, as LitServe's does.
PARENT_LEAVING_A_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(60)
"""


def spawn_tree(child_code: str, tmp_path: Path) -> tuple[Server, int]:
    process = subprocess.Popen(
        [sys.executable, "-c", PARENT_LEAVING_A_CHILD, child_code], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    child = int(process.stdout.readline())
    process.stdout.close()
    return Server("tree", process, "", 0.0, 0.0, tmp_path / "log"), child


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_tree_ends_the_children_a_server_leaves_behind(tmp_path: Path) -> None:
    server, child = spawn_tree("import time; time.sleep(60)", tmp_path)
    try:
        assert descendants(server.process.pid) == [child]
        stop_tree(server)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the orphaned child still runs"
    finally:
        if alive(child):
            os.kill(child, 9)
        server.process.kill()
        server.process.wait()


def test_tree_cpu_counts_the_children(tmp_path: Path) -> None:
    # The child burns only after `go` exists, so `before` is read before any of its burning
    # (reading it after a fixed sleep raced the child on an idle machine).
    go = tmp_path / "go"
    burn = (
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "end = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    )
    server, child = spawn_tree(burn + "\ntime.sleep(60)", tmp_path)
    try:
        before = tree_cpu_seconds(server.process.pid)
        go.touch()
        deadline = time.monotonic() + 20
        while tree_cpu_seconds(server.process.pid) - before < 0.2:
            assert time.monotonic() < deadline, "the child's CPU never showed in the tree's"
            time.sleep(0.05)
        # The parent alone sleeps: its own CPU is far below what the tree counted.
        fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        assert (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") < 0.2
    finally:
        stop_tree(server)
    assert not alive(child)


def test_a_variant_is_our_service_with_its_settings_on_top(tmp_path: Path) -> None:
    label, env = parse_variant("one model thread=CLASSIFIER_INTERPRETER_THREADS=1")
    assert (label, env) == ("one model thread", {"CLASSIFIER_INTERPRETER_THREADS": "1"})
    _, env2 = parse_variant("b=CLASSIFIER_MAX_BATCH_SIZE=4,CLASSIFIER_INTERPRETER_THREADS=1")
    assert env2 == {"CLASSIFIER_MAX_BATCH_SIZE": "4", "CLASSIFIER_INTERPRETER_THREADS": "1"}
    ours = next(s for s in specs(b"png", tmp_path, 2, tmp_path) if s.key == OURS)
    variant = variant_spec(ours, label, env)
    assert variant.key.startswith(OURS)  # reported as ours, never as a peer
    argv, launched = variant.launch(8080, tmp_path)
    assert argv == ours.launch(8080, tmp_path)[0]
    assert launched["CLASSIFIER_INTERPRETER_THREADS"] == "1"
    assert launched["CLASSIFIER_PORT"] == "8080"  # the rest of our launch is kept


@pytest.mark.parametrize(
    "text",
    ["no-equals", "label=", "=CLASSIFIER_X=1", "label=PATH=/tmp", "label=CLASSIFIER_X=1,junk"],
)
def test_a_bad_variant_says_what_is_expected(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--no-report", "--variant", text])
    assert exit_.value.code == 2
    assert "expected LABEL=CLASSIFIER_X=value" in capsys.readouterr().err


def test_variants_never_write_the_run_of_record(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--variant", "t=CLASSIFIER_INTERPRETER_THREADS=1"])
    assert exit_.value.code == 2
    assert "add --no-report" in capsys.readouterr().err


@pytest.mark.slow
def test_every_peer_answers_our_probability(tiny_model_dir: Path, tmp_path: Path) -> None:
    peers = ("kserve", "litserve", "bentoml", "mlserver")
    missing = [n for n in peers if not (PEERS_DIR / n / ".synced").is_file()]
    if missing:
        pytest.fail(f"no peer venvs for {missing} in {PEERS_DIR}: run `make peer-venvs` first")
    cell = sample_png()
    # A second image of another size and mode, so the resize and grayscale steps are compared.
    other = tmp_path / "other.png"
    Image.open(io.BytesIO(cell)).convert("RGB").resize((211, 173)).save(other)
    images = {"elpv cell": cell, "rgb 211x173": other.read_bytes()}
    answers: dict[str, dict[str, float]] = {}
    for label, png in images.items():
        work = tmp_path / label.replace(" ", "-")
        work.mkdir()
        for spec in specs(png, tiny_model_dir, 1, work):
            if spec.key == "ours-json" and label != "elpv cell":
                continue
            port = free_port()
            argv, env = spec.launch(port, work)
            server = start(spec.key, argv, env, port, work, ready_path=spec.ready_path)
            try:
                answers.setdefault(label, {})[spec.key] = ask(spec, server.url)
            finally:
                stop_tree(server)
    for label, by_server in answers.items():
        ours = by_server.pop("ours")
        assert set(by_server) >= set(peers)
        for key, probability in by_server.items():
            assert probability == pytest.approx(ours, abs=1e-6), f"{key} on {label}"
