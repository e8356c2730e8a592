"""Mermaid's own renderer and headless Chromium, for the tests of what the engine writes.

`render_mermaid` runs `@mermaid-js/mermaid-cli` (tests/node, installed by
scripts/node-tools.sh) with Debian's Chromium; a diagram mermaid cannot parse fails the test
with mmdc's message. `screenshot` and `dump_dom` open a page in headless Chromium.
`png_pixels` decodes the screenshots (8-bit RGB/RGBA, as Chromium writes them) without
an imaging library. A missing tool skips the test, except under CI=true, where it fails it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"
MMDC = NODE_DIR / "node_modules" / ".bin" / "mmdc"
_BLOCK = re.compile(r"^```mermaid\n(.*?)\n```$", re.S | re.M)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def missing() -> str | None:
    """Why mermaid's renderer cannot run here; None when it can."""
    if chromium() is None:
        return "chromium is not installed (bash scripts/node-tools.sh installs Debian's)"
    if not MMDC.exists():
        return "mermaid-cli is not installed in tests/node (bash scripts/node-tools.sh)"
    return None


def require() -> None:
    """Skip (fail under CI=true) when mmdc or Chromium is missing."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the renderer tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


def mermaid_blocks(markdown: str) -> list[str]:
    """The body of every ```mermaid block, in order."""
    return _BLOCK.findall(markdown)


def _puppeteer_config(folder: Path) -> Path:
    config = folder / "puppeteer.json"
    # Debian's Chromium, not a browser puppeteer downloads; no sandbox as root in a container
    browser = {"executablePath": chromium(), "args": ["--no-sandbox", "--disable-gpu"]}
    config.write_text(json.dumps(browser))
    return config


def render_mermaid(diagram: str, out: Path) -> Path:
    """`out` (.svg or .png) rendered by mmdc; AssertionError with mmdc's output when mermaid
    refuses the diagram."""
    require()
    out.parent.mkdir(parents=True, exist_ok=True)
    source = out.with_suffix(".mmd")
    source.write_text(diagram)
    done = subprocess.run(
        [
            str(MMDC),
            "-q",
            "-p",
            str(_puppeteer_config(out.parent)),
            "-i",
            str(source),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0 and out.exists(), f"mermaid refused the diagram:\n{said}\n{diagram}"
    assert "Parse error" not in said and "Syntax error" not in said, said
    if out.suffix == ".svg":
        assert "Syntax error" not in out.read_text(), f"mermaid drew an error:\n{diagram}"
    return out


def render_markdown(markdown: str, folder: Path) -> list[str]:
    """Every mermaid block of `markdown` drawn by one mmdc run (one browser): their SVGs, in
    order; AssertionError with mmdc's message when mermaid refuses one."""
    require()
    folder.mkdir(parents=True, exist_ok=True)
    source, out = folder / "source.md", folder / "out.md"
    source.write_text(markdown)
    command = [str(MMDC), "-q", "-p", str(_puppeteer_config(folder))]
    done = subprocess.run(
        [*command, "-i", str(source), "-o", str(out), "-e", "svg"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, f"mermaid refused a diagram:\n{said}"
    count = len(mermaid_blocks(markdown))
    drawn = [folder / f"out-{i}.svg" for i in range(1, count + 1)]
    assert all(path.exists() for path in drawn), said
    svgs = [path.read_text() for path in drawn]
    for svg, block in zip(svgs, mermaid_blocks(markdown), strict=True):
        assert "Syntax error" not in svg, f"mermaid drew an error for:\n{block}"
    return svgs


def _browser(*args: str) -> subprocess.CompletedProcess[str]:
    require()
    command = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def dump_dom(page: Path) -> str:
    """The page's DOM after Chromium loaded it (`--dump-dom`)."""
    done = _browser("--dump-dom", page.resolve().as_uri())
    assert done.returncode == 0, done.stderr
    return done.stdout


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 900) -> Path:
    """A PNG of the page as headless Chromium draws it."""
    done = _browser(
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--screenshot={out.resolve()}",
        page.resolve().as_uri(),
    )
    assert done.returncode == 0 and out.exists(), done.stderr
    return out


def png_pixels(png: Path) -> Counter[tuple[int, int, int]]:
    """How many pixels of each RGB colour an 8-bit, non-interlaced RGB or RGBA PNG has."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    size = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * size
    previous = bytearray(stride)
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(kind, line, previous, size)
        counts.update(zip(line[0::size], line[1::size], line[2::size], strict=True))
        previous = line
    return counts


def _unfilter(kind: int, line: bytearray, above: bytearray, size: int) -> None:
    if kind == 0:
        return
    if kind == 2:
        for i in range(len(line)):
            line[i] = (line[i] + above[i]) & 0xFF
        return
    for i in range(len(line)):
        left = line[i - size] if i >= size else 0
        if kind == 1:
            line[i] = (line[i] + left) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + ((left + above[i]) >> 1)) & 0xFF
        elif kind == 4:
            up_left = above[i - size] if i >= size else 0
            guess = left + above[i] - up_left
            pa, pb, pc = abs(guess - left), abs(guess - above[i]), abs(guess - up_left)
            best = left if pa <= pb and pa <= pc else above[i] if pb <= pc else up_left
            line[i] = (line[i] + best) & 0xFF
        else:
            raise AssertionError(f"PNG filter {kind}")


def hex_colour(text: str) -> tuple[int, int, int]:
    """`#d4760b` -> (212, 118, 11)."""
    value = text.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
