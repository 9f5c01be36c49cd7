"""Release archives are hostile input: each bad one is refused with a clear reason and
nothing lands outside the unpack directory. Switch and prune on a release tree."""

from __future__ import annotations

import os
import tarfile
import zipfile

import pytest

from agent.maintenance.release import Releases, ReleaseError, UnsafeArchive, check_wheel, unpack
from tests.maint_kit import fake_tree, tar_of, tiny_wheel

CAP = 10_000_000


def test_a_single_wheel_is_a_release(tmp_path):
    wheel = tiny_wheel(tmp_path / "in", "evsite", "2.0")
    renamed = tmp_path / "download.bin"
    renamed.write_bytes(wheel.read_bytes())        # the URL's name is not trusted
    house = unpack(renamed, tmp_path / "out", max_bytes=CAP)
    assert house.version == "2.0"
    assert house.main.name == "evsite-2.0-py3-none-any.whl"
    assert [w.name for w in house.wheels] == ["evsite-2.0-py3-none-any.whl"]


def test_a_tar_of_wheels_brings_its_dependencies(tmp_path):
    main = tiny_wheel(tmp_path / "in", "evsite", "2.1")
    dep = tiny_wheel(tmp_path / "in", "evsite_extra", "1.0")
    archive = tar_of(tmp_path / "r.tar.gz", {"wheels/" + main.name: main, "wheels/" + dep.name: dep,
                                            "SHA256SUMS": b"ignored\n"})
    house = unpack(archive, tmp_path / "out", max_bytes=CAP)
    assert house.version == "2.1"
    assert sorted(w.name for w in house.wheels) == sorted([main.name, dep.name])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([main.name, dep.name])


@pytest.mark.parametrize("name", ["../evil.whl", "/etc/evil.whl", "a/../../evil.whl", "..\\evil.whl"])
def test_members_leaving_the_directory_are_refused(tmp_path, name):
    main = tiny_wheel(tmp_path / "in", "evsite", "2.0")
    archive = tar_of(tmp_path / "r.tar", {main.name: main, name: b"x"}, mode="w")
    with pytest.raises(UnsafeArchive, match="absolute path|leaves the release directory"):
        unpack(archive, tmp_path / "deep" / "out", max_bytes=CAP)
    assert not (tmp_path / "evil.whl").exists() and not (tmp_path / "deep" / "evil.whl").exists()


def test_links_and_devices_are_refused(tmp_path):
    main = tiny_wheel(tmp_path / "in", "evsite", "2.0")
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        path = tmp_path / f"r{kind!r}.tar"
        with tarfile.open(path, "w") as tar:
            tar.add(main, arcname=main.name)
            info = tarfile.TarInfo("link.whl")
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
        with pytest.raises(UnsafeArchive, match="link|not a regular file"):
            unpack(path, tmp_path / "out", max_bytes=CAP)


def test_a_wheel_whose_members_leave_the_tree_is_refused(tmp_path):
    bad = tiny_wheel(tmp_path / "in", "evsite", "2.0", members={"../../outside.py": b"x = 1\n"})
    with pytest.raises(UnsafeArchive, match="outside.py"):
        check_wheel(bad)
    with pytest.raises(UnsafeArchive):
        unpack(bad, tmp_path / "out", max_bytes=CAP)


def test_truncated_corrupt_and_foreign_archives_are_refused(tmp_path):
    main = tiny_wheel(tmp_path / "in", "evsite", "2.0")
    good = tar_of(tmp_path / "good.tar.gz", {main.name: main}).read_bytes()
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ReleaseError, match="truncated or corrupt|readable"):
        unpack(truncated, tmp_path / "out", max_bytes=CAP)
    garbage = tmp_path / "g.bin"
    garbage.write_bytes(b"MZ\x90\x00 this is no archive" * 50)
    with pytest.raises(ReleaseError, match="neither a wheel nor a readable tar"):
        unpack(garbage, tmp_path / "out", max_bytes=CAP)
    # a wheel whose data was damaged after its CRC was computed
    damaged = tmp_path / "evsite-2.0-py3-none-any.whl"
    data = bytearray(main.read_bytes())
    i = data.index(b"VALUE = 1")
    data[i:i + 5] = b"EVIL!"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="corrupt"):
        unpack(damaged, tmp_path / "out", max_bytes=CAP)


def test_an_archive_without_exactly_one_evsite_wheel_is_refused(tmp_path):
    dep = tiny_wheel(tmp_path / "in", "evsite_extra", "1.0")
    with pytest.raises(ReleaseError, match="no evsite wheel"):
        unpack(tar_of(tmp_path / "a.tar", {dep.name: dep}, "w"), tmp_path / "out", max_bytes=CAP)
    a = tiny_wheel(tmp_path / "a", "evsite", "2.0")
    b = tiny_wheel(tmp_path / "b", "evsite", "3.0")
    with pytest.raises(ReleaseError, match="two evsite wheels"):
        unpack(tar_of(tmp_path / "b.tar", {a.name: a, b.name: b}, "w"), tmp_path / "out", max_bytes=CAP)


def test_an_archive_that_unpacks_too_large_is_refused(tmp_path):
    main = tiny_wheel(tmp_path / "in", "evsite", "2.0")
    archive = tar_of(tmp_path / "big.tar.gz", {main.name: main, "pad.whl": b"\0" * 200_000})
    with pytest.raises(ReleaseError, match="more than 100000 bytes"):
        unpack(archive, tmp_path / "out", max_bytes=100_000)


def test_an_unusable_version_is_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("evsite-..dist-info/WHEEL", "Tag: py3-none-any\n")
    with pytest.raises(ReleaseError):
        check_wheel(wheel)


def test_switch_prune_and_remove_on_a_release_tree(tmp_path):
    root = fake_tree(tmp_path, "1.0", "1.1", "1.2", "1.3", current="1.2")
    for i, v in enumerate(("1.0", "1.1", "1.2", "1.3")):     # install order = marker times
        os.utime(root / "releases" / v / ".evsite-release", ns=(i * 10**9, i * 10**9))
    (root / "releases" / "half-built").mkdir()
    rel = Releases(root, keep=3)
    assert rel.current() == "1.2" and rel.installed() == ["1.0", "1.1", "1.2", "1.3"]
    removed = rel.prune(protect={"1.0"})
    assert sorted(removed) == ["1.1", "half-built"]
    assert rel.installed() == ["1.0", "1.2", "1.3"]
    rel.switch("1.3")
    assert rel.current() == "1.3"
    with pytest.raises(ReleaseError, match="is current"):
        rel.remove("1.3")
    (root / "releases" / "9.9" / "venv").mkdir(parents=True)   # no marker: incomplete
    with pytest.raises(ReleaseError, match="not completely installed"):
        rel.switch("9.9")
    assert rel.current() == "1.3"


def test_usable_says_why_updates_cannot_work(tmp_path):
    assert "does not exist" in Releases(tmp_path / "nowhere").usable()
    assert "not a symlink" in Releases(fake_tree(tmp_path / "t", "1.0")).usable()
    assert Releases(fake_tree(tmp_path / "u", "1.0", current="1.0"), seed=tmp_path).usable() is None
