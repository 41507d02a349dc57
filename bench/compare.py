#!/usr/bin/env python3
"""The comparison table for Portcullis from one compare.sh run: rps, p50, p99 per target, the
ratios the performance targets name, RSS after the runs, the idle-connection figures, and each
target marked met or missed.

usage: compare.py RESULTS_DIR
  reads summary.json, rss.tsv, and when present idle.json (solo.py idle) and
  forward_auth.json; writes compare.md.

Targets (one run, one worker each):
  - warm HS256 >= 1.0x nginx-plain rps with p99 no worse than nginx's, and >= 0.95x the floor
    (floor/, a bare hyper proxy with its own pool, MODE=conn);
  - cold (jwt.cache = 0) >= 1.2x haproxy-jwt-<alg> for HS256, RS256 and ES256;
  - 10,000 idle keep-alive connections <= 100 MiB RSS above the idle baseline (nginx beside);
  - the cluster target (HS256 warm with [cluster]) is shown against HS256 warm.
"""
import json
import sys
from pathlib import Path

WARM_VS_NGINX = 1.0
WARM_VS_FLOOR = 0.95
COLD_VS_HAPROXY = 1.2
IDLE_MIB = 100.0


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
        if name not in t or peer not in t or not t[peer]["rps_median"]:
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
    lines += ["| target | median rps | p50 ms | p99 ms (max) | vs nginx-plain | vs floor | "
              "vs haproxy-jwt | vs node-jwt | RSS MiB (peak) | errors |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, o in t.items():
        cols = ["-"] * 5
        if name.startswith("portcullis-"):
            alg = name.split("-")[1]
            mem = rss.get(name)
            cols = [fmt(ratio(name, "nginx-plain")), fmt(ratio(name, "floor")),
                    fmt(ratio(name, f"haproxy-jwt-{alg}")), fmt(ratio(name, f"node-jwt-{alg}")),
                    f"{mem[0]:.1f} ({mem[1]:.1f})" if mem else "-"]
        elif name == "floor":
            cols[0] = fmt(ratio(name, "nginx-plain"))
        lines.append(f"| {name} | {o['rps_median']:.0f} | {o['p50_ms_median']:.3f} | "
                     f"{o['p99_ms_median']:.3f} ({o['p99_ms_max']:.3f}) | " + " | ".join(cols)
                     + f" | {o['errors']} |")

    verdicts = []  # (what, met or None when not measured, figure)
    warm = "portcullis-hs256"
    vs_nginx, vs_floor = ratio(warm, "nginx-plain"), ratio(warm, "floor")
    if vs_nginx is not None:
        ours_p99, nginx_p99 = t[warm]["p99_ms_median"], t["nginx-plain"]["p99_ms_median"]
        verdicts.append((f"warm HS256 >= {WARM_VS_NGINX}x nginx-plain rps, p99 no worse",
                         vs_nginx >= WARM_VS_NGINX and ours_p99 <= nginx_p99,
                         f"{vs_nginx:.2f}x; p99 {ours_p99:.3f} ms vs nginx's {nginx_p99:.3f} ms"))
    else:
        verdicts.append((f"warm HS256 >= {WARM_VS_NGINX}x nginx-plain", None, "not measured"))
    verdicts.append((f"warm HS256 >= {WARM_VS_FLOOR}x the floor (MODE=conn)",
                     None if vs_floor is None else vs_floor >= WARM_VS_FLOOR,
                     "not measured" if vs_floor is None else
                     f"{vs_floor:.2f}x (floor {ratio('floor', 'nginx-plain') or 0:.2f}x nginx-plain)"))
    for alg in ("hs256", "rs256", "es256"):
        r = ratio(f"portcullis-{alg}-cold", f"haproxy-jwt-{alg}")
        verdicts.append((f"cold {alg.upper()} >= {COLD_VS_HAPROXY}x haproxy-jwt-{alg}",
                         None if r is None else r >= COLD_VS_HAPROXY,
                         "not measured" if r is None else f"{r:.2f}x"))
    cluster = ratio("portcullis-hs256-cluster", warm)
    lines_extra = []
    if cluster is not None:
        lines_extra.append(f"- cluster: portcullis-hs256-cluster is {cluster:.2f}x portcullis-hs256 "
                           f"(warm, [cluster] on a local redis-server)")
    else:
        lines_extra.append("- cluster: portcullis-hs256-cluster not measured (skipped or not selected)")

    idle_path = d / "idle.json"
    if idle_path.exists():
        idle = json.loads(idle_path.read_text())
        conns = idle["conns"]
        ours = idle.get("portcullis")
        nginx = idle.get("nginx")
        above = (ours[1] - ours[0]) / 1024 if ours else None
        scaled = above * 10000 / conns if above is not None else None
        peer = ""
        if nginx:
            peer = (f"; nginx {(nginx[1] - nginx[0]) / 1024:.1f} MiB "
                    f"({(nginx[1] - nginx[0]) / conns:.2f} KiB per connection)")
        verdicts.append((f"10,000 idle keep-alive connections <= {IDLE_MIB:.0f} MiB above baseline",
                         None if scaled is None else scaled <= IDLE_MIB,
                         f"{above:.1f} MiB for {conns} ({(ours[1] - ours[0]) / conns:.2f} KiB "
                         f"per connection){peer}"))
    else:
        verdicts.append((f"10,000 idle keep-alive connections <= {IDLE_MIB:.0f} MiB", None,
                         "not measured (IDLE=0)"))

    fa_path = d / "forward_auth.json"
    if fa_path.exists():
        fa = json.loads(fa_path.read_text())
        for name, fig in fa.items():
            lines_extra.append(
                f"- {name}: {fig['rps']} decisions/s (p50 {fig['p50_ms']} ms, p99 {fig['p99_ms']} ms, "
                f"{fig['cpu_us']} us CPU per decision, {fig['errors']} errors)")

    lines += ["", "Targets (one run):", ""]
    for what, ok, got in verdicts:
        mark = "n/a   " if ok is None else ("met   " if ok else "MISSED")
        lines.append(f"- {mark} {what}: {got}")
    lines += [""] + lines_extra
    text = "\n".join(lines) + "\n"
    (d / "compare.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
