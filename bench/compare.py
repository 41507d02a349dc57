#!/usr/bin/env python3
"""The comparison table for Portcullis from one run.sh result: rps, p50, p99 per target, the
ratio of each Portcullis target to nginx-plain, haproxy-jwt-<alg> and node-jwt-<alg>, its RSS
after the run, and the issue's targets marked met or missed.

usage: compare.py RESULTS_DIR      (reads summary.json and rss.tsv; writes compare.md)
"""
import json
import sys
from pathlib import Path

TARGETS = {
    "warm_vs_nginx": 1.0,  # rps >= 1.0x nginx-plain, and p99 <= nginx-plain's
    "cold_vs_haproxy": 1.2,  # HS256, RS256, ES256 (HAProxy 2.6 has no EdDSA)
    "vs_node": 6.0,
    "rss_mib": 32.0,
}


def main():
    d = Path(sys.argv[1])
    summary = json.loads((d / "summary.json").read_text())
    t = summary["targets"]
    rss = {}
    if (d / "rss.tsv").exists():
        for line in (d / "rss.tsv").read_text().splitlines():
            name, kib, hwm = line.split("\t")
            rss[name] = (int(kib) / 1024, int(hwm) / 1024)

    def ratio(name, peer):
        if peer not in t or not t[peer]["rps_median"]:
            return None
        return t[name]["rps_median"] / t[peer]["rps_median"]

    def fmt(r):
        return "-" if r is None else f"{r:.2f}x"

    lines = []
    meta = (d / "meta.txt").read_text().strip() if (d / "meta.txt").exists() else ""
    lines += ["```", meta, "```", ""]
    cpu = summary.get("cpu")
    if cpu:
        lines += [f"CPU steal over the run: {cpu['steal_pct']:.2f}% (idle {cpu['idle_pct']:.1f}%)", ""]
    lines += ["| target | median rps | p50 ms | p99 ms (max) | vs nginx-plain | vs haproxy-jwt | "
              "vs node-jwt | RSS MiB (peak) | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for name, o in t.items():
        cols = ["-", "-", "-", "-"]
        if name.startswith("portcullis-"):
            alg = name.split("-")[1]
            cold = name.endswith("-cold")
            vs_nginx = ratio(name, "nginx-plain")
            vs_hap = ratio(name, f"haproxy-jwt-{alg}")
            vs_node = ratio(name, f"node-jwt-{alg}")
            mem = rss.get(name)
            cols = [fmt(vs_nginx), fmt(vs_hap), fmt(vs_node),
                    f"{mem[0]:.1f} ({mem[1]:.1f})" if mem else "-"]
            if not cold and vs_nginx is not None:
                p99_ok = o["p99_ms_median"] <= t["nginx-plain"]["p99_ms_median"]
                verdicts.append((f"{name}: >= {TARGETS['warm_vs_nginx']}x nginx-plain rps, p99 <= nginx's",
                                 vs_nginx >= TARGETS["warm_vs_nginx"] and p99_ok,
                                 f"{vs_nginx:.2f}x, p99 {o['p99_ms_median']:.3f} vs "
                                 f"{t['nginx-plain']['p99_ms_median']:.3f} ms"))
            if cold and vs_hap is not None:
                verdicts.append((f"{name}: >= {TARGETS['cold_vs_haproxy']}x haproxy-jwt-{alg}",
                                 vs_hap >= TARGETS["cold_vs_haproxy"], f"{vs_hap:.2f}x"))
            if vs_node is not None:
                verdicts.append((f"{name}: >= {TARGETS['vs_node']}x node-jwt-{alg}",
                                 vs_node >= TARGETS["vs_node"], f"{vs_node:.2f}x"))
            if not cold and mem:
                verdicts.append((f"{name}: RSS <= {TARGETS['rss_mib']:.0f} MiB after its runs",
                                 mem[0] <= TARGETS["rss_mib"], f"{mem[0]:.1f} MiB"))
        lines.append(f"| {name} | {o['rps_median']:.0f} | {o['p50_ms_median']:.3f} | "
                     f"{o['p99_ms_median']:.3f} ({o['p99_ms_max']:.3f}) | " + " | ".join(cols)
                     + f" | {o['errors']} |")
    lines += ["", "Targets (issue 7):", ""]
    for what, ok, got in verdicts:
        lines.append(f"- {'met   ' if ok else 'MISSED'} {what}: {got}")
    text = "\n".join(lines) + "\n"
    (d / "compare.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
