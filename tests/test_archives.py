"""Safe extraction of untrusted tars, and the tars built to go into containers."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.local import archives
from engine.local.archives import TarBuilder, UnsafeArchive, concatenated, extract_tar, pack_dir

Member = tuple[str, bytes, bytes | None, str]  # name, type, data, linkname


def _tar(path: Path, *members: Member) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, kind, data, linkname in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = linkname
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _dir(name: str) -> Member:
    return (name, tarfile.DIRTYPE, None, "")


def _file(name: str, data: bytes = b"x") -> Member:
    return (name, tarfile.REGTYPE, data, "")


def _sym(name: str, target: str) -> Member:
    return (name, tarfile.SYMTYPE, None, target)


def _hard(name: str, target: str) -> Member:
    return (name, tarfile.LNKTYPE, None, target)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(autouse=True, params=["data-filter", "checked-fallback"])
def extraction(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: with tarfile's data filter, and as on Python < 3.11.4."""
    if request.param == "checked-fallback":
        monkeypatch.setattr(archives, "_HAS_DATA_FILTER", False)
    elif not archives._HAS_DATA_FILTER:
        pytest.skip("this Python's tarfile has no extraction filters")
    return str(request.param)


@pytest.fixture
def box(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """A tar of the given members, and the empty dest inside a watched tree."""

    def make(*members: Member) -> tuple[Path, Path]:
        archive = _tar(tmp_path / "in.tar", *members)
        return archive, tmp_path / "tree" / "dest"

    (tmp_path / "tree").mkdir()
    return make


HOSTILE: dict[str, tuple[list[Member], str]] = {
    "absolute": ([_file("/etc/evil")], "has an absolute path"),
    "dotdot": ([_file("../x")], "has a '..' component"),
    "dotdot-inside": ([_dir("a"), _file("a/../../x")], "has a '..' component"),
    "symlink-to-root": ([_sym("root", "/")], "links to absolute '/'"),
    "symlink-up": ([_dir("a"), _sym("a/etc", "../../etc")], "leads outside the destination"),
    "symlink-chain": (
        [_dir("sub"), _sym("sub/up", ".."), _sym("escape", "sub/up/..")],
        "leads outside the destination",
    ),
    "symlink-loop": ([_sym("a", "b"), _sym("b", "a/x")], "leads outside the destination"),
    "write-through-symlink": ([_sym("a", "."), _file("a/f")], "lies under a link"),
    "hardlink-outside": ([_hard("h", "../../etc/passwd")], "hard-links to"),
    "hardlink-absolute": ([_hard("h", "/etc/passwd")], "hard-links to"),
    "hardlink-missing": ([_hard("h", "nothing")], "not a file in the archive"),
    "fifo": ([(("pipe", tarfile.FIFOTYPE, None, ""))], "is a FIFO"),
    "char-device": ([("null", tarfile.CHRTYPE, None, "")], "is a character device"),
    "block-device": ([("sda", tarfile.BLKTYPE, None, "")], "is a block device"),
    "duplicate": ([_file("a"), _file("a")], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_is_refused_and_writes_nothing(
    case: str, box: Callable[..., tuple[Path, Path]]
) -> None:
    members, why = HOSTILE[case]
    # a harmless file first: it must not be written either
    archive, dest = box(_file("first.txt"), *members)
    tree = dest.parent
    with pytest.raises(UnsafeArchive, match=r"refused archive in\.tar: member ") as info:
        extract_tar(archive, dest)
    assert why in str(info.value)
    assert _snapshot(tree) == set()


def test_oversize_archive_is_refused(box: Callable[..., tuple[Path, Path]]) -> None:
    archive, dest = box(_file("a", b"x" * 600), _file("b", b"y" * 600))
    with pytest.raises(UnsafeArchive, match=r"member 'b' takes the total over 1000 bytes"):
        extract_tar(archive, dest, max_bytes=1000)
    assert not dest.exists()


def test_too_many_members_is_refused(box: Callable[..., tuple[Path, Path]]) -> None:
    archive, dest = box(*(_file(f"f{i}") for i in range(11)))
    with pytest.raises(UnsafeArchive, match=r"member 'f10' exceeds the limit of 10 members"):
        extract_tar(archive, dest, max_members=10)
    assert not dest.exists()


def test_strip_refuses_members_outside_the_folder(box: Callable[..., tuple[Path, Path]]) -> None:
    archive, dest = box(_dir("outputs"), _file("outputs/a"), _file("other/b"))
    with pytest.raises(UnsafeArchive, match=r"member 'other/b' is not inside outputs/"):
        extract_tar(archive, dest, strip="outputs")
    assert not dest.exists()


def test_strip_refuses_a_symlink_leading_above_the_stripped_folder(
    box: Callable[..., tuple[Path, Path]],
) -> None:
    archive, dest = box(_dir("outputs"), _sym("outputs/up", "../outputs"))
    with pytest.raises(UnsafeArchive, match="leads outside the destination"):
        extract_tar(archive, dest, strip="outputs")


def test_not_a_tar_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(UnsafeArchive, match="not a valid tar"):
        extract_tar(junk, tmp_path / "dest")


def test_good_archive_with_nested_folders_and_internal_links(
    box: Callable[..., tuple[Path, Path]],
) -> None:
    archive, dest = box(
        _dir("outputs"),
        _file("outputs/metrics.json", b'{"accuracy": 0.9}'),
        _dir("outputs/model"),
        _dir("outputs/model/parts"),
        _file("outputs/model/parts/w.bin", b"\x00\x01"),
        _sym("outputs/latest", "model/parts/w.bin"),
        _sym("outputs/model/parts/up", "../../metrics.json"),
        _hard("outputs/copy.json", "outputs/metrics.json"),
    )
    files = extract_tar(archive, dest, strip="outputs")
    assert files == [Path("copy.json"), Path("metrics.json"), Path("model/parts/w.bin")]
    assert (dest / "model/parts/w.bin").read_bytes() == b"\x00\x01"
    assert (dest / "copy.json").read_text() == '{"accuracy": 0.9}'
    assert os.readlink(dest / "latest") == "model/parts/w.bin"
    assert (dest / "model/parts/up").read_text() == '{"accuracy": 0.9}'
    assert _snapshot(dest.parent) == {
        "dest",
        *(f"dest/{p}" for p in _snapshot(dest)),
    }


def test_setuid_bits_and_ownership_are_dropped(tmp_path: Path) -> None:
    archive = tmp_path / "in.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("tool")
        info.mode, info.uid, info.gid, info.size = 0o6777, 4242, 4242, 2
        tar.addfile(info, io.BytesIO(b"#!"))
    extract_tar(archive, tmp_path / "dest")
    st = (tmp_path / "dest" / "tool").stat()
    assert st.st_mode & 0o7777 == 0o755
    assert st.st_uid == os.getuid()


def test_tar_builder_writes_what_a_step_container_needs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src" / "deep").mkdir(parents=True)
    (repo / "src" / "deep" / "train.py").write_text("print(1)\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "README").write_text("hi\n")
    os.mkfifo(repo / "pipe")  # special files never go into a container
    out = tmp_path / "put.tar"
    with TarBuilder(out) as tar:
        tar.add_dir("sluice/outputs")
        tar.add_bytes("sluice/config.json", b'{"n": 1}')
        tar.add_file("sluice/inputs/prep/data.csv", repo / "README")
        tar.add_tree(repo, "workspace")
        tar.add_tree(repo, "only", paths=["src/deep/train.py"])
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar}
        config = tar.extractfile(members["sluice/config.json"])
        assert config is not None and config.read() == b'{"n": 1}'
    assert members["sluice"].mode == 0o755
    assert members["sluice/outputs"].mode == 0o777
    assert members["workspace/src/deep"].mode == 0o777
    assert members["workspace/run.sh"].mode == 0o777
    assert members["workspace/README"].mode == 0o666
    assert "workspace/pipe" not in members
    assert {n for n in members if n.startswith("only")} == {
        "only",
        "only/src",
        "only/src/deep",
        "only/src/deep/train.py",
    }
    assert members["only/src"].mode == 0o777
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    names = list(members)
    assert names.index("sluice") < names.index("sluice/outputs")  # parents first


def test_tar_builder_folder_asked_for_again_with_another_mode(tmp_path: Path) -> None:
    with TarBuilder(tmp_path / "put.tar") as tar:
        tar.add_bytes("sluice/config.json", b"{}")  # makes sluice/ with 0o755
        tar.add_dir("sluice", mode=0o777)
        tar.add_dir("sluice", mode=0o777)
    with tarfile.open(tmp_path / "put.tar") as tar:
        modes = [m.mode for m in tar if m.name == "sluice"]
    assert modes == [0o755, 0o777]  # the later entry wins on extraction
    extract_tar(tmp_path / "put.tar", tmp_path / "out")


def test_pack_dir_round_trips_through_extract(tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "epoch").mkdir(parents=True)
    (src / "epoch" / "3.pt").write_bytes(b"w" * 100)
    (src / "last").symlink_to("epoch/3.pt")
    out = tmp_path / "ckpt.tar"
    pack_dir(src, out, arcname="checkpoints")
    with tarfile.open(out) as tar:
        assert tar.getmember("checkpoints").mode == 0o777
        assert tar.getmember("checkpoints/epoch").mode == 0o777
    files = extract_tar(out, tmp_path / "back", strip="checkpoints")
    assert files == [Path("epoch/3.pt")]
    assert (tmp_path / "back" / "last").read_bytes() == b"w" * 100


def test_builder_refuses_names_that_escape(tmp_path: Path) -> None:
    with TarBuilder(tmp_path / "x.tar") as tar:
        for bad in ("/etc/passwd", "a/../../b", ""):
            with pytest.raises(ValueError, match="bad archive name"):
                tar.add_bytes(bad, b"")


def test_links_already_in_dest_are_not_followed_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "out").symlink_to(outside)
    archive = _tar(tmp_path / "in.tar", _file("out/f"))
    with pytest.raises(UnsafeArchive, match="member 'out/f'"):
        extract_tar(archive, dest)
    assert list(outside.iterdir()) == []


def test_concatenated_tars_read_as_one_archive(tmp_path: Path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    with TarBuilder(first) as tar:
        tar.add_dir("workspace")
        tar.add_bytes("workspace/zeros.bin", bytes(1024))  # ends in zero blocks, like a trailer
        tar.add_bytes("workspace/odd.txt", b"x" * 700)
    with TarBuilder(second) as tar:
        tar.add_bytes("sluice/config.json", b"{}")
    combined = tmp_path / "all.tar"
    combined.write_bytes(b"".join(concatenated([first, second])))
    with tarfile.open(combined) as tar:
        names = tar.getnames()
        zeros = tar.extractfile("workspace/zeros.bin")
        assert zeros is not None and zeros.read() == bytes(1024)
    assert names == [
        "workspace",
        "workspace/zeros.bin",
        "workspace/odd.txt",
        "sluice",
        "sluice/config.json",
    ]
