"""docker/services.sh starts dockerd and the registry with `detached`: the daemon must be the
process whose pid the script records (or `down` cannot stop it), and must not keep a descriptor
its starter held (a `flock` lock would stay taken for as long as the daemon runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "docker" / "services.sh"


def test_a_detached_daemon_is_the_recorded_pid_and_holds_none_of_its_starters_files(
    tmp_path: Path,
) -> None:
    held = tmp_path / "lock"
    # Only the function, not the script's commands; the starter holds `held` open as fd 7.
    script = f"""
        eval "$(sed -n '/^detached() {{/,/^}}/p' {SERVICES})"
        exec 7>{held}
        detached sleep 30 >/dev/null 2>&1 </dev/null &
        echo $!
    """
    pid = int(
        subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    )
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the recorded pid never became the daemon"
            time.sleep(0.05)
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert str(held) not in targets
        assert os.getsid(pid) == pid  # its own session: no terminal signals from the starter's
    finally:
        os.kill(pid, signal.SIGTERM)
