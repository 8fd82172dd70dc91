"""Counts f32x4 multiply-adds per function of a built .wasm: relaxed_madd (relaxed SIMD's fused
multiply-add), and the separate f32x4.mul / f32x4.add. Shows which functions of a relaxed build
really use relaxed_madd (binaryen 108 cannot read relaxed opcodes, so wasm-dis cannot tell).

    python wasm/bench/wasm_ops.py web/dist/pysparse-relaxed.wasm [NAME_SUBSTRING...]

Counts byte patterns in each function body (no full decoding): treat them as close counts.
"""
from __future__ import annotations

import sys

PATTERNS = {"relaxed_madd": b"\xfd\x85\x02", "f32x4.mul": b"\xfd\xe6\x01", "f32x4.add": b"\xfd\xe4\x01"}


def leb(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        s += 7
        if not x & 0x80:
            return r, i


def functions(b: bytes) -> list[tuple[str, bytes]]:
    """(name, body) of every defined function; names from the name section where present."""
    i, imported, bodies, names = 8, 0, [], {}
    while i < len(b):
        sid = b[i]
        size, i = leb(b, i + 1)
        end = i + size
        if sid == 2:  # imports: count the imported functions (they take the first indices)
            n, j = leb(b, i)
            for _ in range(n):
                for _ in range(2):
                    ln, j = leb(b, j)
                    j += ln
                kind = b[j]
                j += 1
                if kind == 0:
                    _, j = leb(b, j)
                    imported += 1
                elif kind in (1, 2):  # table (reftype, limits) or memory (limits)
                    j += kind == 1
                    flags = b[j]
                    _, j = leb(b, j + 1)
                    if flags & 1:
                        _, j = leb(b, j)
                elif kind == 3:  # global
                    j += 2
        elif sid == 10:  # code
            n, j = leb(b, i)
            for _ in range(n):
                ln, j = leb(b, j)
                bodies.append(b[j:j + ln])
                j += ln
        elif sid == 0:  # custom: the name section's function names
            ln, j = leb(b, i)
            if b[j:j + ln] == b"name":
                j += ln
                while j < end:
                    sub = b[j]
                    sl, j = leb(b, j + 1)
                    if sub == 1:
                        n, k = leb(b, j)
                        for _ in range(n):
                            idx, k = leb(b, k)
                            ln, k = leb(b, k)
                            names[idx] = b[k:k + ln].decode()
                            k += ln
                    j += sl
        i = end
    return [(names.get(k + imported, f"func{k + imported}"), body) for k, body in enumerate(bodies)]


def main() -> None:
    path, wanted = sys.argv[1], sys.argv[2:]
    for name, body in functions(open(path, "rb").read()):
        counts = {p: body.count(v) for p, v in PATTERNS.items()}
        if any(counts.values()) and (not wanted or any(w in name for w in wanted)):
            print(f"{name:40s} " + "  ".join(f"{p} {v:3d}" for p, v in counts.items()))


if __name__ == "__main__":
    main()
