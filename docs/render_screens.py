"""Render the analyst's desk to docs/desk-stories.png and docs/desk-story.png, from the seed articles.

Run from the repository root:

    .venv/bin/python docs/render_screens.py [--out-dir docs]

It builds a throwaway SQLite database with ``monitor import`` (the seeds, a wire reprint and another
story, as docs/render_digest.py does), starts ``monitor web`` on a free loopback port, and screenshots the
stories page and the main story's page with headless Chromium (``apt-get install -y chromium``), at a
phone-ish width so the pictures stay small. Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support import CHROMIUM, chromium, digest_corpus, free_port  # noqa: E402  (needs ROOT on sys.path; reads tests/data)

WIDTH = 480
SHOTS = {"desk-stories.png": ("/", 760), "desk-story.png": ("/stories/{story}", 1000)}


def _screenshot(url: str, out: Path, height: int) -> None:
    done = chromium("--hide-scrollbars", f"--window-size={WIDTH},{height}", f"--screenshot={out}", url)
    if done.returncode != 0 or not out.is_file():
        sys.exit(f"render_screens: chromium failed ({done.returncode}):\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshot the stories page and a story page of the seeds.")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs", help="where the PNGs go")
    options = parser.parse_args()
    if not CHROMIUM.is_file():
        sys.exit(f"render_screens: {CHROMIUM} not found; install it with: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="render-screens-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = digest_corpus(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env |= {"MONITOR_DATABASE_URL": f"sqlite:///{tmp / 'desk.db'}", "MONITOR_FEEDS_FILE": str(tmp / "none.yaml")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        monitor = [sys.executable, "-m", "monitor"]
        done = subprocess.run([*monitor, "import", str(corpus)], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"render_screens: monitor import failed:\n{done.stderr}")
        port = free_port()
        server = subprocess.Popen([*monitor, "web", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    top = httpx.get(f"{base}/api/stories", params={"limit": 1}, timeout=2).json()["items"][0]["id"]
                    break
                except (httpx.TransportError, KeyError, IndexError):
                    time.sleep(0.2)
            else:
                sys.exit("render_screens: monitor web did not answer")
            for name, (path, height) in SHOTS.items():
                out = options.out_dir.resolve() / name
                _screenshot(base + path.format(story=top), out, height)
                print(f"wrote {out} ({out.stat().st_size // 1024} KB, {WIDTH}x{height})")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
