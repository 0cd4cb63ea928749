"""A corrupt video is reported once, by vidpeft, in one line: decord's and ffmpeg's own log lines (written
straight to file descriptor 2 before decord raises) stay off the console; other output is kept."""

import os

import pytest

from components.data.manifest import read_manifest
from components.video.decoders.native_stderr import dropping
from components.video.errors import VideoDecodeError


def test_claimed_lines_are_dropped_and_the_rest_written_back_in_order(capfd):
    os.write(2, b"before\n")
    with dropping(lambda line: line.startswith("[native]")):
        os.write(2, b"[native] noise\nkept one\n")
        os.write(2, b"[native] more noise\nkept two\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nkept one\nkept two\nafter\n"


def test_the_body_raising_still_restores_stderr(capfd):
    with pytest.raises(ValueError):
        with dropping(lambda line: False):
            os.write(2, b"written before the error\n")
            raise ValueError("boom")
    os.write(2, b"stderr is back\n")
    assert capfd.readouterr().err == "written before the error\nstderr is back\n"


def test_decord_on_corrupt_files_raises_naming_the_file_and_prints_nothing(synth_data, capfd):
    from components.video.decoders import decord_backend

    table = read_manifest(synth_data).table.to_pylist()
    broken = [r["video_path"] for r in table if r["clip_id"].startswith("corrupt")]
    assert broken
    for path in broken:
        if os.path.getsize(path) == 0:
            continue  # an empty file never reaches decord (decode_clip says "empty (zero-byte) file")
        with pytest.raises(VideoDecodeError, match=os.path.basename(path)):
            decord_backend.probe(path)
    err = capfd.readouterr().err
    assert "video_reader.cc" not in err and "moov atom" not in err and "Invalid data" not in err, err
