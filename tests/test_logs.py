"""local/logs.py: secret masking, and log files capped to their head and tail."""

from __future__ import annotations

from pathlib import Path

from engine.local.logs import MASK, CappedLog, Masker


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
