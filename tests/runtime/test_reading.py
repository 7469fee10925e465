"""Bounded reading of user files: special files refused at once, sizes, encodings and depth."""

import os
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentdiff.errors import ModelError, UsageError
from latentdiff.runtime import reading


def test_fifo_refused_at_once_without_a_writer(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(UsageError, match=r"--prompts file .*pipe is a FIFO \(named pipe\); give a regular file"):
        reading.read_text(fifo, "--prompts file")
    assert time.monotonic() - start < 1


@pytest.mark.parametrize("path,kind", [("/dev/zero", "a character device"), ("/", "a folder")])
def test_devices_and_folders_refused(path, kind):
    with pytest.raises(UsageError, match=f"is {kind}"):
        reading.read_bytes(path, "weights", 10)


def test_socket_refused(tmp_path):
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(ModelError, match="is a socket"):
            reading.check_regular(path, "weights file", ModelError)


def test_size_limit_names_both_sizes(tmp_path):
    f = tmp_path / "big.txt"
    f.write_bytes(b"a" * 2000)
    assert reading.read_bytes(f, "x", 2000) == b"a" * 2000
    with pytest.raises(UsageError, match=r"big.txt is 2,000 bytes; at most 1,999 bytes is read"):
        reading.read_bytes(f, "x", 1999)


def test_text_must_be_utf8_without_nul(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeffok é".encode())
    assert reading.read_text(f, "t") == "ok é"
    f.write_bytes(b"ab\xffcd")
    with pytest.raises(UsageError, match=r"not UTF-8 text \(byte 2 is 0xff\)"):
        reading.read_text(f, "t")
    f.write_bytes(b"ab\0cd")
    with pytest.raises(UsageError, match="holds a NUL byte"):
        reading.read_text(f, "t")


def test_deep_json_and_yaml_refused_with_the_limit():
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(UsageError, match=f"nests 100000 levels deep; at most {reading.MAX_DEPTH}"):
        reading.parse_json(deep, "model_index.json")
    with pytest.raises(UsageError, match="nests"):
        reading.parse_yaml(deep, "config.yaml")
    block = "".join(" " * i + f"k{i}:\n" for i in range(60))
    with pytest.raises(UsageError, match="more than 32 levels"):
        reading.parse_yaml(block, "config.yaml")
    assert reading.parse_json('{"a": "[[[[", "b": [1, {"c": 2}]}', "x") == {"a": "[[[[", "b": [1, {"c": 2}]}


def test_damaged_json_is_one_line():
    with pytest.raises(UsageError, match="x is not valid JSON"):
        reading.parse_json("{", "x")
    with pytest.raises(UsageError, match="not valid JSON"):
        reading.parse_json("1" * 5000, "x")  # past Python's int-string limit


@settings(derandomize=True, database=None, deadline=None, max_examples=200)
@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_nesting_depth_matches_the_value(value):
    import json

    assert reading.nesting_depth(json.dumps(value)) == reading.value_depth(value)
