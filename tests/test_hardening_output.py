"""What the engine prints carries no one else's commands: step output relayed on a GitHub
runner (no workflow commands, `\\r` normalised, capped per attempt), `sluice validate` on a
runner, the job summary (markdown stays text), `sluice show` (no control characters)."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import make_repo, sluice
from markdown_it import MarkdownIt

from engine.core.printable import inert, printable

# The commands GitHub's runner registers (ActionCommandManager): any of them, in either form.
_REGISTERED = {
    "add-mask", "add-matcher", "add-path", "debug", "echo", "endgroup", "error", "group",
    "notice", "remove-matcher", "save-state", "set-env", "set-output", "stop-commands",
    "warning",
}  # fmt: skip
EVENTS = Path(__file__).parent / "events"


def _command(line: str, registered: set[str]) -> tuple[str, str] | None:
    """(name, data) of the command the runner reads in one line, if any: `::name ...::data`
    after leading whitespace, else the legacy `##[name ...]data` anywhere in the line."""
    text = line.lstrip()
    if text.startswith("::"):
        end = text.find("::", 2)
        if end >= 0:
            name = text[2:end].split(" ", 1)[0]
            if name.lower() in registered:
                return name.lower(), text[end + 2 :]
    start = line.find("##[")
    if start >= 0 and (close := line.find("]", start)) >= 0:
        name = line[start + 3 : close].split(" ", 1)[0]
        if name.lower() in registered:
            return name.lower(), line[close + 1 :]
    return None


def runner_commands(output: str) -> list[str]:
    """The lines of `output` GitHub's runner would act on as workflow commands.

    As the runner reads a step's output: lines split at `\\n`, `\\r` and `\\r\\n`; after
    `::stop-commands::T` nothing counts until `::T::` (the token compared without case).
    """
    acted: list[str] = []
    token: str | None = None
    for line in re.split(r"\r\n|\r|\n", output):
        found = _command(line, _REGISTERED | ({token.lower()} if token else set()))
        if found is None:
            continue
        name, data = found
        if token is not None:
            if name == token.lower():
                acted.append(line)
                token = None
            continue
        if name == "stop-commands":
            token = data
        acted.append(line)
    return acted


def engine_brackets_only(acted: list[str]) -> bool:
    """Every command is the engine's own: `::stop-commands::<token>` then `::<token>::`."""
    pairs = list(zip(acted[::2], acted[1::2], strict=False))
    return len(acted) % 2 == 0 and all(
        (m := re.fullmatch(r"::stop-commands::([0-9a-f]{32})", start)) and end == f"::{m[1]}::"
        for start, end in pairs
    )


def test_the_runner_model_reads_commands_as_github_does() -> None:
    assert runner_commands("[s] a\r::warning ::x\n") == ["::warning ::x"]
    assert runner_commands("[s] ##[add-mask]x\n  ::error::y\n[s] ::notice::z") == [
        "[s] ##[add-mask]x",
        "  ::error::y",
    ]
    t = "0123456789abcdef0123456789abcdef"
    acted = runner_commands(f"::stop-commands::{t}\n::warning::no\n##[error]no\n::{t.upper()}::\n")
    assert acted == [f"::stop-commands::{t}", f"::{t.upper()}::"]
    assert engine_brackets_only([f"::stop-commands::{t}", f"::{t}::"])
    assert not engine_brackets_only(["::warning::x"])


def test_printable_escapes_controls_and_keeps_bytes_that_were_not_utf8() -> None:
    assert printable("a\nb\rc\td\x1b[2J\x07\u202eok") == "a\\nb\\rc\\td\\x1b[2J\\x07\\u202eok"
    assert printable(b"n\xff".decode("utf-8", "surrogateescape")) == "n\\xff"
    assert printable("\ud800") == "\\ud800"
    assert printable("plain: été ✅") == "plain: été ✅"
    assert inert("::warning::x") == "\\::warning::x"
    assert inert(" \u3000::error::x") == " \u3000\\::error::x"
    assert inert("a ##[error]b") == "a ##\\[error]b"
    assert inert("plain") == "plain"


HOSTILE_STEP = r"""
name: hostile
steps:
  - name: loud
    image: {image}
    run: |
      printf 'a\r::warning ::pwned-cr\n'
      printf 'b\r\r  ::add-mask::pwned-mask\r\n'
      printf '##[warning]pwned-v1\n'
      printf '::stop-commands::pwned\n::warning::pwned-inside\n::pwned::\n'
      printf '::error::pwned-after\n'
      printf 'last words without a newline\r::notice::pwned-end'
      printf '{{"##[warning]pwned-metric": 1}}' > "$SLUICE_OUTPUTS/metrics.json"
      printf x > "$SLUICE_OUTPUTS/::error::pwned-file ##[error]x"
"""


