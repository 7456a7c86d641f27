"""Kaggle encoding helpers: masks, scores, RLE size check, CSV shards."""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from oidseg.errors import InputError
from oidseg.kaggle import (
    HEADER,
    ShardWriter,
    decode_mask,
    encode_mask,
    format_scores,
    iter_shard,
    read_image_list,
    rle_area,
    rle_totals,
)


def rle_counts(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def random_masks(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = rng.integers(1, 70, size=2)
        m = rng.random((h, w)) < rng.random()
        if i % 5 == 0:
            m[:] = False
        if i % 7 == 0:
            m[:] = True
        out.append(m)
    return out


def test_encode_decode_round_trip():
    for m in random_masks(40):
        counts = rle_counts(m)
        encoded = encode_mask(counts)
        assert encoded == base64.b64encode(zlib.compress(counts, 9)).decode()
        assert decode_mask(encoded) == counts
        back = mask_utils.decode({"size": list(m.shape), "counts": decode_mask(encoded)})
        assert np.array_equal(back.astype(bool), m)


def test_decode_rejects_corrupt_data():
    good = encode_mask(rle_counts(np.ones((4, 4))))
    with pytest.raises(ValueError, match="base64"):
        decode_mask("@@not base64@@")
    with pytest.raises(ValueError, match="zlib"):
        decode_mask(base64.b64encode(b"definitely not zlib").decode())
    raw = bytearray(base64.b64decode(good))
    raw[-1] ^= 0xFF  # breaks the adler32 checksum
    with pytest.raises(ValueError, match="zlib"):
        decode_mask(base64.b64encode(bytes(raw)).decode())


def test_format_scores_six_decimals_no_exponent_no_zero():
    text = format_scores(np.array([4e-06, 1e-9, 0.0, 0.5, 1.0, 0.1234567], dtype=np.float32))
    assert text[0] == "0.000004"
    assert text[1] == "0.000001"  # positive, would round to 0.000000
    assert text[2] == "0.000000"
    assert text[3:5] == ["0.500000", "1.000000"]
    assert text[5] == "0.123457"
    assert all("e" not in t for t in text)


def test_rle_totals_match_mask_size():
    masks = random_masks(300, seed=3)  # also > 255 (pycocotools area chunking)
    totals = rle_totals([rle_counts(m) for m in masks])
    assert totals.tolist() == [m.size for m in masks]


def test_rle_totals_flag_malformed_strings():
    good = rle_counts(np.eye(5))
    totals = rle_totals([b"", b"0", b"a", b"0\x00", good[:-1] + b"a", b"~~", good])
    assert totals.tolist() == [-1, 0, -1, -1, -1, -1, 25]


def test_rle_area_more_than_255():
    rles = [{"size": [3, 3], "counts": rle_counts(np.eye(3))}] * 300
    assert rle_area(rles).tolist() == [3] * 300


def test_shard_writer_reader_round_trip(tmp_path):
    out = tmp_path / "s.csv"
    with ShardWriter(out) as w:
        w.write("a", 10, 20, "")
        w.write("b", 3, 4, "/m/x 0.500000 eJw=")
    assert out.read_text().splitlines() == [HEADER, "a,10,20,", "b,3,4,/m/x 0.500000 eJw="]
    rows = list(iter_shard(out))
    assert [(r.row, r.image_id, r.width, r.height, r.predictions) for r in rows] == [
        (2, "a", 10, 20, ""),
        (3, "b", 3, 4, "/m/x 0.500000 eJw="),
    ]


def test_shard_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "s.csv"
    with pytest.raises(RuntimeError):
        with ShardWriter(out) as w:
            w.write("a", 1, 1, "")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_iter_shard_errors_name_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,W,H,PredictionString\n")
    with pytest.raises(InputError, match="row 1"):
        list(iter_shard(bad))
    bad.write_text(f"{HEADER}\na,1,1,\nb,0,1,\n")
    with pytest.raises(InputError, match=r"row 3 / b: ImageWidth"):
        list(iter_shard(bad))


def test_read_image_list(tmp_path):
    good = tmp_path / "list.csv"
    good.write_text("ImageID,PredictionString\nb,\na,\n")
    assert read_image_list(good) == ["b", "a"]
    dup = tmp_path / "dup.csv"
    dup.write_text("ImageID\nb\na\nb\n")
    with pytest.raises(InputError, match=r"row 4 / b: duplicate ImageID \(first at row 2\)"):
        read_image_list(dup)


@pytest.mark.parametrize("text", ["٠.٥", "1_0", "nan", "inf", "²", "0x1p-2", ""])
def test_parse_score_takes_only_plain_ascii_decimals(text):
    from oidseg.kaggle import parse_score

    with pytest.raises(ValueError):
        parse_score(text)
    assert parse_score("0.000001") == 1e-6 and parse_score("1") == 1.0
