"""Benchmark scripts; each writes its figures to bench/results/ (README, Benchmarks)."""

from __future__ import annotations

from pathlib import Path


def publish(out: str, text: str) -> int:
    """Write a results file (making its directory) and show it; the scripts' exit status."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(text)
    return 0