@pytest.mark.docker
def test_step_output_on_a_github_runner_carries_no_workflow_command(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"p.yaml": HOSTILE_STEP.format(image=busybox_image)})

    github = {"GITHUB_ACTIONS": "true"}
    done = sluice("run", "hostile", "--json", repo=repo, env=github, process=True)

    assert done.returncode == 0, done.stderr
    assert runner_commands(done.stdout) == []  # the manifest on stdout: names stay data
    assert json.loads(done.stdout)["steps"]["loud"]["metrics"] == {"##[warning]pwned-metric": 1}
    acted = runner_commands(done.stderr)
    injected = [line for line in acted if "pwned" in line]
    assert injected == []  # the figure: injected workflow commands, 0
    # the engine's own warning (issue 13: the default store ends with the job), once
    store = [line for line in acted if line.startswith("::warning title=Sluice: outputs will")]
    acted = [line for line in acted if line not in store]
    assert len(store) == 1 and acted and engine_brackets_only(acted), acted
    assert "\r" not in done.stderr  # normalised: each piece a line of its own, prefixed
    for piece in ("a", "::warning ::pwned-cr", "b", "  ::add-mask::pwned-mask", "::pwned::"):
        assert f"[loud] {piece}\n" in done.stderr
    assert "[loud] ::notice::pwned-end\n" in done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    for command in (["show", run_id], ["show", run_id, "--json"], ["runs"]):
        shown = sluice(*command, repo=repo, env=github, process=True)
        assert shown.returncode == 0, shown.stderr
        assert runner_commands(shown.stdout + shown.stderr) == [], command

    plain = sluice("run", "hostile", repo=repo, env={"GITHUB_ACTIONS": None}, process=True)
    assert "stop-commands::" not in plain.stderr.replace("::stop-commands::pwned", "")
    assert "\r" not in plain.stderr


HOSTILE_FILE = r"""
name: hostile
params:
  "p\n::warning::pwned-param": 1
steps:
  - name: "x\n::warning::pwned-step"
    image: busybox
    run: echo hi
  - name: y
    image: busybox
    run: echo hi
    env:
      "K\r::error::pwned-env": v
    needs: ["z\r\n  ::notice::pwned-needs", "##[warning]pwned-v1"]
"""


def test_validate_on_a_github_runner_prints_only_its_own_annotations(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"a.yaml": HOSTILE_FILE})
    listed = sluice("validate", "--json", repo=repo)
    problems = json.loads(listed.stdout)
    assert len(problems) >= 4

    done = sluice("validate", repo=repo, env={"GITHUB_ACTIONS": "true"})

    assert done.returncode == 2
    acted = runner_commands(done.stderr)
    assert len(acted) == len(problems)  # one annotation per problem, and nothing else
    assert all(line.startswith("::error file=pipelines/a.yaml,line=") for line in acted)
    assert "\r" not in done.stderr
    for line in done.stderr.splitlines():
        assert not line.lstrip().startswith("::") or line in acted, line
    assert "pwned-param" in done.stderr  # still said, as text


