#!/usr/bin/env python3
"""Independent Python reference of the CPIA whole-slide-image standardization.

Implements "WSI standardization (per slide)" of shared/docs/cpia-standard.md,
rules 1-8 (cited as R1..R8 below), with the tile geometry as parameters so that
tests can run it on small slides.  It is written from the standard alone, not
from the Rust code, and is used for tile-set parity checks and as a benchmark
baseline.

Exit codes: 0 ok (zero tiles is not an error), 2 usage error,
3 slide has no usable MPP and none was given, 4 slide cannot be opened.
Needs openslide-python (with libopenslide) and Pillow.
"""
import argparse
import json
import math
import os
import sys

import openslide
from PIL import Image

LANCZOS = Image.Resampling.LANCZOS    # Lanczos-3 (R1, R3)
BILINEAR = Image.Resampling.BILINEAR  # triangle filter (R4, R5)


def stat(tile, resample):
    """R3/R4: colour statistic = the single pixel of a 1x1 resize (Pillow
    widens the filter support to the whole tile, so this is a weighted mean)."""
    return tile.resize((1, 1), resample).getpixel((0, 0))


def is_tissue(tile):
    """R3: XL tissue test (pink/purple H&E)."""
    r, g, b = stat(tile, LANCZOS)
    return r < 220 and g < 220 and b < 220 and r > 100 and b > 30 and r > g + 20


def is_background(tile):
    """R4/R5: L, M, S background test."""
    r, g, b = stat(tile, BILINEAR)
    return r > 220 and g > 220 and b > 220


def children(parent, px, py, size):
    """R4/R6: row-major grid of size-px children of a square parent at grid
    position (px, py); yields (x, y, tile) with x, y in units of `size`."""
    k = parent.width // size
    for r in range(k):
        for c in range(k):
            box = (c * size, r * size, (c + 1) * size, (r + 1) * size)
            yield px * k + c, py * k + r, parent.crop(box)


def standardize(path, sizes, target_mpp, tolerance, s_index, mpp_override=None, emit=None):
    """Runs R1-R6 on one slide.  sizes = dict XL/L/M/S -> px.  emit(scale,
    name, image) is called for every kept tile (None: names only).
    Returns the summary dict printed by --json."""
    XL, L, M, S = sizes["XL"], sizes["L"], sizes["M"], sizes["S"]
    slide_name = os.path.basename(path).split(".", 1)[0]  # R6: up to first dot
    try:
        slide = openslide.OpenSlide(path)
    except Exception as e:  # OpenSlideError, unsupported format, missing file
        print(f"error: cannot open slide {path}: {e}", file=sys.stderr)
        sys.exit(4)

    # R1: resolution.  The property is a string; an absent, unparsable,
    # non-finite or non-positive value is "no usable MPP" -> reported error.
    mpp = mpp_override
    if mpp is None:
        try:
            mpp = float(slide.properties.get(openslide.PROPERTY_NAME_MPP_X, ""))
        except ValueError:
            mpp = None
    if mpp is None or not math.isfinite(mpp) or mpp <= 0:
        print(f"error: slide {path} has no usable MPP ({openslide.PROPERTY_NAME_MPP_X});"
              " give --mpp-override", file=sys.stderr)
        sys.exit(3)
    ratio = target_mpp / mpp
    size = XL if 1 - tolerance < ratio < 1 + tolerance else math.floor(XL * ratio)

    # R2: grid over level 0 from the origin, outer ring skipped.
    w, h = slide.dimensions
    cols, rows = max(0, w // size - 2), max(0, h // size - 2)
    tiles = {"XL": [], "L": [], "M": [], "S": []}

    def keep(scale, x, y, img):
        name = f"{slide_name}-{sizes[scale]}-{x}-{y}.jpg"  # R6
        tiles[scale].append(name)
        if emit:
            emit(scale, name, img)

    k = M // S                                  # S tiles per side of an M tile
    s_row, s_col = divmod(s_index - 1, k)       # R5: the s_index-th, row-major
    for j in range(1, rows + 1):
        for i in range(1, cols + 1):
            # One region per XL tile; openslide-python returns un-premultiplied
            # RGBA, convert('RGB') drops alpha (R7).
            xl = slide.read_region((i * size, j * size), 0, (size, size)).convert("RGB")
            if size != XL:
                xl = xl.resize((XL, XL), LANCZOS)  # R1: to the standard scale
            if not is_tissue(xl):  # R3
                continue
            keep("XL", i, j, xl)
            for x, y, t in children(xl, i, j, L):  # R4: L
                if not is_background(t):
                    keep("L", x, y, t)
            for x, y, m in children(xl, i, j, M):  # R4: M
                if is_background(m):
                    continue
                keep("M", x, y, m)
                # R5: only one S child of each kept M tile is considered.
                box = (s_col * S, s_row * S, (s_col + 1) * S, (s_row + 1) * S)
                s = m.crop(box)
                if not is_background(s):
                    keep("S", x * k + s_col, y * k + s_row, s)
    slide.close()
    return {
        "slide": slide_name,
        "mpp": mpp,
        "read_size": size,
        "grid": [cols, rows],
        "tiles": {scale: sorted(names) for scale, names in tiles.items()},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("slide")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", help="write tiles to OUT/{XL,L,M,S}/{collection}-{size}/")
    mode.add_argument("--names-only", action="store_true", help="print JSON, write nothing")
    p.add_argument("--json", action="store_true", help="print the JSON summary (also with --out)")
    p.add_argument("--mpp-override", type=float)
    p.add_argument("--target-mpp", type=float, default=0.4942)
    p.add_argument("--tolerance", type=float, default=0.1)
    p.add_argument("--xl", type=int, default=3840)
    p.add_argument("--l", type=int, default=960)
    p.add_argument("--m", type=int, default=384)
    p.add_argument("--s", type=int, default=96)
    p.add_argument("--s-index", type=int, default=10)
    p.add_argument("--collection", default="wsi")
    p.add_argument("--quality", type=int, default=75)
    a = p.parse_args(argv)

    sizes = {"XL": a.xl, "L": a.l, "M": a.m, "S": a.s}
    if min(sizes.values()) <= 0 or a.xl % a.l or a.xl % a.m or a.m % a.s:
        p.error("sizes must be positive with L and M dividing XL and S dividing M")
    if not 1 <= a.s_index <= (a.m // a.s) ** 2:
        p.error(f"--s-index must be in 1..={(a.m // a.s) ** 2} (M/S = {a.m // a.s} per side)")
    if a.mpp_override is not None and not (math.isfinite(a.mpp_override) and a.mpp_override > 0):
        p.error("--mpp-override must be a positive number")

    emit = None
    if a.out:
        def emit(scale, name, img):
            # R8 layout; R7: JPEG quality 75, Pillow's other defaults (4:2:0).
            d = os.path.join(a.out, scale, f"{a.collection}-{sizes[scale]}")
            os.makedirs(d, exist_ok=True)
            img.save(os.path.join(d, name), "JPEG", quality=a.quality)

    summary = standardize(a.slide, sizes, a.target_mpp, a.tolerance, a.s_index,
                          a.mpp_override, emit)
    if a.json or a.names_only:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
