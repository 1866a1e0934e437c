"""The report's fonts: TrueType files installed with a package, so any machine has them.

DejaVu Sans comes with matplotlib (a dependency for exactly this): Latin, Greek, Cyrillic,
Armenian, Georgian, Hebrew, Arabic and most symbols. Chinese, Japanese and Korean are
covered by Debian's Droid Sans Fallback (``fonts-droid-fallback``) or Noto Sans CJK when
installed; whatever no font has is drawn as matplotlib's Last Resort glyph, never dropped.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Debian's font packages, in the order they are preferred.
SYSTEM_FALLBACKS = (
    Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf"),
    Path("/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttf"),
)


class FontsMissing(RuntimeError):
    """The package that ships the report fonts is not installed."""


@dataclass(frozen=True, slots=True)
class FontSet:
    regular: Path
    bold: Path
    last_resort: Path
    fallbacks: tuple[Path, ...]


@cache
def regular_coverage() -> frozenset[int]:
    """Code points DejaVu Sans has glyphs for: other text needs the fallback fonts."""
    from fontTools.ttLib import TTFont

    with TTFont(report_fonts().regular, lazy=True) as font:
        return frozenset(font.getBestCmap())


@cache
def report_fonts() -> FontSet:
    # Located without importing matplotlib (whose import costs a second and loads numpy).
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise FontsMissing("matplotlib (which ships the DejaVu fonts) is not installed")
    ttf = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
    fonts = FontSet(
        regular=ttf / "DejaVuSans.ttf",
        bold=ttf / "DejaVuSans-Bold.ttf",
        last_resort=ttf / "LastResortHE-Regular.ttf",
        fallbacks=tuple(path for path in SYSTEM_FALLBACKS if path.is_file()),
    )
    for path in (fonts.regular, fonts.bold):
        if not path.is_file():
            raise FontsMissing(f"{path.name} is missing from matplotlib's data")
    return fonts
