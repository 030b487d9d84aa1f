import numpy as np
import pytest

from divqat.data.idx import read_idx, write_idx
from divqat.errors import DivqatError


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, array)
    assert read_idx(tmp_path / name).numpy().tolist() == array.tolist()


def test_truncated_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros((5, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DivqatError, match="truncated"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x00\x00\x99\x01\x00\x00\x00\x01x"])
def test_not_idx(tmp_path, content):
    path = tmp_path / "a.idx"
    path.write_bytes(content)
    with pytest.raises(DivqatError, match="not an IDX file"):
        read_idx(path)


def test_bad_gzip(tmp_path):
    path = tmp_path / "a.idx.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DivqatError, match="cannot read"):
        read_idx(path)
