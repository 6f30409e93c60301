#!/usr/bin/env python3
"""bench/benchlib.py — the numeric side of `make bench` (standard library only).

  benchlib.py tag KEY=VALUE...            stdin: a tool's JSON line (commit_bench, wrk, ...)
                                          stdout: one row = that JSON plus the labels
  benchlib.py pgbench-log FILE...         percentiles of pgbench -l per-transaction logs
  benchlib.py wrk-json FILE               the BENCH_JSON line of bench/wrk/report.lua in wrk's output
  benchlib.py machine KEY=VALUE...        stdin: fsync_latency's JSON; stdout: the machine object
  benchlib.py report RUNS MACHINE OUT     groups the rows of RUNS (JSON lines), prints the table,
                                          writes OUT (results.json)

Percentiles are nearest-rank (the same rule as bench/tools/*.c). A row is one run; the report groups
runs by (suite, group, case, system, clients) and gives the median of each figure over the repeats
and the min-max spread of ops/s. Ratios compare a row's median ops/s with the reference system of
its (suite, group, clients): PostgreSQL sync-rep for commits, nginx for HTTPS. p99_ratio is the
row's median p99 over the reference's (lower is better).
"""
import json
import math
import os
import platform
import statistics
import subprocess
import sys

REFERENCE = {"commit": "postgresql-syncrep", "https": "nginx-tls12"}
# The other baselines a candidate row is also compared with.
BASELINES = {"commit": ["postgresql-syncrep", "sqlite-wal-full"], "https": ["nginx-tls12"]}
CANDIDATE = "keytrustee"


def percentile(sorted_values, p):
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, min(n, math.ceil(p / 100.0 * n - 1e-9)))
    return sorted_values[rank - 1]


def convert(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if text in ("true", "false"):
        return text == "true"
    return text


def labels(arguments, keep_text=()):
    out = {}
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep:
            sys.exit("benchlib: label %r is not KEY=VALUE" % argument)
        out[key] = value if key in keep_text else convert(value)
    return out


def cmd_tag(arguments):
    text = sys.stdin.read().strip().splitlines()
    lines = [line for line in text if line.startswith("{")]
    if not lines:
        sys.exit("benchlib tag: no JSON line on stdin")
    row = json.loads(lines[-1])
    row.update(labels(arguments))
    print(json.dumps(row, sort_keys=True))


def cmd_pgbench_log(files):
    latencies = []
    for name in files:
        with open(name) as handle:
            for line in handle:
                fields = line.split()
                # client_id transaction_no time_us script_no time_epoch time_us_fraction
                if len(fields) >= 6:
                    latencies.append(int(fields[2]))
    latencies.sort()
    ms = lambda p: round(percentile(latencies, p) / 1000.0, 4) if latencies else None
    print(json.dumps({
        "logged": len(latencies),
        "p50_ms": ms(50), "p99_ms": ms(99), "p999_ms": ms(99.9),
        "max_ms": round(latencies[-1] / 1000.0, 4) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) / 1000.0, 4) if latencies else None,
    }))


def cmd_wrk_json(arguments):
    with open(arguments[0]) as handle:
        for line in handle:
            if line.startswith("BENCH_JSON "):
                print(line[len("BENCH_JSON "):].strip())
                return
    sys.exit("benchlib wrk-json: no BENCH_JSON line in %s (wrk failed?)" % arguments[0])


def read_meminfo():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cmd_machine(arguments):
    fsync = json.loads(sys.stdin.read().strip().splitlines()[-1])
    machine = {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": read_meminfo(),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME") if hasattr(platform, "freedesktop_os_release") else None,
        "fsync_4k_in_place": fsync,
    }
    machine.update(labels(arguments, keep_text=("postgresql", "nginx", "wrk", "commit", "loadavg_at_start")))
    print(json.dumps(machine, sort_keys=True))


# ---- report ---------------------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, float) and abs(value) >= 1000:
        return "{:,.0f}".format(value)
    if isinstance(value, float):
        return "{:.{}f}".format(value, digits)
    return str(value)


