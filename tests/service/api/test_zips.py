"""service.api.zips: the one zip writer and errors.json of translate and job answers."""

from __future__ import annotations

import io
import json
import zipfile

from service.api.zips import ZipItemError, zip_bytes, zip_chunks


def test_entries_are_stored_dated_and_unique_case_insensitively() -> None:
    outputs = [("a.png", b"1"), ("A.png", b"2"), ("cats/b.png", b"3"), ("errors.json", b"4")]
    errors = [
        ZipItemError(item="x.png", error="not an image", code="corrupt", status=400),
        ZipItemError(item="cats/y.png", error="too large"),
    ]
    data = zip_bytes(outputs, errors)
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.namelist() == ["a.png", "A-2.png", "cats/b.png", "errors-2.json", "errors.json"]
    assert [archive.read(n) for n in archive.namelist()[:4]] == [b"1", b"2", b"3", b"4"]
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
    assert json.loads(archive.read("errors.json")) == [
        {"item": "x.png", "error": "not an image", "code": "corrupt", "status": 400},
        {"item": "cats/y.png", "error": "too large"},
    ]
    assert zip_bytes(outputs, errors) == data  # the same outputs, the same bytes


def test_no_errors_no_errors_json_and_streamed_one_entry_at_a_time() -> None:
    pieces = list(zip_chunks(iter([("a.png", b"1" * 10), ("b.png", b"2" * 10)])))
    assert len(pieces) == 3 and all(pieces[:2])  # one piece per entry, then the directory
    assert zipfile.ZipFile(io.BytesIO(b"".join(pieces))).namelist() == ["a.png", "b.png"]
