import hashlib

import pytest

from divqat.data.download import fetch
from divqat.errors import DivqatError


def test_verified_download(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    md5 = hashlib.md5(b"payload").hexdigest()
    dest = fetch(source.as_uri(), md5, tmp_path / "dest.bin")
    assert dest.read_bytes() == b"payload"


def test_checksum_mismatch_leaves_nothing(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"tampered")
    with pytest.raises(DivqatError, match="checksum mismatch"):
        fetch(source.as_uri(), "0" * 32, tmp_path / "dest.bin")
    assert not (tmp_path / "dest.bin").exists() and not (tmp_path / "dest.bin.part").exists()
