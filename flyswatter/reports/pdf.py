"""The report as a PDF (fpdf2): summary counts, a weekly chart, open work and the issue table.

Figures are written as plain text lines ("Total issues: 42") so that people, and the tests
reading the file back, find them in the text layer.
"""

from __future__ import annotations

import logging
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from flyswatter.reports.data import IssueLine, ReportData
from flyswatter.reports.fonts import regular_coverage, report_fonts

# fontTools' subsetter logs every table it prunes at INFO: a dozen lines a report.
logging.getLogger("fontTools").setLevel(logging.WARNING)

FONT = "DejaVu"
MARGIN = 12
LINE = 5.5
BAR_OPENED = (52, 101, 164)
BAR_CLOSED = (115, 185, 90)
GRID = (200, 200, 200)
# Unicode bidirectional classes of right-to-left letters and Arabic digits.
RIGHT_TO_LEFT = frozenset({"R", "AL", "AN"})
TABLE_COLUMNS: tuple[tuple[str, float], ...] = (
    ("Key", 24),
    ("Title", 82),
    ("Status", 22),
    ("Priority", 18),
    ("Type", 14),
    ("Assignee", 26),
)


def _date(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def needs_shaping(text: str) -> bool:
    """Right-to-left text (Hebrew, Arabic and their numbers) is there to be shaped."""
    return not text.isascii() and any(
        unicodedata.bidirectional(char) in RIGHT_TO_LEFT for char in text
    )


class ReportPDF(FPDF):
    def __init__(self, title: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.report_title = title
        fonts = report_fonts()
        self.add_font(FONT, "", fonts.regular)
        self.add_font(FONT, "B", fonts.bold)
        self.coverage = regular_coverage()
        self.has_fallbacks = False
        self.shaping = False
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(auto=True, margin=MARGIN + 4)
        self.set_title(title)
        self.set_creator("Flyswatter")

    def covered(self, text: str) -> str:
        """``text``, with the fallback fonts loaded first when DejaVu lacks some of it.

        Loaded on first need: the CJK and Last Resort fonts take seconds to load, and most
        reports never need them.
        """
        if not self.has_fallbacks and not self.coverage.issuperset(map(ord, text)):
            fonts = report_fonts()
            names = []
            for index, path in enumerate((*fonts.fallbacks, fonts.last_resort)):
                if path.is_file():
                    self.add_font(f"fallback{index}", "", path)
                    names.append(f"fallback{index}")
            # A bold heading falls back to a regular face rather than to nothing.
            self.set_fallback_fonts(names, exact_match=False)
            self.has_fallbacks = True
        shaped = needs_shaping(text)
        if shaped != self.shaping:
            # Arabic letters join and right-to-left runs are drawn in visual order only when
            # HarfBuzz shapes them. It costs ~3 ms a cell (bench/REPORTS.md), so it is on for
            # the cells that need it only, not for the whole document.
            self.set_text_shaping(use_shaping_engine=shaped)
            self.shaping = shaped
        return text

    def footer(self) -> None:
        self.set_y(-MARGIN)
        self.set_font(FONT, "", 8)
        self.set_text_color(110, 110, 110)
        self.cell(0, 5, f"{self.report_title} · page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, size: int = 13) -> None:
        self.ln(2)
        self.set_font(FONT, "B", size)
        self.cell(0, LINE + 2, self.covered(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 9)

    def line_of_text(self, text: str) -> None:
        self.multi_cell(0, LINE, self.covered(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def fitted(self, text: str, width: float) -> str:
        """``text`` cut (with an ellipsis) to fit a cell ``width`` wide."""
        self.covered(text)
        room = width - 2 * self.c_margin
        if self.get_string_width(text) <= room:
            return text
        while text and self.get_string_width(text + "…") > room:
            text = text[: max(0, len(text) - max(1, len(text) // 8))]
        return text + "…"

    def row(self, cells: Sequence[str], widths: Sequence[float], *, bold: bool = False) -> None:
        self.set_font(FONT, "B" if bold else "", 8)
        for text, width in zip(cells, widths, strict=True):
            self.cell(width, LINE, self.fitted(text, width), border="B")
        self.ln(LINE)


def _counts(pdf: ReportPDF, label: str, counts: dict[str, int], order: Iterable[str]) -> None:
    pdf.heading(label, 11)
    names = list(order) + sorted(set(counts) - set(order))
    pdf.line_of_text("   ".join(f"{name}: {counts.get(name, 0)}" for name in names))


def _chart(pdf: ReportPDF, data: ReportData) -> None:
    pdf.heading("Opened and closed per week", 11)
    weeks = len(data.opened_per_week)
    height, width = 45.0, pdf.epw
    top, left = pdf.get_y() + 2, pdf.l_margin + 10
    peak = max([*data.opened_per_week, *data.closed_per_week, 1])
    pdf.set_draw_color(*GRID)
    pdf.line(left, top + height, left + width - 10, top + height)
    pdf.set_font(FONT, "", 7)
    pdf.text(pdf.l_margin, top + 3, str(peak))
    pdf.text(pdf.l_margin, top + height, "0")
    slot = (width - 12) / weeks
    bar = max(0.4, slot * 0.38)
    for week, (opened, closed) in enumerate(
        zip(data.opened_per_week, data.closed_per_week, strict=True)
    ):
        x = left + week * slot + slot * 0.1
        for offset, value, colour in ((0.0, opened, BAR_OPENED), (bar, closed, BAR_CLOSED)):
            if value:
                bar_height = height * value / peak
                pdf.set_fill_color(*colour)
                pdf.rect(x + offset, top + height - bar_height, bar, bar_height, style="F")
        if weeks <= 26 or week % max(1, weeks // 13) == 0:
            pdf.text(x, top + height + 4, f"W{week + 1}")
    pdf.set_y(top + height + 7)
    pdf.set_font(FONT, "", 8)
    pdf.set_fill_color(*BAR_OPENED)
    pdf.rect(pdf.l_margin, pdf.get_y() + 1.2, 3, 3, style="F")
    pdf.set_x(pdf.l_margin + 4)
    pdf.cell(30, LINE, f"opened ({sum(data.opened_per_week)})")
    pdf.set_fill_color(*BAR_CLOSED)
    pdf.rect(pdf.get_x(), pdf.get_y() + 1.2, 3, 3, style="F")
    pdf.set_x(pdf.get_x() + 4)
    pdf.cell(30, LINE, f"closed ({sum(data.closed_per_week)})", new_x=XPos.LMARGIN)
    pdf.ln(LINE + 1)
    pdf.set_font(FONT, "", 9)
    pdf.line_of_text(
        "Week by week (opened/closed): "
        + ", ".join(
            f"W{i + 1} {o}/{c}"
            for i, (o, c) in enumerate(zip(data.opened_per_week, data.closed_per_week, strict=True))
        )
    )


def _issue_cells(line: IssueLine) -> list[str]:
    return [
        line.key,
        line.title,
        line.status,
        line.priority,
        line.type,
        line.assignee or "—",
    ]


def render_report(data: ReportData, table: Iterator[IssueLine]) -> bytes:
    """The PDF file's bytes."""
    with warnings.catch_warnings():
        # A glyph no font has is drawn as the Last Resort box; that needs no warning per row.
        warnings.simplefilter("ignore", UserWarning)
        return _render(data, table)


def _render(data: ReportData, table: Iterator[IssueLine]) -> bytes:
    title = f"{data.project_key} report"
    pdf = ReportPDF(title)
    pdf.add_page()
    pdf.set_font(FONT, "B", 18)
    pdf.multi_cell(
        0,
        9,
        pdf.covered(f"{data.project_key} · {data.project_name}"),
        align="L",
        new_x=XPos.LMARGIN,
    )
    pdf.set_font(FONT, "", 9)
    pdf.line_of_text(f"Period: {_date(data.period.start)} to {_date(data.period.end)}")
    filters = ", ".join(f"{name}={value}" for name, value in data.filters.items()) or "none"
    pdf.line_of_text(f"Filters: {filters}")
    pdf.line_of_text(f"Generated: {_date(data.generated_at)}")
    pdf.heading(f"Total issues: {data.total}")
    pdf.line_of_text("Issues reported in the period and matching the filters.")
    _counts(pdf, "By status", data.by_status, ["open", "in_progress", "resolved", "closed"])
    _counts(pdf, "By priority", data.by_priority, ["critical", "high", "medium", "low"])
    _counts(pdf, "By type", data.by_type, ["bug", "feature", "task"])
    _chart(pdf, data)

    pdf.heading("Oldest open issues", 11)
    widths = [width for _, width in TABLE_COLUMNS]
    if data.oldest_open:
        pdf.row([*[name for name, _ in TABLE_COLUMNS[:-1]], "Opened"], widths, bold=True)
        for line in data.oldest_open:
            pdf.row([*_issue_cells(line)[:-1], line.created_at.strftime("%Y-%m-%d")], widths)
    else:
        pdf.line_of_text("No open issues.")

    pdf.heading("Open issues per assignee", 11)
    if data.assignee_load:
        load_widths = [70.0, 30.0, 30.0, 30.0]
        pdf.row(["Assignee", "Open", "In progress", "Total"], load_widths, bold=True)
        for name, waiting, working in data.assignee_load:
            pdf.row(
                [name or "(unassigned)", str(waiting), str(working), str(waiting + working)],
                load_widths,
            )
    else:
        pdf.line_of_text("No open issues.")

    pdf.add_page()
    shown = min(data.total, data.table_limit)
    pdf.heading(f"Issues: showing {shown} of {data.total}")
    if data.total > shown:
        pdf.line_of_text(f"The newest {shown}; narrow the period or the filters to see the others.")
    pdf.row([name for name, _ in TABLE_COLUMNS], widths, bold=True)
    for line in table:
        pdf.row(_issue_cells(line), widths)
    return bytes(pdf.output())
