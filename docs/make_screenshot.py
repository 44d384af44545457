"""Screenshot of the first page of the quickstart report for the README (headless Chromium).

    auditor run examples/quickstart/audit.yaml    # writes reports/quickstart/report.html
    python docs/make_screenshot.py                # -> docs/report-first-page.png
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "quickstart" / "report.html"
OUT = ROOT / "docs" / "report-first-page.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1100,900"]


def main() -> int:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None or not REPORT.exists():
        print("needs chromium and reports/quickstart/report.html (run the quickstart first)")
        return 2
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={OUT}",
                        REPORT.as_uri()], check=True, capture_output=True, timeout=120)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
