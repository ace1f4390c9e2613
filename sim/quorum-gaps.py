#!/usr/bin/env python3
"""How long a minority can look like a majority, from simulator traces.

For every two-way partition in the given traces (`ringhost-sim --trace`,
gossip only is enough), and every node on a side with at most half of the
nodes, this follows that node's view from the first moment it sees a node of
the other side dead until it no longer counts a strict majority alive. The
longest quiet spell in between (no change to its live set) is how long an
`election_settle` must be, at least, for that node never to promote on a
stale quorum. A member counts toward the quorum only once it has been alive
for WARMUP seconds without a break (model::NodeConfig::election_warmup).

    for s in $(seq 1 80); do
      target/release/ringhost-sim --seed $s --nodes 20 --duration 10m \
        --faults partition,loss,crash --fault-gap 10s --trace /tmp/g$s.trace
    done
    sim/quorum-gaps.py 10 /tmp/g*.trace

Prints the worst cases and, per settle time, how many partitions had a quiet
spell at least that long.
"""

import re
import sys


def spells(path, nodes, warmup):
    """(longest quiet spell, file, partition start, observer) per observer."""
    out = []
    alive = {}  # observer -> {member: alive since}
    part = None
    view = re.compile(r"(n\d+)/g\d+ ([+-])(n\d+)/g\d+")
    for line in open(path):
        fields = line.rstrip().split(" ", 2)
        if len(fields) < 2:
            continue
        t, kind = float(fields[0]), fields[1]
        if kind == "view":
            o, sign, x = view.match(fields[2]).groups()
            members = alive.setdefault(o, {})
            if sign == "+":
                members.setdefault(x, t)
            else:
                members.pop(x, None)
            if part is not None:
                part["events"].append((t, o, sign, x, dict(members)))
        elif kind == "restart":
            alive[fields[2].split("/")[0]] = {}
        elif kind == "partition":
            m = re.match(r"(\S+) \[(.*)\] \| rest", fields[2])
            part = None
            if m.group(1) == "two-way":
                part = {"t": t, "a": set(m.group(2).split()), "events": []}
        elif kind == "heal" and part is not None:
            everyone = {f"n{i}" for i in range(nodes)}
            b = everyone - part["a"]
            for side, other in ((part["a"], b), (b, part["a"])):
                if 2 * len(side) > nodes:
                    continue
                for o in side:
                    out.append((observe(part, o, other, t, nodes, warmup), path, part["t"], o))
            part = None
    return out


def observe(part, o, other, heal, nodes, warmup):
    events = [e for e in part["events"] if e[1] == o]
    seen = [e for e in events if e[2] == "-" and e[3] in other]
    if not seen:
        return 0.0
    t1 = seen[0][0]
    state, i, now, last_change, longest = seen[0][4], 0, t1, t1, 0.0
    while now <= heal:
        while i < len(events) and events[i][0] <= now:
            if events[i][0] >= t1 and events[i][4] != state:
                last_change = events[i][0]
            state = events[i][4]
            i += 1
        counted = sum(1 for n, since in state.items() if n == o or now - since >= warmup)
        if 2 * counted <= nodes:
            break
        longest = max(longest, now - last_change)
        now += 0.1
    return round(longest, 1)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    warmup = float(sys.argv[1])
    found = []
    for path in sys.argv[2:]:
        found += spells(path, 20, warmup)
    found.sort(key=lambda r: -r[0])
    print(f"warm-up {warmup}s, {len(found)} minority observers")
    for r in found[:5]:
        print(f"  quiet {r[0]:.1f}s  {r[1]} partition at {r[2]:.3f}s  observer {r[3]}")
    total = len({(r[1], r[2]) for r in found})
    for settle in (0.5, 1.0, 1.5, 2.0, 3.0):
        bad = {(r[1], r[2]) for r in found if r[0] >= settle}
        print(f"  settle {settle}s: {len(bad)} of {total} partitions had a quiet spell that long")


if __name__ == "__main__":
    main()