def group_rows(rows):
    groups, order = {}, []
    for row in rows:
        if row.get("suite") not in ("commit", "https"):
            continue
        key = (row["suite"], row.get("group", row["suite"]), row.get("case", ""), row["system"],
               int(row.get("clients", 0)))
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(row)
    out = []
    for key in order:
        runs = groups[key]
        ops = [r.get("ops_per_s") for r in runs if r.get("ops_per_s") is not None]
        out.append({
            "suite": key[0], "group": key[1], "name": key[2], "system": key[3], "clients": key[4],
            "runs": len(runs),
            "median_ops_per_s": round(median(ops), 1) if ops else None,
            "spread_ops_per_s": [round(min(ops), 1), round(max(ops), 1)] if ops else None,
            "p50_ms": median(r.get("p50_ms") for r in runs),
            "p99_ms": median(r.get("p99_ms") for r in runs),
            "p999_ms": median(r.get("p999_ms") for r in runs),
            "errors": sum(int(r.get("errors", 0) or 0) for r in runs),
            "each_run_ops_per_s": ops,
        })
    by_key = {(g["suite"], g["group"], g["system"], g["clients"]): g for g in out}
    for g in out:
        reference = REFERENCE.get(g["suite"])
        ref = by_key.get((g["suite"], g["group"], reference, g["clients"]))
        g["reference"] = reference
        g["ratio"] = None
        g["p99_ratio"] = None
        if ref and ref["median_ops_per_s"] and g["median_ops_per_s"] is not None:
            g["ratio"] = round(g["median_ops_per_s"] / ref["median_ops_per_s"], 3)
        if ref and ref["p99_ms"] and g["p99_ms"] is not None:
            g["p99_ratio"] = round(g["p99_ms"] / ref["p99_ms"], 3)
        g["ratios"] = {}
        for baseline in BASELINES.get(g["suite"], []):
            other = by_key.get((g["suite"], g["group"], baseline, g["clients"]))
            if other and other["median_ops_per_s"] and g["median_ops_per_s"] is not None:
                g["ratios"][baseline] = round(g["median_ops_per_s"] / other["median_ops_per_s"], 3)
    return out


