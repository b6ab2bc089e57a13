"""Render the digest e-mail to docs/digest.png, from the real seed articles through the real CLI.

Run from the repository root:

    .venv/bin/python docs/render_digest.py [--out docs/digest.png] [--height 760]

It builds a throwaway directory (corpus, feeds.yaml, SQLite database), runs ``monitor import`` and
``monitor digest matin --preview`` as subprocesses, then screenshots the HTML with headless Chromium
(Debian's ``chromium`` package, ``apt-get install -y chromium``). Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import CHROMIUM, chromium, digest_corpus  # noqa: E402  (needs ROOT on sys.path; reads tests/data)

AT = "2024-11-07T06:00:00+00:00"  # 07:00 in Paris, as in tests/digests/test_digests.py
WIDTH = 720
HEIGHT = 760  # the whole digest (two stories, ends near y=735 with these fonts) plus the 16 px page margin

FEEDS_YAML = """\
feeds:
  - {name: Exemple, url: "https://www.example.fr/feed/"}
digests:
  - name: matin
    recipients: [veille@example.fr]
    schedule: "0 7 * * *"
    period: 4d
"""


def _monitor(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``python -m monitor ARGS``; its output, or exit with it if the command fails."""
    command = [sys.executable, "-m", "monitor", *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        sys.exit(f"render_digest: `monitor {' '.join(args)}` failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def _screenshot(html: Path, out: Path, height: int) -> None:
    done = chromium("--hide-scrollbars", f"--window-size={WIDTH},{height}", f"--screenshot={out}", html.as_uri())
    if done.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        sys.exit(f"render_digest: chromium failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Render the 'matin' digest of the seed corpus to a PNG.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "digest.png", help="PNG to write")
    parser.add_argument("--height", type=int, default=HEIGHT, help=f"window height in pixels (default {HEIGHT})")
    options = parser.parse_args()
    if not CHROMIUM.is_file():
        sys.exit(f"render_digest: {CHROMIUM} not found; install it with: apt-get install -y chromium")
    out: Path = options.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="render-digest-") as tmp_name:
        tmp = Path(tmp_name)
        digest_corpus(tmp)  # writes tmp/corpus.jsonl
        (tmp / "feeds.yaml").write_text(FEEDS_YAML, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}  # no stray settings
        env["MONITOR_DATABASE_URL"] = f"sqlite:///{tmp / 'digest.db'}"
        env["MONITOR_FEEDS_FILE"] = str(tmp / "feeds.yaml")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env["COLUMNS"] = "200"  # keep rich from wrapping the one-line messages
        for line in (
            _monitor(["import", "corpus.jsonl"], tmp, env),
            _monitor(["digest", "matin", "--preview", "digest.html", "--at", AT], tmp, env),
        ):
            if line:
                print(line)
        _screenshot(tmp / "digest.html", out, options.height)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB, {WIDTH}x{options.height})")


if __name__ == "__main__":
    main()
