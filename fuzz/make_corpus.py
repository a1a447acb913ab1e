#!/usr/bin/env python3
"""Builds fuzz/corpus/tiff_dirs: the directory bytes of the shared test slides
(re-serialized without their tile data, so each file is a few KB) and a few
hand-made tiny and malformed TIFFs. Usage: make_corpus.py <testdata/wsi> <out>"""
import io, struct, sys, os
from PIL import Image

SIZES = {1:1,2:1,3:2,4:4,5:8,6:1,7:1,8:2,9:4,10:8,11:4,12:8,13:4,16:8,17:8,18:8}

def read_dirs(f):
    bo = '<' if f[:2] == b'II' else '>'
    big = struct.unpack(bo+'H', f[2:4])[0] == 43
    off = struct.unpack(bo+'Q', f[8:16])[0] if big else struct.unpack(bo+'I', f[4:8])[0]
    dirs = []
    while off and len(dirs) < 50:
        n = struct.unpack(bo+('Q' if big else 'H'), f[off:off+(8 if big else 2)])[0]
        p = off + (8 if big else 2); es = 20 if big else 12
        ents = []
        for k in range(n):
            e = f[p+k*es:p+(k+1)*es]
            tag, typ = struct.unpack(bo+'HH', e[:4])
            cnt = struct.unpack(bo+('Q' if big else 'I'), e[4:12 if big else 8])[0]
            valb = e[12:] if big else e[8:]
            sz = SIZES.get(typ, 1) * cnt
            if sz > len(valb):
                vo = struct.unpack(bo+('Q' if big else 'I'), valb)[0]
                data = f[vo:vo+sz]
            else:
                data = valb[:sz]
            ents.append((tag, typ, cnt, data))
        dirs.append(ents)
        q = p + n*es
        off = struct.unpack(bo+('Q' if big else 'I'), f[q:q+(8 if big else 4)])[0]
    return bo, big, dirs

def write(bo, big, dirs, blobs=b''):
    out = bytearray()
    out += b'II' if bo == '<' else b'MM'
    if big: out += struct.pack(bo+'HHHQ', 43, 8, 0, 0)
    else: out += struct.pack(bo+'HI', 42, 0)
    ptr = 8 if big else 4
    out += blobs
    for ents in dirs:
        vals = {}
        for i, (tag, typ, cnt, data) in enumerate(ents):
            if len(data) > (8 if big else 4):
                if len(out) % 2: out += b'\0'
                vals[i] = len(out); out += data
        if len(out) % 2: out += b'\0'
        at = len(out)
        struct.pack_into(bo+('Q' if big else 'I'), out, ptr, at)
        out += struct.pack(bo+('Q' if big else 'H'), len(ents))
        for i, (tag, typ, cnt, data) in enumerate(ents):
            out += struct.pack(bo+'HH', tag, typ)
            out += struct.pack(bo+('Q' if big else 'I'), cnt)
            w = 8 if big else 4
            if i in vals: out += struct.pack(bo+('Q' if big else 'I'), vals[i])
            else: out += data + b'\0'*(w-len(data))
        ptr = len(out)
        out += b'\0' * (8 if big else 4)
    return bytes(out)

def tiny(bo, big, photometric=6):
    im = Image.new('RGB', (16, 16), (200, 100, 50))
    b = io.BytesIO(); im.save(b, 'JPEG', quality=80); j = b.getvalue()
    start = 16 if big else 8
    def v(typ, vals):
        fmt = {3:'H', 4:'I', 16:'Q'}[typ]
        return struct.pack(bo+fmt*len(vals), *vals)
    lt = 16 if big else 4
    ents = [(256,3,1,v(3,[16])),(257,3,1,v(3,[16])),(258,3,3,v(3,[8,8,8])),(259,3,1,v(3,[7])),
            (262,3,1,v(3,[photometric])),(270,2,7,b'Aperio\0'),(277,3,1,v(3,[3])),(284,3,1,v(3,[1])),
            (322,3,1,v(3,[16])),(323,3,1,v(3,[16])),(324,lt,1,v(lt,[start])),(325,lt,1,v(lt,[len(j)]))]
    return write(bo, big, [ents], j)

def main(wsi, out):
    os.makedirs(out, exist_ok=True)
    for name in sorted(os.listdir(wsi)):
        f = open(os.path.join(wsi, name), 'rb').read()
        bo, big, dirs = read_dirs(f)
        if len(f) < 16384:
            open(os.path.join(out, name), 'wb').write(f)
        open(os.path.join(out, name + '.dirs'), 'wb').write(write(bo, big, dirs))
    for bo, big, tag in [('<', False, 'le'), ('>', False, 'be'), ('<', True, 'big-le'), ('>', True, 'big-be')]:
        open(os.path.join(out, f'tiny-{tag}.tif'), 'wb').write(tiny(bo, big))
    t = bytearray(tiny('<', False, 2))
    open(os.path.join(out, 'tiny-rgb.tif'), 'wb').write(t)
    # IFD loop: next pointer back to the first IFD
    first = struct.unpack('<I', t[4:8])[0]; n = struct.unpack('<H', t[first:first+2])[0]
    loop = bytearray(t); struct.pack_into('<I', loop, first + 2 + 12*n, first)
    open(os.path.join(out, 'bad-loop.tif'), 'wb').write(loop)
    huge = bytearray(t); struct.pack_into('<H', huge, first, 65535)
    open(os.path.join(out, 'bad-entry-count.tif'), 'wb').write(huge)
    open(os.path.join(out, 'bad-truncated.tif'), 'wb').write(bytes(t[:first + 40]))
    open(os.path.join(out, 'bad-header.tif'), 'wb').write(b'II+\0\x08\0\0\0')

main(sys.argv[1], sys.argv[2])
