#!/usr/bin/env python3
"""Charts of the benchmark reports: one PNG per <program>.json that a bench program wrote with --out.

    python bench/plot_results.py build/bench-results            # every *.json in the folder
    python bench/plot_results.py a.json b.json --out charts/

For each report, one panel per limit: the throughput (GB/s) of every measurement taken against
that limit as bars, the limit itself as a dashed line, each bar labelled with its ratio to the
limit ("LIMIT SUSPECT" where a measurement beat its limit by more than 5%, which means the limit
is wrong). Measurements that are times without a throughput (open time, blocking time) get a panel
of their own in milliseconds, with the goal's bound as a line where there is one.

Needs matplotlib; without it the script says how to install it and exits with status 1.
"""
import argparse
import json
import os
import sys
import textwrap

COLORS = {"limit": "#7f7f7f", "ckptio": "#1f77b4", "peer": "#ff7f0e", "reference": "#9467bd"}


def load_reports(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(p, f) for f in os.listdir(p) if f.endswith(".json"))
        else:
            files.append(p)
    reports = []
    for f in files:
        with open(f) as fh:
            data = json.load(fh)
        if isinstance(data, dict) and "rows" in data and "program" in data:
            reports.append((f, data))
    return reports


def note_lines(limit):
    """The limit's note (the fastest raw variant and the others' times), wrapped to the panel."""
    return textwrap.wrap(limit.get("note", ""), 130) if limit else []


def throughput_panels(report):
    rows = [r for r in report["rows"] if r.get("gbps")]
    by_name = {r["name"]: r for r in rows}
    panels, placed = [], set()
    for limit in (r for r in rows if r["group"] == "limit"):
        members = [r for r in rows if r.get("limit") == limit["name"]]
        if members:
            panels.append((limit, members))
            placed.update(r["name"] for r in members)
            placed.add(limit["name"])
    rest = [r for r in rows if r["name"] not in placed]
    if rest:
        panels.append((None, rest))
    return panels, by_name


def time_rows(report):
    return [r for r in report["rows"] if r.get("seconds") is not None and not r.get("gbps")]


def draw(report, out_path, plt):
    panels, _ = throughput_panels(report)
    times = time_rows(report)
    n = len(panels) + (1 if times else 0)
    if n == 0:
        return False
    # Room for the title's wrapped note lines too.
    heights = [max(1.6, 0.45 * len(m) + 1.1) + 0.15 * len(note_lines(limit)) for limit, m in panels]
    if times:
        heights.append(max(1.6, 0.45 * len(times) + 1.1))
    fig_height = sum(heights) + 1.2
    fig, axes = plt.subplots(n, 1, figsize=(10, fig_height),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = [a[0] for a in axes]
    for ax, (limit, members) in zip(axes, panels):
        names = [m["name"] for m in members]
        values = [m["gbps"] for m in members]
        ax.barh(names, values, color=[COLORS.get(m["group"], "#333333") for m in members])
        ax.invert_yaxis()
        top = max(values + ([limit["gbps"]] if limit else []))
        for i, m in enumerate(members):
            label = f"{m['gbps']:.2f} GB/s"
            if m.get("vs_limit") is not None:
                label += f"  {m['vs_limit']:.2f}x limit"
            if m.get("limit_suspect"):
                label += "  LIMIT SUSPECT"
            # Right of the bar, and right of the dashed limit line where the bar is shorter.
            x = max(m["gbps"], limit["gbps"] if limit else 0) + top * 0.01
            ax.text(x, i, label, va="center", fontsize=8,
                    color="red" if m.get("limit_suspect") else "black")
        if limit:
            ax.axvline(limit["gbps"], color="black", linestyle="--", linewidth=1.2)
            ax.set_title(f"against the limit: {limit['name']} = {limit['gbps']:.2f} GB/s (dashed)\n"
                         + "\n".join(note_lines(limit)), fontsize=8, loc="left")
        else:
            ax.set_title("without a limit", fontsize=8, loc="left")
        ax.set_xlim(0, top * 1.45)
        ax.set_xlabel("GB/s (1e9 bytes per second), higher is better", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    if times:
        ax = axes[-1]
        bounds = {g["row"]: g for g in report.get("goals", []) if g.get("kind") == "at most" and g.get("row")}
        names = [r["name"] for r in times]
        values = [r["seconds"] * 1e3 for r in times]
        ax.barh(names, values, color=[COLORS.get(r["group"], "#333333") for r in times])
        ax.invert_yaxis()
        top = max(values)
        for i, (r, v) in enumerate(zip(times, values)):
            label = f"{v:.3g} ms"
            goal = bounds.get(r["name"])
            if goal and goal.get("unit") == "ms":
                ax.plot([goal["target"]] * 2, [i - 0.4, i + 0.4], color="black", linestyle="--")
                label += f"  (goal <= {goal['target']:g} ms: {goal['status']})"
                top = max(top, goal["target"])
            bound = goal["target"] if goal and goal.get("unit") == "ms" else 0
            ax.text(max(v, bound) + top * 0.01, i, label, va="center", fontsize=8)
        ax.set_xlim(0, top * 1.6)
        ax.set_xlabel("milliseconds, lower is better (dashed: the goal's bound)", fontsize=8)
        ax.set_title("times without a throughput", fontsize=8, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{report['program']}: {report.get('title', '')}", fontsize=11)
    shown = list(COLORS)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[g]) for g in shown]
    handles.append(plt.Line2D([0], [0], color="black", linestyle="--"))
    fig.legend(handles, shown + ["limit (line) / goal bound"], loc="lower center", fontsize=8, ncol=5)
    # Room for the legend under the last panel's axis label, and for the title above.
    fig.tight_layout(rect=(0, 0.45 / fig_height, 1, 1 - 0.35 / fig_height))
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="report JSON files or folders holding them")
    parser.add_argument("--out", help="folder for the PNGs (default: next to each JSON)")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"plot_results.py: matplotlib is not installed for {sys.executable}; install it with\n"
              f"  {sys.executable} -m pip install matplotlib\nand run this again.", file=sys.stderr)
        return 1
    reports = load_reports(args.inputs)
    if not reports:
        print("plot_results.py: no benchmark report (*.json written with --out) found", file=sys.stderr)
        return 1
    for path, report in reports:
        folder = args.out or os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        out = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".png")
        if draw(report, out, plt):
            print(f"plot_results.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
