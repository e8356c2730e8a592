"""What a hostile step can do to its host: processes, privileges, capabilities, environment.

Issue 12, item 4: a step spawning 2,000 processes had `pids.max` = max, kept every capability
Docker grants by default, and could gain privileges through setuid binaries. Now a step gets a
pids limit (`resources.pids`, default 1024), `no-new-privileges`, and only the capabilities
ordinary root steps need (`capabilities:` adds more). Also kept under test: a step sees only
SLUICE_* and its declared env, no Docker socket, and `network: none` leaves only loopback.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import docker
import pytest
from conftest import ROOT, make_repo, poll, sluice

from engine.core.spec import DEFAULT_CAPABILITIES, DEFAULT_PIDS

# Bit numbers of capabilities(7), to read a container's CapEff mask.
_BITS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6}
_BITS |= {"SETUID": 7, "NET_BIND_SERVICE": 10, "NET_RAW": 13}


def _mask(names: list[str] | tuple[str, ...]) -> int:
    return sum(1 << _BITS[n] for n in names)


def _lines(stderr: str, step: str, key: str) -> list[str]:
    return re.findall(rf"\[{step}\] {key}=(.*)", stderr)


# Spawns 2,000 `sleep 30` in a subshell (ash gives up at the first fork that fails), then
# counts the processes with builtins only (a fork may be impossible), reads the cgroup's
# limit, and kills everything it started.
FORK_LOOP = r"""
( i=0; while [ $i -lt 2000 ]; do sleep 30 & i=$((i+1)); done ) 2>/dev/null
n=0; for p in /proc/[0-9]*; do n=$((n+1)); done
for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do
  [ -e $f ] && read m < $f
done
echo procs=$n
echo pidsmax=$m
kill -9 -1 2>/dev/null; wait
"""


@pytest.mark.docker
def test_a_fork_loop_stops_at_the_default_pids_limit(tmp_path: Path, busybox_image: str) -> None:
    """Before: procs=2002 and pids.max=max. Now the 2,000 forks stop at 1024 processes."""
    fork = FORK_LOOP.replace("\n", "\n" + " " * 14)
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: forks
        steps:
          - name: bomb
            image: {busybox_image}
            timeout: 60s
            run: |
              {fork}
          - name: more
            image: {busybox_image}
            resources: {{pids: 1500}}
            timeout: 60s
            run: |
              {fork}
        """
        },
    )
    done = sluice("run", "forks", repo=repo, process=True, timeout=180)
    assert done.returncode == 0, done.stderr
    (procs,) = _lines(done.stderr, "bomb", "procs")
    assert _lines(done.stderr, "bomb", "pidsmax") == [str(DEFAULT_PIDS)]
    assert 100 < int(procs) <= DEFAULT_PIDS  # it did fork, up to the limit and no further
    (more,) = _lines(done.stderr, "more", "procs")
    assert _lines(done.stderr, "more", "pidsmax") == ["1500"]
    assert DEFAULT_PIDS < int(more) <= 1500  # `resources.pids` overrides the default


@pytest.mark.docker
def test_the_container_drops_capabilities_and_new_privileges(
    tmp_path: Path, busybox_image: str, docker_client: docker.DockerClient
) -> None:
    """HostConfig as Docker holds it while the step runs; the engine is then interrupted."""
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: held
        steps:
          - name: wait
            image: {busybox_image}
            capabilities: [cap_net_bind_service]
            resources: {{pids: 64}}
            run: sleep 120
        """
        },
    )
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "--repo", str(repo), "run", "held"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def running() -> list[docker.models.containers.Container]:
            found = docker_client.containers.list(filters={"label": "sluice.pipeline=held"})
            return list(found)

        (container,) = poll(running, 60, "the step's container")
        host = docker_client.api.inspect_container(container.id)["HostConfig"]
    finally:
        engine.send_signal(signal.SIGINT)
        _, err = engine.communicate(timeout=60)
    assert engine.returncode == 130, err
    assert host["PidsLimit"] == 64
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted([*DEFAULT_CAPABILITIES, "NET_BIND_SERVICE"])
    assert host["Privileged"] is False


ROOT_CHORES = r"""
set -e
mkdir -p /srv/data && echo hi > /srv/data/f
chown 1000:1000 /srv/data/f && chmod 600 /srv/data/f && chown -R 1000 /srv/data
cat /srv/data/f > /dev/null
echo caps=$(grep CapEff /proc/self/status | cut -f2)
echo nnp=$(grep NoNewPrivs /proc/self/status | cut -f2)
if ping -c1 -W1 127.0.0.1 >/dev/null 2>&1; then echo ping=yes; else echo ping=no; fi
"""

PIP_CHORES = r"""
set -e
mkdir -p /tmp/pkg/m && touch /tmp/pkg/m/__init__.py
printf 'from setuptools import setup\nsetup(name="m", version="1", packages=["m"])\n' \
  > /tmp/pkg/setup.py
