"""benches/run.py keeps its promises: a partial run (`--only`) keeps what earlier runs measured,
and the figures embedded in RESULTS.md come back exactly (the README table is built from them)."""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def _run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCHES / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


def _summary(key: str, value: float, note: str) -> dict[str, Any]:
    return {
        "section": key,
        "goals": [{"name": f"{key} figure", "value": value, "unit": "x", "goal": 3.0,
                   "met": value >= 3.0}],
        "rows": [{"name": f"{key} row", "value": value * 2, "unit": "MB/s"}],
        "notes": [note],
    }  # fmt: skip


def test_only_keeps_earlier_sections_and_their_figures(tmp_path: Path) -> None:
    run = _run_module()
    out = tmp_path / "RESULTS.md"
    info = {"cpu": "Test CPU, 2 logical CPUs", "os": "Linux", "load": "0.1 0.1 0.1"}
    first = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    sections = {s.key: s for s in run.SECTIONS}
    # "--" inside a note must survive the HTML comment it is stored in
    earlier = [
        run.Outcome(sections["decoder"], _summary("decoder", 31.0, "smlogger decode --summary"),
                    seconds=12.0, measured="2026-01-01 12:00 UTC"),
        run.Outcome(sections["daemon"], _summary("daemon", 2.0, "a --- b"), seconds=99.0,
                    measured="2026-01-01 12:00 UTC", quick=True),
    ]  # fmt: skip
    run.write_results(earlier, False, first, info, "0.2 0.2 0.2", out)
    back = run.earlier_outcomes(out)
    assert set(back) == {"decoder", "daemon"}
    for old in earlier:
        again = back[old.section.key]
        assert (again.summary, again.seconds, again.measured, again.quick) == (
            old.summary, old.seconds, old.measured, old.quick,
        )  # fmt: skip

    text = out.read_text()
    assert "| decoder figure | 31.0x | >= 3.0x | met |" in text
    assert "| daemon figure | 2.0x | >= 3.0x | **MISSED** |" in text
    # a missing or garbled marker is skipped, not fatal
    out.write_text(text + "\n<!-- bench-section {not json -->\n")
    assert set(run.earlier_outcomes(out)) == {"decoder", "daemon"}
    assert run.earlier_outcomes(tmp_path / "absent.md") == {}
