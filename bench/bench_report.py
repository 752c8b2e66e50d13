"""Time the report step alone: rebuild a report folder from a run's results.json and print the wall
time and the sizes of report.html / report.md.

    python bench/bench_report.py runs/demo/report [--out /tmp/report-again] [--repeat 2]

Wall time depends on what else the machine runs; the CPU time of this process does not (much).
Models are not refitted: everything the report shows is in results.json (gallery thumbnails are read
from the sample files it names, saliency maps are stored in it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="a report folder (with results.json)")
    ap.add_argument("--out", type=Path, default=None, help="where to write the rebuilt report (default: REPORT-again)")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    from medfuse.report import write_report

    results = json.loads((args.report / "results.json").read_text())
    out = args.out or args.report.with_name(args.report.name + "-again")
    ok = [n for n, p in results["pipelines"].items() if p.get("status") == "ok"]
    for i in range(args.repeat):
        t, cpu = time.perf_counter(), time.process_time()
        paths = write_report(json.loads(json.dumps(results)), out)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        html, md = paths["html"].stat().st_size, paths["md"].stat().st_size
        figures = sum(1 for p in (out / "figures").rglob("*") if p.is_file())
        print(f"run {i + 1}: {len(ok)} pipelines, report rendered in {seconds:.2f} s wall, {cpu:.2f} s CPU; report.html {html / 1e6:.2f} MB, "
              f"report.md {md / 1e3:.0f} kB, {figures} figure/gallery files")


if __name__ == "__main__":
    main()
