#!/usr/bin/env python3
"""Helpers for benches/run.sh (standard library only).

    report.py add RESULTS.jsonl --scenario S --tool T --rows N --wall-s W [--time-file F]
              [--rate R] [--mock-cpu-s X] [--c C] [--latency-ms L] [--note TEXT] [--ok N]
              [--p50-ms P]
        Appends one measurement. CPU seconds and peak RSS come from `/usr/bin/time -v`'s
        output in F; rows/s is R when given (wrk's own figure), else rows / wall.
    report.py table RESULTS.jsonl --md OUT.md --header-file H
        Prints the side-by-side table with ratios and target verdicts, and writes it as
        Markdown to OUT.md (after the lines of H: date, machine, versions).
    report.py json-field FILE KEY
        Prints one top-level field of a JSON file (or of the last JSON line of a text file).
"""
import argparse
import json
import re
import sys


def parse_time_v(path):
    """user+sys CPU seconds and peak RSS (KiB) from `/usr/bin/time -v` output."""
    text = open(path, encoding="utf-8", errors="replace").read()

    def num(label):
        m = re.search(re.escape(label) + r":\s*([0-9.]+)", text)
        return float(m.group(1)) if m else None

    user, sys_ = num("User time (seconds)"), num("System time (seconds)")
    rss = num("Maximum resident set size (kbytes)")
    cpu = None if user is None or sys_ is None else user + sys_
    return cpu, rss


