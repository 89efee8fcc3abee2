"""`hyt demo --once`: the newcomer's first minute runs end to end, or CI fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_once_runs_every_step(tmp_path: Path) -> None:
    env = {**os.environ, "HYT_ENV": "development", "HYT_SECRET_KEY": "", "COLUMNS": "200"}
    env.pop("HYT_SECRET_KEY")  # the demo runs on the development default, as a newcomer's does
    env.pop("HYT_DATABASE_URL", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "callcenter",
            "demo",
            "--once",
            "--database",
            str(tmp_path / "demo.db"),
            "--elders",
            "300",
            "--screenshots",
            str(tmp_path / "shots"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=Path(__file__).parents[1],
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "every step happened" in output
    for step in (
        "SOS press",
        "service press",
        "Contact ID 101",
        "SCAIP heartbeat",
        "repeat press",
        "cancel press",
        "declines",
        "stood down",
        "case closed",
        "visit plan",
        "a visit recorded",
    ):
        assert step in output, step
    assert "✗" not in output
    # The console photographed while the demo's centre runs: real PNGs of a logged-in page.
    for name in ("demo-console-queue.png", "demo-console-screen-pop.png"):
        png = (tmp_path / "shots" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 10_000, name
