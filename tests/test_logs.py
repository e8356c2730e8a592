"""local/logs.py: secret masking, and log files capped to their head and tail; what of a log
the results branch keeps (core/log_tail.py, run/branch_logs.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.adapters.artifacts import ArtifactStore
from engine.core.log_tail import cut_size, is_cut, tail
from engine.core.manifest import Attempt, RunManifest, StepRecord
from engine.local.logs import MASK, CappedLog, Masker
from engine.run.branch_logs import branch_logs


def test_every_secret_value_is_masked_longest_first() -> None:
    mask = Masker(["hunter2", "hunter2-extended", "tok"])
    assert mask("pw=hunter2-extended and hunter2, tok!") == f"pw={MASK} and {MASK}, {MASK}!"
    assert bool(mask)


def test_each_line_of_a_multi_line_secret_is_masked_too() -> None:
    key = "-----BEGIN KEY-----\nabcdef123\n-----END KEY-----"
    mask = Masker([key])
    assert mask(f"whole: {key}") == f"whole: {MASK}"
    assert mask("one line: abcdef123\n") == f"one line: {MASK}\n"


def test_short_or_blank_secrets_mask_nothing() -> None:
    mask = Masker(["ab", "  ", "", " a "])
    assert not mask
    assert mask("ab a b") == "ab a b"
    assert Masker([])("text") == "text"


def test_regex_characters_in_secrets_are_literal() -> None:
    mask = Masker(["a.b*c"])
    assert mask("a.b*c axbbc") == f"{MASK} axbbc"


def test_a_log_under_the_cap_is_written_whole(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "logs" / "s.1.log", cap=100)
    for line in ["one\n", "two", "three\n"]:
        log.write(line)
    log.close()
    log.close()  # twice is harmless
    assert (tmp_path / "logs" / "s.1.log").read_text() == "one\ntwo\nthree\n"


def test_a_long_log_keeps_head_and_tail_with_a_marker(tmp_path: Path) -> None:
    path = tmp_path / "s.1.log"
    log = CappedLog(path, cap=40)  # 20 bytes of head, 20 of tail
    for n in range(10):
        log.write(f"line {n}\n")  # 7 bytes each
    log.close()
    assert path.read_text() == (
        "line 0\nline 1\n"
        "[sluice: 42 bytes (6 lines) cut here; head and tail kept]\n"
        "line 8\nline 9\n"
    )


def test_one_huge_line_is_kept_rather_than_lost(tmp_path: Path) -> None:
    path = tmp_path / "s.1.log"
    log = CappedLog(path, cap=10)
    log.write("x" * 50)
    log.write("end")
    log.close()
    assert path.read_text() == "[sluice: 51 bytes (1 lines) cut here; head and tail kept]\nend\n"


def test_text_that_is_not_utf8_clean_is_written_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.1.log"
    log = CappedLog(path)
    log.write("caf\udce9\n")  # a lone surrogate, as surrogateescape makes
    log.close()
    assert path.read_bytes() == b"caf?\n"


# -- what the results branch keeps (core/log_tail.py, run/branch_logs.py) ---------------------


def test_a_log_that_fits_is_kept_whole() -> None:
    text = b"one\ntwo\n"
    assert tail(text, limit=8) == text and cut_size(text) is None and not is_cut(text, limit=8)


def test_a_long_log_keeps_its_last_whole_lines_after_a_marker() -> None:
    text = b"".join(b"line %d\n" % n for n in range(100))  # 790 bytes
    kept = tail(text, limit=50)
    marker, body = kept.split(b"\n", 1)
    assert body == b"line 94\nline 95\nline 96\nline 97\nline 98\nline 99\n"
    assert marker == b"[sluice: the first 742 bytes of this 790-byte log are left out here]"
    assert cut_size(kept) == len(text) and is_cut(text, limit=50)
    assert tail(text, limit=50) == kept  # the same log, the same bytes (the same git blob)


def test_a_line_longer_than_the_tail_keeps_its_end_from_a_character() -> None:
    text = "é".encode() * 40 + b"\n"  # 81 bytes, one line
    body = tail(text, limit=10).split(b"\n", 1)[1]
    assert body.decode() == "é" * 4 + "\n"


def _manifest(*logs: str) -> RunManifest:
    attempts = [Attempt(number=n, started_at="t", log=rel) for n, rel in enumerate(logs, 1)]
    return RunManifest(
        run_id="20261203T000000Z-000001",
        pipeline="p",
        pipeline_file="pipelines/p.yaml",
        pipeline_sha256="0" * 64,
        started_at="t",
        steps={"talk": StepRecord(attempts=attempts)},
    )


def test_a_long_log_goes_whole_to_the_store_and_its_attempt_points_there(tmp_path: Path) -> None:
    long, short = b"x" * 40 + b"\n" + b"y\n" * 30_000, b"short\n"
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "talk.1.log").write_bytes(long)
    (tmp_path / "logs" / "talk.2.log").write_bytes(short)
    manifest = _manifest("logs/talk.1.log", "logs/talk.2.log")
    store = ArtifactStore(f"file://{tmp_path / 'store'}", tmp_path)
    notes: list[str] = []
    written = ["logs/talk.1.log", "logs/talk.2.log", "logs/gone.1.log"]
    logs = branch_logs(tmp_path, written, manifest, store, notes.append)
    assert logs == {"talk.1.log": tail(long), "talk.2.log": short}
    first, second = manifest.steps["talk"].attempts
    assert first.log_full is not None and second.log_full is None
    assert first.log_full.sha256 == hashlib.sha256(long).hexdigest() and store.has(first.log_full)
    assert notes == [] and manifest.steps["talk"].warnings == []
    assert branch_logs(tmp_path, written, manifest, None, notes.append) == logs  # no store


def test_a_store_that_cannot_take_the_log_leaves_the_tail_and_a_warning(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "talk.1.log").write_bytes(b"z\n" * 20_000)
    manifest = _manifest("logs/talk.1.log")
    store = ArtifactStore(f"file://{tmp_path / 'store'}", tmp_path)
    (tmp_path / "store" / "sha256").write_text("a file where the store's folder goes")
    notes: list[str] = []
    logs = branch_logs(tmp_path, ["logs/talk.1.log"], manifest, store, notes.append)
    assert logs == {"talk.1.log": tail(b"z\n" * 20_000)}
    record = manifest.steps["talk"]
    assert record.attempts[0].log_full is None
    assert len(record.warnings) == 1 and notes == [f"talk: {record.warnings[0]}"]
    assert record.warnings[0].startswith(
        "the whole log of attempt 1 (39.1 KB) could not go to the artifact store, so the "
        "results branch keeps only its last 32.0 KB: cannot write 39.1 KB to artifact store"
    )


def test_records_before_log_full_still_load() -> None:
    old = {"number": 1, "started_at": "t", "log": "logs/s.1.log", "outcome": "succeeded"}
    assert Attempt.model_validate(old).log_full is None
