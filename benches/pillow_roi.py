#!/usr/bin/env python3
"""The CPIA ROI standard in Pillow, single process: the baseline of `cargo bench --bench engine roi`.

For every image under SRC: decode, convert to RGB, crop the largest centred square, resize to
384x384 with Lanczos, encode JPEG quality 75 (4:2:0), write to DST. Prints one JSON line with
the image count and the wall time of the loop (process start-up excluded).
"""
import json
import os
import sys
import time

from PIL import Image


def main(src, dst):
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs
    )
    os.makedirs(dst, exist_ok=True)
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            a = min(w, h)
            left, top = (w - a) // 2, (h - a) // 2
            im = im.crop((left, top, left + a, top + a)).resize((384, 384), Image.LANCZOS)
            im.save(os.path.join(dst, f"{i}.jpg"), quality=75)
    dt = time.perf_counter() - t0
    print(json.dumps({"images": len(files), "seconds": dt}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
