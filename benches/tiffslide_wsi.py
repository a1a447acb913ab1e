#!/usr/bin/env python3
"""The CPIA WSI standard with tiffslide + Pillow in 2 processes: the peer of
`cargo bench --bench engine -- wsi|direct`.

The rules (tissue and background tests, child tiles, names, JPEG q75) are the
independent Python reference's own functions (tests/reference/
cpia_wsi_reference.py); only the reading (tiffslide, which decodes tiles with
imagecodecs' libjpeg-turbo) and the parallelism (a pool of 2 worker
processes, one grid cell per task) differ. Usage: SLIDE OUT [--processes N].
Prints one JSON line with the tile count and the wall time of the work
(process start-up excluded).
"""
import json
import math
import os
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import cpia_wsi_reference as ref  # noqa: E402

import tiffslide  # noqa: E402

SIZES = {"XL": 3840, "L": 960, "M": 384, "S": 96}
TARGET_MPP, TOLERANCE, S_INDEX = 0.4942, 0.1, 10

_slide = None


def cell(args):
    """Reads one cell and writes its kept tiles; returns the tile count."""
    global _slide
    path, out, size, i, j = args
    if _slide is None:
        _slide = tiffslide.TiffSlide(path)
    name = os.path.basename(path).split(".", 1)[0]
    xl = _slide.read_region((i * size, j * size), 0, (size, size)).convert("RGB")
    if size != SIZES["XL"]:
        xl = xl.resize((SIZES["XL"], SIZES["XL"]), ref.LANCZOS)
    if not ref.is_tissue(xl):
        return 0
    n = 0

    def keep(scale, x, y, img):
        nonlocal n
        d = os.path.join(out, scale, f"wsi-{SIZES[scale]}")
        os.makedirs(d, exist_ok=True)
        img.save(os.path.join(d, f"{name}-{SIZES[scale]}-{x}-{y}.jpg"), "JPEG", quality=75)
        n += 1

    keep("XL", i, j, xl)
    for x, y, t in ref.children(xl, i, j, SIZES["L"]):
        if not ref.is_background(t):
            keep("L", x, y, t)
    k = SIZES["M"] // SIZES["S"]
    s_row, s_col = divmod(S_INDEX - 1, k)
    for x, y, m in ref.children(xl, i, j, SIZES["M"]):
        if ref.is_background(m):
            continue
        keep("M", x, y, m)
        s = SIZES["S"]
        t = m.crop((s_col * s, s_row * s, (s_col + 1) * s, (s_row + 1) * s))
        if not ref.is_background(t):
            keep("S", x * k + s_col, y * k + s_row, t)
    return n


def main(argv):
    path, out = argv[0], argv[1]
    processes = int(argv[argv.index("--processes") + 1]) if "--processes" in argv else 2
    t0 = time.perf_counter()
    slide = tiffslide.TiffSlide(path)
    mpp = float(slide.properties["tiffslide.mpp-x"])
    w, h = slide.dimensions
    slide.close()
    ratio = TARGET_MPP / mpp
    size = SIZES["XL"] if 1 - TOLERANCE < ratio < 1 + TOLERANCE else math.floor(SIZES["XL"] * ratio)
    cols, rows = max(0, w // size - 2), max(0, h // size - 2)
    tasks = [(path, out, size, i, j) for j in range(1, rows + 1) for i in range(1, cols + 1)]
    with Pool(processes) as pool:
        tiles = sum(pool.map(cell, tasks, chunksize=1))
    print(json.dumps({"tiles": tiles, "cells": len(tasks), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1:])
