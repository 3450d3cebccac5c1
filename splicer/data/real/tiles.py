"""Lazy tile-by-tile reading of (pyramidal) OME-TIFF whole-slide images and label masks.

:class:`LazyImage` reads only the level-0 tiles (or strips) a crop intersects -- ``seek``/``read`` of the tile's
bytes and ``page.decode`` -- through a byte-bounded LRU cache of decoded tiles, never a whole page, so a slide of
any size costs the cache plus one crop. Opening checks the structure (one page per channel, one tile grid, pixel
types) and that no page's data run past the end of the file (a truncated copy fails before any work).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from splicer.data.real.common import BuildError

__all__ = ["LazyImage"]

_GENERIC_CHANNEL = re.compile(r"(?i)^(channel[\s:_-]*[\d:]*|c\d+|\d+)?$")


class LazyImage:
    """Level-0 channel pages of a (pyramidal) OME-TIFF, read tile by tile (never a whole page) through an LRU cache.

    All channel pages share one tile (or strip) grid; a cache entry is one tile position decoded for the selected
    channels, ``(len(order), tile_h, tile_w)``. ``order`` lists the page of each output channel. Opening checks
    the structure and that no page's data run past the end of the file (a truncated copy)."""

    def __init__(self, path: Path, cache_bytes: int, label: bool = False) -> None:
        import tifffile

        self.path, self.label = Path(path), label
        try:
            self.tif = tifffile.TiffFile(self.path)
        except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ... on bad files
            raise BuildError(self.path, f"cannot be read as a TIFF ({type(err).__name__}: {err})") from err
        try:
            self._open()
        except BuildError:
            self.tif.close()
            raise
        except Exception as err:
            self.tif.close()
            raise BuildError(
                self.path, f"cannot be read as a TIFF: bad structure ({type(err).__name__}: {err})"
            ) from err
        self.order = list(range(self.channels))
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_bytes, self.cached_bytes = int(cache_bytes), 0
        self.tiles_decoded = 0

    def _open(self) -> None:
        series = self.tif.series[0]
        shape, axes = tuple(series.shape), series.axes
        if len(shape) == 2 and axes == "YX":
            shape = (1, *shape)
        elif len(shape) != 3 or axes[-2:] != "YX" or axes[0] not in "CIQZT":
            raise BuildError(
                self.path,
                f"unsupported layout: first series has shape {shape} axes {axes!r}; expected (channels, Y, X)",
            )
        self.channels, self.height, self.width = (int(v) for v in shape)
        pages = list(series.pages)
        if len(pages) != self.channels or any(p is None for p in pages):
            raise BuildError(
                self.path,
                f"unsupported layout: {len(pages)} level-0 pages for {self.channels} channels (expected one page "
                "per channel)",
            )
        self.pages = pages
        size = self.tif.filehandle.size
        grids = set()
        for i, page in enumerate(pages):
            key = page.keyframe
            if key.samplesperpixel != 1 or key.imagedepth != 1 or tuple(key.shape[-2:]) != (self.height, self.width):
                raise BuildError(
                    self.path,
                    f"unsupported layout: page {i} has shape {key.shape}, "
                    f"{key.samplesperpixel} samples per pixel, depth {key.imagedepth}",
                )
            dtype = key.dtype
            ok = dtype is not None and (
                dtype.kind in "ui" and dtype.itemsize <= 4 if self.label else dtype.kind == "u" and dtype.itemsize <= 2
            )
            if not ok:
                want = "an integer label type" if self.label else "uint8 or uint16"
                raise BuildError(self.path, f"page {i} has pixel type {dtype}; expected {want}")
            tile_h, tile_w = (int(v) for v in key.chunks[-2:])
            ny, nx = -(-self.height // tile_h), -(-self.width // tile_w)
            if len(key.chunks) != 2 or len(page.dataoffsets) != ny * nx:
                raise BuildError(
                    self.path,
                    f"unsupported layout: page {i} has {len(page.dataoffsets)} "
                    f"segments of {key.chunks} for a {self.height}x{self.width} image",
                )
            end = max((o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True) if c), default=0)
            if end > size:
                raise BuildError(
                    self.path,
                    f"is truncated: channel page {i}'s pixel data run to byte {end} but the file has {size} bytes "
                    "(an incomplete download or copy?)",
                )
            grids.add((tile_h, tile_w, nx))
        if len(grids) != 1:
            raise BuildError(self.path, f"unsupported layout: channel pages use different tile grids {sorted(grids)}")
        self.tile_h, self.tile_w, self.nx = grids.pop()
        self.tile_shape = (self.tile_h, self.tile_w)
        self.dtype = pages[0].keyframe.dtype

    @property
    def channel_names(self) -> list[str] | None:
        """Channel names of the OME-XML when it names every channel with a non-generic name, else None."""
        xml = self.tif.ome_metadata if self.tif.is_ome else None
        names = re.findall(r"<(?:\w+:)?Channel\b[^>]*?\bName=\"([^\"]*)\"", xml or "")
        if len(names) != self.channels or any(_GENERIC_CHANNEL.match(n.strip()) for n in names):
            return None
        return [n.strip() for n in names]

    @property
    def pixel_size_um(self) -> float | None:
        match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', self.tif.ome_metadata or "") if self.tif.is_ome else None
        return float(match.group(1)) if match else None

    def select(self, order: Sequence[int]) -> None:
        """Read pages ``order`` (one per output channel) from now on."""
        self.order = [int(i) for i in order]
        self.cache.clear()
        self.cached_bytes = 0

    def close(self) -> None:
        self.tif.close()
        self.cache.clear()

    def tiles_total(self) -> int:
        return sum(len(p.dataoffsets) for p in self.pages)

    def _decode(self, channel: int, index: int) -> np.ndarray:
        page = self.pages[channel]
        frame = page.keyframe
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        try:
            if count == 0:  # sparse file: an absent tile is empty
                return np.zeros(self.tile_shape, frame.dtype)
            fh = self.tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
            if len(data) != count:
                raise OSError(f"file ends inside the tile ({len(data)} of {count} bytes)")
            segment, _, _ = frame.decode(data, index, jpegtables=frame.jpegtables)
            return np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2])
        except Exception as err:
            raise BuildError(
                self.path, f"cannot decode tile {index} of channel page {channel} ({type(err).__name__}: {err})"
            ) from err

    def tile(self, index: int) -> np.ndarray:
        """Tile ``index`` of the selected channels, (C, h, w), decoded once while it stays in the cache."""
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        tiles = [self._decode(page, index) for page in self.order]
        h, w = min(t.shape[0] for t in tiles), min(t.shape[1] for t in tiles)
        stack = np.stack([t[:h, :w] for t in tiles])
        self.tiles_decoded += len(tiles)
        self.cache[index] = stack
        self.cached_bytes += stack.nbytes
        while self.cached_bytes > self.cache_bytes and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.cached_bytes -= old.nbytes
        return stack

    def tile_of(self, y: int, x: int) -> int:
        """Index of the tile holding pixel (y, x)."""
        return (y // self.tile_h) * self.nx + x // self.tile_w

    def read(self, top: int, left: int, size: int, out: np.ndarray) -> None:
        """Fill ``out`` (C, size, size) with rows top.. and columns left.. of every selected channel (zero outside)."""
        out[:] = 0
        r0, r1 = max(top, 0), min(top + size, self.height)
        c0, c1 = max(left, 0), min(left + size, self.width)
        if r0 >= r1 or c0 >= c1:
            return
        for ty in range(r0 // self.tile_h, (r1 - 1) // self.tile_h + 1):
            for tx in range(c0 // self.tile_w, (c1 - 1) // self.tile_w + 1):
                stack = self.tile(ty * self.nx + tx)
                y0, x0 = ty * self.tile_h, tx * self.tile_w
                ya, yb = max(r0, y0), min(r1, y0 + stack.shape[1])
                xa, xb = max(c0, x0), min(c1, x0 + stack.shape[2])
                if ya < yb and xa < xb:
                    out[:, ya - top : yb - top, xa - left : xb - left] = stack[:, ya - y0 : yb - y0, xa - x0 : xb - x0]
