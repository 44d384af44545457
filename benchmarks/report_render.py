"""Report rendering cost: time to render HTML and PDF from a results.json, and their sizes.

    auditor run examples/quickstart/audit.yaml
    python benchmarks/report_render.py [reports/quickstart/results.json] [--repeats 3]
"""
import argparse
import json
import statistics
import time
from pathlib import Path

from auditor.report import render_html, render_pdf


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="?", default="reports/quickstart/results.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    html_times, pdf_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        html = render_html(results)
        html_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        pdf = render_pdf(html)
        pdf_times.append(time.perf_counter() - start)
    cells = len(results["cells"])
    print(f"results: {args.results} ({cells} cells, {Path(args.results).stat().st_size / 1e6:.2f} MB)")
    print("| output | median seconds | size |\n|---|---:|---:|")
    print(f"| HTML | {statistics.median(html_times):.2f} | {len(html.encode()) / 1e6:.2f} MB |")
    print(f"| PDF | {statistics.median(pdf_times):.2f} | {len(pdf) / 1e6:.2f} MB |")
    print(f"| both | {statistics.median(h + p for h, p in zip(html_times, pdf_times)):.2f} | |")


if __name__ == "__main__":
    main()
