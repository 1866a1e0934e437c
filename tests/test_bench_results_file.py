"""The benchmark's results file: each part run on its own owns one section of it, and a run
of ``python -m bench`` rewrites the rest without losing them."""

from __future__ import annotations

from pathlib import Path

from bench.bench import write_results
from bench.sections import kept_sections, write_section


def test_a_part_replaces_its_own_section_and_leaves_the_others(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nThe endpoints.\n")
    write_section("webhooks", ["## Webhooks", "", "first run"], results)
    write_section("sse", ["## Live stream", "", "its run"], results)
    write_section("webhooks", ["## Webhooks", "", "second run"], results)
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nThe endpoints.\n")
    assert "first run" not in text
    assert text.index("second run") < text.index("its run")
    assert text.count("<!-- part:webhooks -->") == 1


def test_the_main_run_keeps_the_parts_sections_when_it_rewrites_the_file(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nAn old endpoints table.\n")
    write_section("fleet", ["## The replica fleet", "", "3 replicas against 1"], results)
    report = {
        "date": "2026-12-01T00:00:00+00:00",
        "commit": "abc1234",
        "machine": "a machine",
        "load_average": {"start": [1.0, 1.0, 1.0]},
        "rounds": 1,
        "seconds": 1,
        "connections": 1,
        "parts": ["endpoints"],
        "sizes": {},
    }
    write_results(report, results)
    text = results.read_text()
    assert "An old endpoints table." not in text
    assert "python -m bench.fleet" in text  # the header names each part's command
    assert kept_sections(results) == [
        "<!-- part:fleet -->\n## The replica fleet\n\n3 replicas against 1\n<!-- /part:fleet -->\n"
    ]
