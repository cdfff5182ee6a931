#!/usr/bin/env python3
"""hist.py -- quantiles of a Prometheus histogram between two /metrics dumps.

usage: hist.py BEFORE AFTER METRIC [Q...]     (files; BEFORE may be /dev/null)

Subtracts BEFORE's bucket counts from AFTER's, so only the observations made
in between count, then estimates each quantile Q (default 0.5 0.99) as
Prometheus' histogram_quantile() does: find the bucket holding rank Q * count
and interpolate linearly between its lower and upper bounds (the first
bucket's lower bound is 0; a rank in the +Inf bucket yields the highest finite
bound). Prints "count N" then "pQQ SECONDS" per quantile, one per line; a
quantile of an empty window prints "pQQ nan".
"""
import math
import re
import sys

LINE = re.compile(r'^(\w+)_bucket\{(?:.*,)?le="([^"]+)"(?:,.*)?\}\s+(\S+)')


def buckets(path, metric):
    out = {}
    with open(path) as f:
        for line in f:
            m = LINE.match(line)
            if m and m.group(1) == metric:
                le = math.inf if m.group(2) == "+Inf" else float(m.group(2))
                out[le] = out.get(le, 0.0) + float(m.group(3))
    return out


def quantile(q, bounds, counts):
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    for i, (le, c) in enumerate(zip(bounds, counts)):
        if c >= rank:
            if le == math.inf:
                return bounds[i - 1] if i > 0 else math.nan
            lo = bounds[i - 1] if i > 0 else 0.0
            prev = counts[i - 1] if i > 0 else 0.0
            if c == prev:
                return le
            return lo + (le - lo) * (rank - prev) / (c - prev)
    return math.nan


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().splitlines()[2])
    before, after = buckets(sys.argv[1], sys.argv[3]), buckets(sys.argv[2], sys.argv[3])
    if not after:
        sys.exit("hist.py: no histogram %s in %s" % (sys.argv[3], sys.argv[2]))
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    qs = [float(q) for q in sys.argv[4:]] or [0.5, 0.99]
    print("count %d" % counts[-1])
    for q in qs:
        print("p%g %.6f" % (q * 100, quantile(q, bounds, counts)))


if __name__ == "__main__":
    main()