@pytest.mark.docker
def test_the_job_summary_shows_untrusted_names_as_text(tmp_path: Path, busybox_image: str) -> None:
    key = "k`](https://e.example/x) ![i](https://e.example/i.png) <img src=x> **b** | c\nd"
    metrics = json.dumps({key: 1, "plain": 0.5})
    pipeline = f"""
    name: metered
    steps:
      - name: m
        image: {busybox_image}
        env: {{METRICS: {json.dumps(metrics)}}}
        run: printf '%s' "$METRICS" > "$SLUICE_OUTPUTS/metrics.json"
    """
    repo = make_repo(tmp_path, {"m.yaml": pipeline}, origin=True)
    payload: dict[str, Any] = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "pipelines/m.yaml"}
    event = tmp_path / "dispatch.json"
    event.write_text(json.dumps(payload))
    summary = tmp_path / "summary.md"
    argv = ["trigger", "--event-name", "workflow_dispatch", "--event-path", str(event)]

    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    done = sluice(*argv, "--no-push", repo=repo, env=env, process=True)

    assert done.returncode == 0, done.stderr
    rendered = (
        MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(summary.read_text())
    )
    assert "<a " not in rendered and "<img" not in rendered and "<strong>b" not in rendered
    cells = [html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", rendered, re.S)]
    assert key.replace("\n", "\\n") in cells  # the whole key, one code span, as text
    assert "plain" in cells


@pytest.mark.docker
def test_show_prints_names_with_control_characters_escaped(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = rf"""
    name: odd
    steps:
      - name: o
        image: {busybox_image}
        run: |
          printf x > "$SLUICE_OUTPUTS/$(printf 'a\nforged line\rb')"
          printf x > "$SLUICE_OUTPUTS/$(printf 'title\033]0;pwned\007')"
          printf '{{"m\\r\\nforged": 1}}' > "$SLUICE_OUTPUTS/metrics.json"
    """
    repo = make_repo(tmp_path, {"o.yaml": pipeline})
    ran = sluice("run", "odd", "--json", repo=repo, process=True)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]

    shown = sluice("show", run_id, repo=repo, process=True)

    assert shown.returncode == 0, shown.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", shown.stdout)
    assert all(line.startswith(("run ", "  ")) for line in shown.stdout.splitlines())
    assert "output a\\nforged line\\rb: 1 bytes" in shown.stdout
    assert "output title\\x1b]0;pwned\\x07: 1 bytes" in shown.stdout
    assert "metrics: m\\r\\nforged=1" in shown.stdout


@pytest.mark.docker
def test_names_that_are_not_utf8_are_refused_clearly(tmp_path: Path, busybox_image: str) -> None:
    pipeline = rf"""
    name: bytes
    steps:
      - name: b
        image: {busybox_image}
        run: |
          printf x > "$SLUICE_OUTPUTS/$(printf 'n\377')"
      - name: k
        image: {busybox_image}
        run: |
          printf '{{"\\ud800": 1}}' > "$SLUICE_OUTPUTS/metrics.json"
    """
    repo = make_repo(tmp_path, {"b.yaml": pipeline})

    ran = sluice("run", "bytes", "--json", repo=repo, process=True)

    assert ran.returncode == 1, ran.stderr
    steps = json.loads(ran.stdout)["steps"]
    assert steps["b"]["status"] == "failed"
    assert "output name 'n\\xff' is not UTF-8" in steps["b"]["reason"]
    assert steps["k"]["status"] == "failed"
    assert "metrics.json: key '\\ud800' is not valid Unicode text" in steps["k"]["reason"]
    assert "Traceback" not in ran.stderr


RELAY_CAP = 1024**2


@pytest.mark.docker
def test_step_output_relayed_to_stderr_is_capped_per_attempt(
    tmp_path: Path, busybox_image: str
) -> None:
    pipeline = f"""
    name: chatty
    steps:
      - name: flood
        image: {busybox_image}
        run: |
          echo first-line
          yes "$(printf '%0199d' 0)" | head -c 20000000
          echo last-line
    """
    repo = make_repo(tmp_path, {"c.yaml": pipeline})

    done = sluice("run", "chatty", "--json", repo=repo, process=True, timeout=600)

    assert done.returncode == 0, done.stderr
    size = len(done.stderr.encode())
    assert size < RELAY_CAP + 64 * 1024, size  # 20 MB of step output, about 1 MiB relayed
    assert "[flood] first-line\n" in done.stderr and "[flood] last-line\n" in done.stderr
    assert re.search(r"\[sluice: \d+ bytes \(\d+ lines\) of step output cut here", done.stderr)
    run_id = json.loads(done.stdout)["run_id"]
    log = sluice("logs", run_id, "flood", "--full", repo=repo, process=True)
    assert log.stdout.startswith("first-line\n") and log.stdout.endswith("last-line\n")
    assert len(log.stdout.encode()) < RELAY_CAP + 1024  # the committed log: its own cap

    small = sluice("run", "chatty", repo=repo, env={"SLUICE_RELAY_CAP": "10000"}, process=True)
    assert small.returncode == 0, small.stderr
    assert len(small.stderr.encode()) < 10000 + 4096


def test_the_relay_cap_is_per_attempt_and_the_tail_comes_before_the_verdict() -> None:
    import io

    from engine.adapters.console import PlainReporter
    from engine.core.manifest import Attempt, StepRecord
    from engine.core.spec import Outcome

    stream = io.StringIO()
    reporter = PlainReporter(stream, github=True, relay_cap=400)
    for number in (1, 2):
        reporter.attempt_started("s", number)
        for i in range(100):
            reporter.log("s", f"attempt {number} line {i:03}\n")
        if number == 1:
            failed = Attempt(number=1, outcome=Outcome.failed, started_at="t")
            reporter.retrying("s", failed, 0.0)
    reporter.step_changed("s", StepRecord(status="succeeded"))

    text = stream.getvalue()
    assert len(text.encode()) < 2 * (400 + 400)  # two attempts, each within its cap + markers
    for number in (1, 2):
        assert f"[s] attempt {number} line 000\n" in text  # its head
        assert f"[s] attempt {number} line 099\n" in text  # its tail
        assert f"[s] attempt {number} line 050\n" not in text  # the cut
    assert text.count("of step output cut here") == 2
    tail = text.index("[s] attempt 1 line 099")
    assert tail < text.index("attempt 1 failed; retrying") < text.index("[s] attempt 2 line 000")
    assert text.index("[s] attempt 2 line 099") < text.index("sluice: s: succeeded")
    acted = runner_commands(text)
    assert engine_brackets_only(acted) and len(acted) >= 4, acted
