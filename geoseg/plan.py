"""What a run is about to do, said before it starts, and how it is going, for logs without a terminal.

The plan line names the scene's size, the tiles, blocks and workers, so a scene that declares 10^6 x 10^6 px
is visible as such before any work; a scene that declares no pixels fails at once.
"""

from __future__ import annotations

import time
from typing import Callable

from geoseg.errors import SceneError
from geoseg.tiling import Block, TileSpec
from geoseg.scene import SceneInfo

PROGRESS_EVERY_S = 30.0  # a progress line in logs this often (the terminal gets a live bar instead)


def check_declared(scene: SceneInfo) -> None:
    """A scene must declare at least one pixel on each axis (GDAL opens some files that declare none)."""
    if scene.width < 1 or scene.height < 1 or scene.count < 1:
        raise SceneError(f"{scene.path}: declares {scene.width}x{scene.height} px and {scene.count} band(s): no "
                         "pixels to segment; the file is empty or its header is damaged: re-export it")


def plan_line(scene: SceneInfo, spec: TileSpec, blocks: list[Block], workers: int, batch_size: int,
              device: str) -> str:
    """One line: scene px, tiles, blocks and workers."""
    tiles = sum(b.n_tiles for b in blocks)
    side = int(max(b.window.width for b in blocks)) if blocks else 0
    return (f"{scene.path}: {scene.width}x{scene.height} px ({scene.width * scene.height / 1e6:,.1f} Mpx); "
            f"{tiles:,} tiles of {spec.tile} px (halo {spec.halo}) in {len(blocks):,} blocks of up to {side} px; "
            f"{workers} worker(s), batch {batch_size}, device {device}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def progress_lines(label: str, echo: Callable[[str], None], every_s: float = PROGRESS_EVERY_S,
                   clock: Callable[[], float] = time.monotonic) -> Callable[[int, int], None]:
    """A ``progress(done_px, total_px)`` callback for logs: an estimate once the first blocks are in, then a line
    every ``every_s`` seconds, and one at the end."""
    start = clock()
    calls, last = 0, None  # type: int, float | None

    def update(done: int, total: int) -> None:
        nonlocal calls, last
        calls += 1
        now = clock()
        elapsed = now - start
        if total <= 0 or elapsed <= 0:
            return
        rate = done / elapsed
        eta = (total - done) / rate if rate else float("inf")
        if last is None and calls >= 2 and done < total:  # the first blocks give a rate
            echo(f"{label}: estimate {_duration(elapsed + eta)} for the scene at {rate / 1e6:.2f} Mpx/s "
                 f"(first {done / total:.1%} in {_duration(elapsed)})")
            last = now
        elif done >= total or (last is not None and now - last >= every_s):
            echo(f"{label}: {done / total:.0%} ({done / 1e6:,.1f} of {total / 1e6:,.1f} Mpx), {rate / 1e6:.2f} Mpx/s"
                 + (f", ETA {_duration(eta)}" if done < total else f", done in {_duration(elapsed)}"))
            last = now

    return update