def print_table(title, header, lines, right=()):
    """Columns listed in `right` (indexes) are right-aligned, the others left-aligned."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines)] if lines else [len(h) for h in header]
    align = lambda i, x, w: str(x).rjust(w) if i in right else str(x).ljust(w)
    print()
    print(title)
    print("  " + "  ".join(align(i, h, w) for i, (h, w) in enumerate(zip(header, widths))).rstrip())
    print("  " + "  ".join("-" * w for w in widths))
    for line in lines:
        print("  " + "  ".join(align(i, x, w) for i, (x, w) in enumerate(zip(line, widths))).rstrip())


# The targets of issues 3 and 8, checked on the candidate's rows. Failure and scale rows are
# matched by these case names (bench/candidate.sh prints them).
FAILURE_TARGETS = [
    ("read failover after SIGKILL of the active", 1.0),
    ("write refusal after the passive is cut", 2.0),
    ("write resumption after the passive returns", 2.0),
]


def check_targets(grouped, failure, scale):
    """Returns [(target, measured, verdict)], verdict one of met / MISSED / not measured."""
    out = []

    def row(suite, group, clients, case=None):
        for g in grouped:
            if (g["suite"], g["group"], g["system"], g["clients"]) == (suite, group, CANDIDATE, clients) \
                    and (case is None or g["name"] == case):
                return g
        return None

    def verdict(ok):
        return "met" if ok else "MISSED"

    for clients, need in ((1, 1.5), (8, 2.0)):
        g = row("commit", "commit", clients)
        name = "commit, %d writer%s: >= %.1fx PostgreSQL sync-rep, p99 <= PostgreSQL's" % (clients, "s" if clients > 1 else "", need)
        if g is None or g["ratio"] is None:
            out.append((name, "-", "not measured"))
        else:
            out.append((name, "%.2fx, p99 %.2fx" % (g["ratio"], g["p99_ratio"] or 0),
                        verdict(g["ratio"] >= need and g["p99_ratio"] is not None and g["p99_ratio"] <= 1.0)))
    gets = [g for g in grouped if g["suite"] == "https" and g["group"] == "keep-alive"
            and g["system"] == CANDIDATE and g["name"] == "deposit get"]
    if not gets:
        out.append(("deposit get over HTTPS: >= 0.5x nginx req/s, p99 <= 2x nginx's", "-", "not measured"))
    for g in gets:
        name = "deposit get over HTTPS, %d connections: >= 0.5x nginx, p99 <= 2x" % g["clients"]
        if g["ratio"] is None:
            out.append((name, "-", "not measured"))
        else:
            out.append((name, "%.2fx, p99 %.2fx" % (g["ratio"], g["p99_ratio"] or 0),
                        verdict(g["ratio"] >= 0.5 and g["p99_ratio"] is not None and g["p99_ratio"] <= 2.0)))
    for case, limit in FAILURE_TARGETS:
        rows = [r for r in failure if r.get("system") == CANDIDATE and r.get("case") == case]
        name = "%s <= %g s" % (case, limit)
        if not rows or rows[0].get("seconds") is None:
            out.append((name, "-", "not measured" if not rows else "MISSED"))
        else:
            out.append((name, "%.3f s" % rows[0]["seconds"], verdict(rows[0]["seconds"] <= limit)))
    mine = [r for r in scale if r.get("system") == CANDIDATE]
    at = lambda n, key: next((r.get(key) for r in mine if r.get("deposits") == n and r.get(key) is not None), None)
    rss = at(100000, "rss_mb")
    out.append(("RSS of keytrusteed <= 20 MB at 100k deposits", "-" if rss is None else "%.1f MB" % rss,
                "not measured" if rss is None else verdict(rss <= 20)))
    p_small, p_large = at(10000, "p99_ms"), at(1000000, "p99_ms")
    out.append(("p99 read latency at 1M deposits <= 1.5x at 10k",
                "-" if None in (p_small, p_large) else "%.3f / %.3f ms" % (p_large, p_small),
                "not measured" if None in (p_small, p_large) else verdict(p_large <= 1.5 * p_small)))
    return out


def git_commit(root):
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return None, None


def cmd_report(arguments):
    runs_path, machine_path, out_path = arguments
    rows = []
    if os.path.exists(runs_path):
        with open(runs_path) as handle:
            rows = [json.loads(line) for line in handle if line.strip().startswith("{")]
    with open(machine_path) as handle:
        machine = json.load(handle)
    grouped = group_rows(rows)
    other = [r for r in rows if r.get("suite") not in ("commit", "https")]
    missing = sorted({r["what"] for r in other if r.get("suite") == "missing"})

    for suite, title in (("commit", "Commits: one key row per transaction, durable (ratio vs PostgreSQL sync-rep)"),
                         ("https", "HTTPS: 180-byte JSON over TLS 1.2 (ratio vs nginx)")):
        lines = []
        for g in grouped:
            if g["suite"] != suite:
                continue
            spread = "-" if not g["spread_ops_per_s"] else "{}–{}".format(fmt(g["spread_ops_per_s"][0], 0), fmt(g["spread_ops_per_s"][1], 0))
            extra = " ".join("vs {} {}".format(k, fmt(v)) for k, v in g["ratios"].items()
                             if k not in (g["reference"], g["system"]))
            lines.append([g["name"], g["system"], g["group"], g["clients"], g["runs"],
                          fmt(g["median_ops_per_s"], 0), spread, fmt(g["p50_ms"], 3), fmt(g["p99_ms"], 3),
                          fmt(g["p999_ms"], 3), fmt(g["ratio"]), fmt(g["p99_ratio"]), extra or "", g["errors"]])
        if lines:
            print_table(title, ["case", "system", "group", "clients", "runs", "ops/s", "spread", "p50 ms",
                                "p99 ms", "p999 ms", "ratio", "p99 ratio", "other ratios", "errors"], lines,
                        right=(3, 4, 5, 6, 7, 8, 9, 10, 11, 13))

    failure = [r for r in other if r.get("suite") == "failure"]
    if failure:
        lines = [[r.get("case", ""), r.get("system", ""), r.get("outcome", ""),
                  fmt(r.get("seconds"), 3) if r.get("seconds") is not None else "-", r.get("detail", "")]
                 for r in failure]
        print_table("Failure timings", ["case", "system", "outcome", "seconds", "detail"], lines, right=(3,))
    scale = [r for r in other if r.get("suite") == "scale"]
    if scale:
        lines = [[r.get("case", ""), r.get("system", ""), r.get("deposits", ""), fmt(r.get("ops_per_s"), 0),
                  fmt(r.get("get_ops_per_s"), 0), fmt(r.get("p50_ms"), 3), fmt(r.get("p99_ms"), 3),
                  fmt(r.get("rss_mb"), 1), fmt(r.get("rss_db_mb"), 1), fmt(r.get("bytes_per_deposit"), 0)]
                 for r in scale]
        # ops/s = deposits stored per second (puts); reads/s, p50, p99 = the random reads;
        # RSS = keytrusteed (the daemon serving requests: the 20 MB target), db RSS = keytrustee-db.
        print_table("Scale (puts/s: replicated deposit puts; p50/p99: random reads; RSS: keytrusteed, the target's daemon)",
                    ["case", "system", "deposits", "puts/s", "reads/s", "p50 ms", "p99 ms", "RSS MB",
                     "db RSS MB", "bytes/deposit"], lines, right=(2, 3, 4, 5, 6, 7, 8, 9))
    targets = check_targets(grouped, failure, scale)
    print_table("Targets (issues 3 and 8)", ["target", "measured", "verdict"], [list(t) for t in targets])
    info = [r for r in other if r.get("suite") == "info"]
    for r in info:
        print("  note: {}: {}".format(r.get("what", ""), r.get("detail", "")))
    for what in missing:
        print("  not measured: {}".format(what))

    commit, dirty = git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = {
        "commit": commit, "dirty_tree": dirty,
        "machine": machine,
        "rows": grouped,
        "failure": failure,
        "scale": scale,
        "notes": info,
        "not_measured": missing,
        "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in targets],
        "runs": rows,
    }
    tmp = out_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, out_path)
    print()
    print("results: {} (commit {}{})".format(out_path, commit, ", uncommitted changes" if dirty else ""))


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command, arguments = sys.argv[1], sys.argv[2:]
    commands = {"tag": cmd_tag, "pgbench-log": cmd_pgbench_log, "wrk-json": cmd_wrk_json,
                "machine": cmd_machine, "report": cmd_report}
    if command not in commands:
        sys.exit(__doc__)
    commands[command](arguments)


if __name__ == "__main__":
    main()