pip install -q --no-index --no-build-isolation /tmp/pkg 2>/dev/null
python -c 'import m'
chown -R nobody /tmp/pkg
echo who=$(su -s /bin/sh nobody -c 'id -u')
"""


@pytest.mark.docker
def test_ordinary_root_steps_still_work_and_capabilities_come_back_by_name(
    tmp_path: Path, busybox_image: str, python_image: str
) -> None:
    """Writing files as root, chown, chmod, pip install and su work with the default set;
    a dropped capability (NET_RAW: ping) comes back with `capabilities:`."""
    chores = ROOT_CHORES.replace("\n", "\n" + " " * 14)
    pip = PIP_CHORES.replace("\n", "\n" + " " * 14)
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: chores
        steps:
          - name: plain
            image: {busybox_image}
            run: |
              {chores}
          - name: raw
            image: {busybox_image}
            capabilities: [NET_RAW]
            run: |
              {chores}
          - name: pip
            image: {python_image}
            run: |
              {pip}
        """
        },
    )
    done = sluice("run", "chores", "--json", repo=repo, process=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert _lines(done.stderr, "plain", "caps") == [f"{_mask(DEFAULT_CAPABILITIES):016x}"]
    assert _lines(done.stderr, "plain", "nnp") == ["1"]
    assert _lines(done.stderr, "plain", "ping") == ["no"]  # NET_RAW is dropped
    assert _lines(done.stderr, "raw", "caps") == [
        f"{_mask([*DEFAULT_CAPABILITIES, 'NET_RAW']):016x}"
    ]
    assert _lines(done.stderr, "raw", "ping") == ["yes"]
    assert _lines(done.stderr, "pip", "who") == ["65534"]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("capabilities: [ALL]", "'ALL' is not accepted"),
        ("capabilities: [NET_BIND]", "'NET_BIND' is not a Linux capability"),
        ("capabilities: NET_RAW", "capabilities"),
        ("resources: {pids: 0}", "pids"),
        ("resources: {pids: many}", "pids"),
    ],
)
def test_bad_limits_and_capabilities_are_refused(tmp_path: Path, field: str, message: str) -> None:
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: bad
        steps:
          - name: s
            image: busybox
            {field}
            run: "true"
        """
        },
    )
    done = sluice("validate", repo=repo)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_the_schema_documents_pids_and_capabilities(tmp_path: Path) -> None:
    done = sluice("schema")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert '"pids"' in text and '"capabilities"' in text


HELD = r"""
env | cut -d= -f1 | sort | tr '\n' ' ' | sed 's/^/env=/'; echo
for s in /var/run/docker.sock /run/docker.sock; do [ -e $s ] && echo socket=$s; done
echo nets=$(ls /sys/class/net | tr '\n' ' ')
"""


@pytest.mark.docker
def test_a_step_sees_only_its_env_no_socket_and_only_loopback(
    tmp_path: Path, busybox_image: str
) -> None:
    """What held in the probe: only SLUICE_* and declared env, no socket, loopback only."""
    held = HELD.replace("\n", "\n" + " " * 14)
    repo = make_repo(
        tmp_path,
        {
            "p.yaml": f"""
        name: held-env
        steps:
          - name: look
            image: {busybox_image}
            env: {{MINE: "1"}}
            run: |
              {held}
        """
        },
    )
    done = sluice("run", "held-env", repo=repo, process=True, env={"HOST_SECRET_TOKEN": "hunter2"})
    assert done.returncode == 0, done.stderr
    (names,) = _lines(done.stderr, "look", "env")
    own = {n for n in names.split() if not n.startswith("SLUICE_")}
    # the image's own PATH and HOME, the shell's PWD/SHLVL, Docker's HOSTNAME; nothing of ours
    assert own <= {"MINE", "PATH", "HOME", "HOSTNAME", "PWD", "SHLVL"}, own
    assert "MINE" in own and "HOST_SECRET_TOKEN" not in names
    assert _lines(done.stderr, "look", "socket") == []
    assert _lines(done.stderr, "look", "nets") == ["lo"]
