"""The artifact store on s3:// (a local moto server) against raw s3fs, and s3:// against file://.

python benchmarks/bench_store.py [--big-mib 1024] [--small 1000] [--steps 20] [--json]

Starts `moto_server` on a free loopback port (pip install -e '.[dev]'). Side by side, in one
run: uploading and downloading 1 file of `--big-mib` MiB and `--small` files of 10 KiB through
the engine's ArtifactStore (sha256 computed and checked, write-once) and through raw s3fs
calls (`put_file`/`get_file` for one file, batched `put`/`get` for many: what `aws s3 cp`
and `aws s3 cp --recursive` do). Then `sluice run` of a `--steps`-step chain of real Docker
busybox steps, each passing a small output to the next, with `artifacts:` on file:// and on
s3://: the per-step cost of the remote store. Needs Docker and sluice-test/busybox:1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from engine.adapters.artifacts import ArtifactStore  # noqa: E402

MiB = 1024 * 1024


@contextmanager
def moto() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline and server.poll() is None, "moto did not start"
            time.sleep(0.05)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="bench",
            AWS_SECRET_ACCESS_KEY="bench",
            AWS_DEFAULT_REGION="us-east-1",
        )
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


def bucket(endpoint: str, name: str) -> str:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{name}", method="PUT")).close()
    return name


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def files(root: Path, big_mib: int, small: int) -> tuple[Path, list[Path]]:
    big = root / "big.bin"
    block = os.urandom(MiB)
    with big.open("wb") as out:
        for n in range(big_mib):
            out.write(n.to_bytes(8, "big") + block[8:])
    (root / "small").mkdir()
    smalls = []
    for n in range(small):
        path = root / "small" / f"f{n:05d}.bin"
        path.write_bytes(n.to_bytes(8, "big") + os.urandom(10 * 1024 - 8))
        smalls.append(path)
    return big, smalls


def store_vs_raw(endpoint: str, root: Path, big: Path, smalls: list[Path]) -> dict[str, float]:
    import s3fs

    engine = ArtifactStore(f"s3://{bucket(endpoint, 'engine')}/artifacts", root)
    raw = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
    bucket(endpoint, "raw")
    out = root / "out"
    out.mkdir()
    got: dict[str, float] = {}
    got["big_put_raw"] = timed(lambda: raw.put_file(str(big), "raw/big.bin"))
    start = time.perf_counter()
    pointer = engine.put_file(big)
    got["big_put_store"] = time.perf_counter() - start
    got["big_get_raw"] = timed(lambda: raw.get_file("raw/big.bin", str(out / "raw-big.bin")))
    got["big_get_store"] = timed(lambda: engine.get_file(pointer, out / "store-big.bin"))
    for path in (out / "raw-big.bin", out / "store-big.bin"):
        path.unlink()
    names = [f"raw/small/{p.name}" for p in smalls]
    got["small_put_raw"] = timed(lambda: raw.put([str(p) for p in smalls], names))
    pointers: list[object] = []
    got["small_put_store"] = timed(lambda: pointers.extend(engine.put_files(smalls)))
    dests = [out / "raw-small" / p.name for p in smalls]
    got["small_get_raw"] = timed(lambda: raw.get(names, [str(d) for d in dests]))
    pairs = [(p, out / "store-small" / s.name) for p, s in zip(pointers, smalls, strict=True)]
    got["small_get_store"] = timed(lambda: engine.get_files(pairs))
    return got


def chain(endpoint: str, root: Path, steps: int, store: str) -> float:
    """Seconds for `sluice run` of a `steps`-step busybox chain, each passing a file on."""
    repo = root / f"chain-{store.split(':')[0]}"
    (repo / "pipelines").mkdir(parents=True)
    lines = ["name: chain", "steps:"]
    for n in range(steps):
        lines += [
            f"  - name: s{n}",
            "    image: sluice-test/busybox:1",
            "    workspace: false",
            *([f"    needs: [s{n - 1}]"] if n else []),
            f"    run: echo {n} > $SLUICE_OUTPUTS/out{n}.txt",
        ]
    (repo / "pipelines" / "chain.yaml").write_text("\n".join(lines) + "\n")
    (repo / "sluice.yaml").write_text(f"artifacts: {store}\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "c"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    command = [sys.executable, "-m", "engine", "--repo", str(repo), "run", "chain", "--no-cache"]
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, moto() as endpoint:
        root = Path(folder)
        big, smalls = files(root, args.big_mib, args.small)
        got = store_vs_raw(endpoint, root, big, smalls)
        if args.steps:
            got["chain_file"] = chain(endpoint, root, args.steps, f"file://{root / 'files'}")
            got["chain_s3"] = chain(
                endpoint, root, args.steps, f"s3://{bucket(endpoint, 'chain')}/a"
            )
    if args.json:
        print(json.dumps(got, indent=2))
        return
    for kind, size in (("big", args.big_mib * MiB), ("small", args.small * 10 * 1024)):
        for way in ("put", "get"):
            raw, store = got[f"{kind}_{way}_raw"], got[f"{kind}_{way}_store"]
            print(
                f"{kind:5} {way}: raw s3fs {raw:6.2f}s ({size / MiB / raw:6.1f} MiB/s)  "
                f"store {store:6.2f}s ({size / MiB / store:6.1f} MiB/s)  "
                f"{(store / raw - 1) * 100:+.0f} %"
            )
    if "chain_file" in got:
        extra = (got["chain_s3"] - got["chain_file"]) / args.steps
        print(
            f"{args.steps}-step chain: file:// {got['chain_file']:.1f}s, "
            f"s3:// {got['chain_s3']:.1f}s, {extra * 1000:+.0f} ms a step"
        )


if __name__ == "__main__":
    main()