def cmd_add(a):
    cpu, rss = parse_time_v(a.time_file) if a.time_file else (None, None)
    rate = a.rate if a.rate is not None else (a.rows / a.wall_s if a.wall_s > 0 else None)
    rec = {"scenario": a.scenario, "tool": a.tool, "rows": a.rows, "wall_s": a.wall_s,
           "rows_per_s": rate, "cpu_s": cpu, "rss_mib": None if rss is None else rss / 1024,
           "mock_cpu_s": a.mock_cpu_s, "c": a.c, "latency_ms": a.latency_ms, "ok": a.ok,
           "p50_ms": a.p50_ms, "run": a.run, "note": a.note}
    with open(a.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")


def fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def _rss(bg):
    return f"{bg['rss_mib']:.1f} MiB"


def _wall(bg):
    return f"{bg['wall_s']:.2f} s"


# Per scenario: (target text, measured text, met?) on the batchgen row (SPEC "Performance").
SCALE_TARGETS = {
    "memory": [],
    "resume": [
        ("resume of a done {rows:,}-row job < 2 s", _wall, lambda b: b["wall_s"] < 2.0),
        ("resume of a done {rows:,}-row job: peak RSS < 80 MiB", _rss,
         lambda b: b["rss_mib"] < 80),
    ],
    "huge": [
        ("{rows:,}-row run: peak RSS < 100 MiB", _rss, lambda b: b["rss_mib"] < 100),
    ],
    "huge-resume": [
        ("resume of a done {rows:,}-row job < 20 s", _wall, lambda b: b["wall_s"] < 20.0),
        ("resume of a done {rows:,}-row job: peak RSS < 400 MiB", _rss,
         lambda b: b["rss_mib"] < 400),
    ],
    "merge": [
        ("merge of 4 shards, {rows:,} records < 3 s", _wall, lambda b: b["wall_s"] < 3.0),
        ("merge: peak RSS < 100 MiB (flat)", _rss, lambda b: b["rss_mib"] < 100),
    ],
    "report": [
        ("report over {rows:,} records < 5 s", _wall, lambda b: b["wall_s"] < 5.0),
    ],
    "parquet": [
        ("{rows:,}-row Parquet input run: peak RSS < 100 MiB", _rss, lambda b: b["rss_mib"] < 100),
    ],
    "parquet-export": [
        ("export of {rows:,} rows to Parquet: peak RSS < 100 MiB", _rss,
         lambda b: b["rss_mib"] < 100),
    ],
    "batchfiles": [
        ("batch input files for {rows:,} rows < 10 s", _wall, lambda b: b["wall_s"] < 10.0),
    ],
}


def verdicts(recs):
    """Per scenario: a ratio column for each row, and target lines (text, pass)."""
    by = {}
    for r in recs:
        by.setdefault(r["scenario"], {})[r["tool"]] = r
    ratios = {}   # (scenario, tool) -> text
    targets = []  # (scenario, target text, measured text, met / not met / n/a)

    def complete(r):
        return r is not None and (r.get("ok") is None or r["ok"] == r["rows"])

    for s, tools in by.items():
        bg, wrk, py, oha = (tools.get(k) for k in ("batchgen", "wrk", "python", "oha"))
        if bg and bg["rows_per_s"]:
            parts = []
            # At 200 ms, wrk's duration-bound rate counts partial waves: it is there for its
            # latency (the endpoint's floor), not as a rate to compare with.
            if wrk and wrk["rows_per_s"] and s != "slow":
                parts.append(f"{bg['rows_per_s'] / wrk['rows_per_s']:.2f}x wrk")
            if oha and oha["rows_per_s"]:
                parts.append(f"{bg['rows_per_s'] / oha['rows_per_s']:.2f}x oha")
            if py and py["rows_per_s"]:
                parts.append(f"{bg['rows_per_s'] / py['rows_per_s']:.1f}x python")
                if bg["cpu_s"] and py["cpu_s"]:
                    # CPU per row, Python over batchgen: how much less work batchgen does.
                    per_bg = bg["cpu_s"] / bg["rows"]
                    per_py = py["cpu_s"] / py["rows"]
                    parts.append(f"CPU/row python {per_py / per_bg:.1f}x")
            ratios[(s, "batchgen")] = ", ".join(parts) or "-"
        if s == "c64":
            if py and bg:
                x = bg["rows_per_s"] / py["rows_per_s"]
                targets.append((s, ">= 10x Python rows/s", f"{x:.1f}x",
                                "met" if x >= 10 and complete(bg) else "not met"))
            else:
                targets.append((s, ">= 10x Python rows/s", "no Python run", "n/a"))
        if s in ("c64", "nginx") and wrk and bg:
            x = bg["rows_per_s"] / wrk["rows_per_s"]
            targets.append((s, ">= 50% of wrk req/s" + (" (nginx, fixed answer)" if s == "nginx" else ""),
                            f"{100 * x:.0f}%", "met" if x >= 0.5 and complete(bg) else "not met"))
        if s == "slow" and bg:
            ideal = bg["rows"] / bg["c"] * bg["latency_ms"] / 1000.0
            over = 100.0 * (bg["wall_s"] / ideal - 1.0)
            prev = ratios.get((s, "batchgen"))
            ratios[(s, "batchgen")] = ((prev + "; " if prev and prev != "-" else "")
                                       + f"ideal {ideal:.2f} s, {over:+.1f}%")
            targets.append((s, f"wall within 5% of {bg['rows']}/{bg['c']} x "
                               f"{bg['latency_ms'] / 1000:g} s = {ideal:.2f} s",
                            f"{bg['wall_s']:.2f} s ({over:+.1f}%)",
                            "met" if over <= 5.0 and complete(bg) else "not met"))
            if wrk and wrk.get("p50_ms"):
                # What the endpoint allows at best: whole waves of c requests, each taking the
                # latency wrk measured on this mock at the same concurrency.
                waves = -(-bg["rows"] // bg["c"])
                floor = waves * wrk["p50_ms"] / 1000.0
                over_floor = 100.0 * (bg["wall_s"] / floor - 1.0)
                targets.append((s, f"(info) vs the endpoint's floor: {waves} waves x wrk p50 "
                                   f"{wrk['p50_ms']:.1f} ms = {floor:.2f} s",
                                f"{over_floor:+.1f}%", "info"))
        if s == "memory" and bg:
            targets.append((s, "peak RSS < 100 MiB", f"{bg['rss_mib']:.1f} MiB",
                            "met" if bg["rss_mib"] < 100 and complete(bg) else "not met"))
        if s == "resume" and bg:
            targets.append((s, f"resume of a done {bg['rows']:,}-row job < 3 s",
                            f"{bg['wall_s']:.2f} s",
                            "met" if bg["wall_s"] < 3.0 and complete(bg) else "not met"))
        for text, measured, ok in SCALE_TARGETS.get(s, ()):
            if bg:
                targets.append((s, text.format(rows=bg["rows"]), measured(bg),
                                "met" if ok(bg) and complete(bg) else "not met"))
    return ratios, targets


def mock_checks(recs):
    """Is the mock the bottleneck? wrk drives the same mock much harder than batchgen does."""
    by = {}
    for r in recs:
        by.setdefault(r["scenario"], {})[r["tool"]] = r
    out = []
    for s, tools in by.items():
        wrk, bg = tools.get("wrk"), tools.get("batchgen")
        if not (wrk and bg and wrk["rows_per_s"] and bg["rows_per_s"]) or s == "slow":
            continue
        per = lambda r: (1e6 * r["mock_cpu_s"] / r["rows"]) if r.get("mock_cpu_s") else None
        line = (f"mock check ({s}): wrk got {wrk['rows_per_s']:,.0f} req/s from the mock, "
                f"batchgen asked it for {bg['rows_per_s']:,.0f}/s "
                f"({100 * bg['rows_per_s'] / wrk['rows_per_s']:.0f}% of what it can serve)")
        if per(wrk) and per(bg):
            cores = lambda r: (r["cpu_s"] + r["mock_cpu_s"]) / r["wall_s"]
            line += (f"; mock CPU per request {per(wrk):.0f} us under wrk, {per(bg):.0f} us "
                     f"under batchgen; client CPU per request: wrk "
                     f"{1e6 * wrk['cpu_s'] / wrk['rows']:.0f} us, batchgen "
                     f"{1e6 * bg['cpu_s'] / bg['rows']:.0f} us; client+mock kept "
                     f"{cores(wrk):.2f} cores busy under wrk, {cores(bg):.2f} under batchgen")
        out.append(line)
    return out


def aggregate(raw):
    """One record per (scenario, tool): the run with the median rows/s when repeated."""
    groups = {}
    for r in raw:
        groups.setdefault((r["scenario"], r["tool"]), []).append(r)
    out = []
    for (s, t), rs in groups.items():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        ordered = sorted(rs, key=lambda r: r["rows_per_s"] or 0)
        med = dict(ordered[(len(ordered) - 1) // 2])
        lo, hi = ordered[0]["rows_per_s"] or 0, ordered[-1]["rows_per_s"] or 0
        extra = f"median of {len(rs)} runs (rows/s {lo:,.0f}-{hi:,.0f})"
        med["note"] = extra + ("; " + med["note"] if med.get("note") else "")
        out.append(med)
    return out


def pairwise(raw):
    """batchgen/wrk per repetition: each pair ran back to back, under the same outside load."""
    by = {}
    for r in raw:
        by.setdefault((r["scenario"], r.get("run", 1)), {})[r["tool"]] = r
    lines = {}
    for (s, run), tools in by.items():  # insertion order: scenarios as they ran
        if s == "slow":
            continue
        bg, wrk = tools.get("batchgen"), tools.get("wrk")
        if bg and wrk and bg["rows_per_s"] and wrk["rows_per_s"]:
            lines.setdefault(s, []).append(f"{bg['rows_per_s'] / wrk['rows_per_s']:.2f}")
    return [f"{s}: batchgen/wrk per back-to-back pair: {', '.join(v)}"
            for s, v in lines.items() if len(v) > 1]


def cmd_table(a):
    raw = [json.loads(l) for l in open(a.results, encoding="utf-8") if l.strip()]
    recs = aggregate(raw)
    ratios, targets = verdicts(recs)
    head = ["scenario", "tool", "c", "rows", "wall s", "rows/s", "CPU s", "CPU us/row",
            "peak RSS MiB", "mock CPU s", "ratio", "note"]
    rows = []
    for r in recs:
        ok = r.get("ok")
        note = r.get("note") or ""
        if ok is not None and ok != r["rows"]:
            note = (note + "; " if note else "") + f"ONLY {ok} ok"
        rows.append([r["scenario"], r["tool"], fmt(r.get("c")), fmt(r["rows"]),
                     fmt(r["wall_s"], 2), fmt(r["rows_per_s"], 0), fmt(r["cpu_s"], 2),
                     fmt(None if not r["cpu_s"] or not r["rows"] else 1e6 * r["cpu_s"] / r["rows"], 0),
                     fmt(r["rss_mib"], 1), fmt(r.get("mock_cpu_s"), 2),
                     ratios.get((r["scenario"], r["tool"]), ""), note])
    trows = [list(t) for t in targets]
    header = open(a.header_file, encoding="utf-8").read().rstrip("\n") if a.header_file else ""

    def plain(head, rows):
        w = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else []
        out = ["  ".join(str(x).ljust(n) for x, n in zip(head, w))]
        out += ["  ".join(str(x).ljust(n) for x, n in zip(row, w)) for row in rows]
        return "\n".join(out)

    def md(head, rows):
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
        return "\n".join(out)

    checks = mock_checks(recs) + pairwise(raw)
    thead = ["scenario", "target", "measured", "verdict"]
    print(header)
    print()
    print(plain(head, rows))
    print()
    print(plain(thead, trows))
    if checks:
        print()
        print("\n".join(checks))
    with open(a.md, "w", encoding="utf-8") as f:
        f.write("### batchgen benchmark\n\n")
        f.write("\n".join("- " + l for l in header.splitlines()) + "\n\n")
        f.write(md(head, rows) + "\n\n")
        f.write(md(thead, trows) + "\n")
        if checks:
            f.write("\n" + "\n".join("- " + c for c in checks) + "\n")
    failed = [t for t in targets if t[3] == "not met"]
    return 1 if failed else 0


def cmd_json_field(a):
    text = open(a.file, encoding="utf-8").read().strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        obj = json.loads([l for l in text.splitlines() if l.startswith("{")][-1])
    v = obj.get(a.key)
    print("" if v is None else v)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("add")
    p.add_argument("results")
    p.add_argument("--scenario", required=True)
    p.add_argument("--tool", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--wall-s", type=float, required=True)
    p.add_argument("--time-file")
    p.add_argument("--rate", type=float)
    p.add_argument("--mock-cpu-s", type=float)
    p.add_argument("--c", type=int)
    p.add_argument("--latency-ms", type=int)
    p.add_argument("--ok", type=int)
    p.add_argument("--p50-ms", type=float)
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--note", default="")
    p.set_defaults(f=cmd_add)
    p = sub.add_parser("table")
    p.add_argument("results")
    p.add_argument("--md", required=True)
    p.add_argument("--header-file")
    p.set_defaults(f=cmd_table)
    p = sub.add_parser("json-field")
    p.add_argument("file")
    p.add_argument("key")
    p.set_defaults(f=cmd_json_field)
    a = ap.parse_args()
    return a.f(a) or 0


if __name__ == "__main__":
    sys.exit(main())
