"""What shaping right-to-left text costs in the report table: 1,000 rows drawn with the
report's own ``ReportPDF.row``, Latin titles (the baseline, unshaped) against Arabic and
Hebrew ones (shaped by HarfBuzz), in the same run::

    .venv/bin/python -m bench.shaping     # figures in bench/REPORTS.md
"""

from __future__ import annotations

import time

from flyswatter.reports.pdf import TABLE_COLUMNS, ReportPDF

ROWS = 1_000
TITLES = {
    "latin": "Crash when saving a large file",
    "right-to-left": "خطأ عند حفظ ملف كبير · קריסה בשמירה",
}


def table_seconds(title: str, runs: int = 3) -> float:
    widths = [width for _, width in TABLE_COLUMNS]
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        pdf = ReportPDF("bench")
        pdf.add_page()
        for number in range(ROWS):
            pdf.row([f"FLY-{number}", title, "open", "high", "bug", "maintainer"], widths)
        pdf.output()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    figures = {name: table_seconds(title) for name, title in TITLES.items()}
    baseline = figures["latin"]
    for name, seconds in figures.items():
        print(f"{name:>14}: {seconds:.2f} s for {ROWS} rows ({seconds / baseline:.1f}x)")


if __name__ == "__main__":
    main()
