#!/usr/bin/env python3
"""Summarize a benchmarks/ab.sh output directory as markdown tables, one per engine.

    python3 benchmarks/ab_summary.py OUT_DIR

Reads OUT_DIR/<engine>-r<round>-<old|new>.json (the JSON of `lodge bench load --json`)
and prints, per engine and scenario: each round's requests/s for the old and the new
build, the change of the means, each round's new/old ratio (the two runs of a round are
minutes apart) and their geometric mean, each run's p99 latency, and the errors (answers
that were not the expected success) summed over the runs. The database's bare
durable-commit rate of each run is given under the table. Standard library only.
"""

import json
import math
import re
import sys
from pathlib import Path

NAME = re.compile(r"^(?P<engine>[a-z]+)-r(?P<round>\d+)-(?P<label>old|new)\.json$")


def load(out_dir):
    """{engine: {round: {label: report}}}"""
    runs = {}
    for path in sorted(Path(out_dir).iterdir()):
        m = NAME.match(path.name)
        if not m:
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"skipping {path.name}: {e}", file=sys.stderr)
            continue
        eng = runs.setdefault(m["engine"], {})
        eng.setdefault(int(m["round"]), {})[m["label"]] = report
    return runs


def thousands(x):
    return f"{x:,.0f}"


def ms(x):
    return f"{x:.1f}"


def table(engine, rounds):
    order = sorted(rounds)
    # scenario order as the runs report them
    names = []
    for r in order:
        for label in ("old", "new"):
            for s in rounds[r].get(label, {}).get("scenarios", []):
                if s["name"] not in names:
                    names.append(s["name"])

    def get(r, label, name):
        rep = rounds[r].get(label)
        if not rep:
            return None
        for s in rep.get("scenarios", []):
            if s["name"] == name:
                return s
        return None

    first = rounds[order[0]]
    any_rep = first.get("old") or first.get("new")
    lines = [
        f"#### {engine} ({any_rep['connections']} connections, "
        f"{any_rep['duration_secs']:g} s per scenario, rounds {', '.join(map(str, order))})",
        "",
        "| scenario | old req/s | new req/s | new vs old (mean) | new/old by round "
        "| geo. mean | old p99 ms | new p99 ms | errors old / new |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = {"old": [], "new": []}
        p99 = {"old": [], "new": []}
        errs = {"old": 0, "new": 0}
        ratios = []
        for r in order:
            pair = {}
            for label in ("old", "new"):
                s = get(r, label, name)
                if s is None:
                    cells[label].append("–")
                    p99[label].append("–")
                    continue
                pair[label] = s["throughput"]
                cells[label].append(thousands(s["throughput"]))
                p99[label].append(ms(s["p99_ms"]))
                errs[label] += s["errors"]
            if len(pair) == 2 and pair["old"] > 0:
                ratios.append(pair["new"] / pair["old"])
        olds = [get(r, "old", name) for r in order]
        news = [get(r, "new", name) for r in order]
        olds = [s["throughput"] for s in olds if s]
        news = [s["throughput"] for s in news if s]
        if olds and news:
            mo, mn = sum(olds) / len(olds), sum(news) / len(news)
            change = f"{(mn / mo - 1) * 100:+.1f} %"
        else:
            change = "–"
        lines.append(
            f"| {name} | {' · '.join(cells['old'])} | {' · '.join(cells['new'])} | {change} "
            f"| {' · '.join(f'{x:.2f}' for x in ratios) or '–'} "
            f"| {geomean(ratios)} "
            f"| {' · '.join(p99['old'])} | {' · '.join(p99['new'])} "
            f"| {errs['old']} / {errs['new']} |"
        )

    def ceiling(key, label):
        vals = []
        for r in order:
            rep = rounds[r].get(label)
            v = rep.get(key) if rep else None
            vals.append(thousands(v) if v else "–")
        return " · ".join(vals)

    lines.append("")
    lines.append(
        f"Bare durable commits, 1 connection (per run, /s): old {ceiling('bare_commits_per_sec', 'old')}; "
        f"new {ceiling('bare_commits_per_sec', 'new')}."
    )
    if any((rounds[r].get(lbl) or {}).get("bare_commits_per_sec_concurrent")
           for r in order for lbl in ("old", "new")):
        lines.append(
            "Bare durable commits, N connections (/s): "
            f"old {ceiling('bare_commits_per_sec_concurrent', 'old')}; "
            f"new {ceiling('bare_commits_per_sec_concurrent', 'new')}."
        )
    lines.append(
        f"Server peak RSS (MiB): old {ceiling_rss(rounds, order, 'old')}; "
        f"new {ceiling_rss(rounds, order, 'new')}."
    )
    return "\n".join(lines)


def geomean(ratios):
    if not ratios or min(ratios) <= 0:
        return "–"
    return f"{math.exp(sum(math.log(x) for x in ratios) / len(ratios)):.2f}"


def ceiling_rss(rounds, order, label):
    vals = []
    for r in order:
        rep = rounds[r].get(label)
        v = rep.get("server_peak_rss_mb") if rep else None
        vals.append(f"{v:.1f}" if v else "–")
    return " · ".join(vals)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    out_dir = Path(sys.argv[1])
    runs = load(out_dir)
    if not runs:
        print(f"no <engine>-r<round>-<old|new>.json in {out_dir}", file=sys.stderr)
        sys.exit(1)
    failed = sorted(p.name for p in out_dir.glob("*.failed.json"))
    for engine in sorted(runs, key=lambda e: (e != "sqlite", e)):
        print(table(engine, runs[engine]))
        print()
    if failed:
        print("Failed runs (not in the tables): " + ", ".join(failed))


if __name__ == "__main__":
    main()
