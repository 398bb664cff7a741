"""Reliability of data reading and output writing: fuzzed inputs never crash the reader with
anything but a located DataError, and failed writes leave nothing half-written."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naitbench.data.pool import ALPACA_RULES
from naitbench.data.records import BadRecordLog, DataError, read_records
from naitbench.io import write_jsonl

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _read(path, on_bad):
    log = BadRecordLog()
    good = read_records(path, ALPACA_RULES, on_bad=on_bad, log=log, max_chars=200)
    return good, log


@FUZZ
@given(raw=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json"]))
def test_random_bytes_give_records_or_a_located_error(tmp_path, raw, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(raw)
    try:
        good, log = _read(path, "skip")
    except DataError as error:
        assert error.file == str(path) and error.field and error.reason
        return
    for _, record in good:
        assert isinstance(record["instruction"], str) and record["instruction"].strip()
    assert all(e["file"] == str(path) for e in log.entries)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["instruction", "input", "output", "x"]), inner, max_size=4),
    max_leaves=8)


@FUZZ
@given(values=st.lists(json_values, max_size=8))
def test_random_json_records_are_each_kept_or_counted(tmp_path, values):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(v) for v in values) + "\n")
    good, log = _read(path, "skip")
    assert len(good) + len(log.entries) == len(values)   # nothing silently dropped
    with pytest.raises(DataError) if log.entries else _nothing():
        _read(path, "error")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody can write to: chmod for users, the immutable flag for root."""
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:
        out.chmod(stat.S_IRUSR | stat.S_IXUSR)
        yield out
        out.chmod(stat.S_IRWXU)
        return
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a filesystem without the immutable flag")
    yield out
    subprocess.run(["chattr", "-i", str(out)], check=True)


def test_read_only_output_directory_fails_cleanly(read_only_dir):
    with pytest.raises(PermissionError):
        write_jsonl(read_only_dir / "pool.jsonl", [{"id": 1}])
    assert list(read_only_dir.iterdir()) == []


def test_a_write_that_fails_midway_leaves_no_file(tmp_path):
    target = tmp_path / "pool.jsonl"

    def records():
        yield {"id": "a"}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(target, records())
    assert list(tmp_path.iterdir()) == []


def test_disk_full_leaves_neither_a_partial_file_nor_a_temp_file(tmp_path):
    # RLIMIT_FSIZE makes writes past 64 KiB fail with EFBIG, as a full disk fails with ENOSPC.
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
from naitbench.io import write_jsonl
try:
    write_jsonl({str(tmp_path / 'big.jsonl')!r}, ({{"text": "x" * 1000}} for _ in range(500)))
except OSError as exc:
    print("OSError", exc.errno)
    sys.exit(3)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 3, result.stderr
    assert list(tmp_path.iterdir()) == []
