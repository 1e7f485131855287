"""The online benchmark's table: one cell per header column, whichever agents are asked for."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import bench_online_peers as bench  # noqa: E402


def row(agent: str, ret: float, seed: int = 0) -> dict:
    return dict(agent=agent, task="t", seed=seed, mean_return=ret, train_s=100.0 if agent == bench.SB3 else 50.0)


@pytest.mark.parametrize("agents", [["lstm"], [bench.SB3, "gtrxl", "lstm"], ["gtrxl", bench.SB3]])
def test_every_table_row_has_as_many_cells_as_the_header(agents):
    a = SimpleNamespace(agents=agents, tasks=["t"], steps=1000, episodes=2)
    text, _ = bench.table([row(bench.SB3, 0.5), row("gtrxl", 0.7), row("gtrxl", 0.9, 1), row("lstm", 0.1)], a)
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len({ln.count("|") for ln in lines}) == 1, lines
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    if "gtrxl" in agents:
        assert cells[header.index("gtrxl")] == "0.800 ± 0.141 (n=2), 50 s"  # the sample std of 0.7, 0.9
    if bench.SB3 in agents and "gtrxl" in agents:
        assert cells[header.index("gtrxl: Δ, speed-up")] == "+0.300, 2.0x"
