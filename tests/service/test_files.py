"""The one rule for file names the service writes: harmless names, outputs, collisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.files import (
    OutputNames,
    atomic_file,
    output_name,
    partial_name,
    safe_file_name,
    safe_stem,
    write_atomic,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("photo.png", "photo"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\holiday 01.JPG", "holiday_01"),
        ('a"b;c.png', "a_b_c"),
        ("...", "fallback"),
        ("\x00\x1b[31m.png", "31m"),
        ("", "fallback"),
    ],
)
def test_safe_stem_keeps_no_folder_quote_or_control_byte(given: str, expected: str) -> None:
    assert safe_stem(given, "fallback") == expected


def test_safe_file_name_keeps_a_cleaned_lower_case_suffix() -> None:
    assert safe_file_name("dir/Cat.PNG", "x") == "Cat.png"
    assert safe_file_name(None, "upload-3") == "upload-3"
    assert safe_file_name("a.p$n g", "x") == "a.png"  # odd bytes dropped from a suffix


def test_output_name_keeps_the_relative_path() -> None:
    assert output_name("cats/a.png", ".webp") == "cats/a.webp"
    assert output_name("a", ".png") == "a.png"


def test_two_names_a_case_insensitive_filesystem_merges_collide() -> None:
    names = OutputNames()
    assert names.claim("a.png", "a.PNG") is None
    assert names.claim("A.png", "A.png") == "a.PNG"
    # the same name in another Unicode normal form is the same file on macOS
    assert names.claim("e\u0301.png", "decomposed") is None
    assert names.claim("\u00e9.png", "composed") == "decomposed"


def test_unique_numbers_names_that_differ_only_in_case() -> None:
    names = OutputNames()
    assert names.unique("a", ".png", "a.PNG") == "a.png"
    assert names.unique("A", ".png", "A.png") == "A-2.png"
    assert names.unique("a", ".png", "a.jpg") == "a-3.png"


def test_an_atomic_write_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.png"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("the writer dies")
    assert not target.exists() and not Path(partial_name(target)).exists()
    write_atomic(target, b"whole")
    assert target.read_bytes() == b"whole"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_a_killed_writers_partial_file_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    Path(partial_name(target)).write_bytes(b"left by a writer that was killed")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no orphan
