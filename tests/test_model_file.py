"""The .tcm file: exact round trip; truncated, corrupt, newer or malformed files fail with a
one-line ModelFileError."""
import struct
import zlib

import numpy as np
import pytest
from tiny_models import tiny_model

import runtime
from runtime.errors import TinyconvError
from runtime.model import FORMAT_VERSION, from_bytes


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_round_trip_is_exact(tmp_path, mode):
    model = tiny_model(mode)
    model.save(tmp_path / "model.tcm")
    loaded = runtime.load(tmp_path)  # a directory means its model.tcm
    assert loaded.hash == model.hash
    assert loaded.to_bytes() == model.to_bytes()
    assert loaded.tensors == model.tensors
    for a, b in zip(model.layers, loaded.layers):
        assert (a.op, a.name, a.inputs, a.output, a.params) == \
               (b.op, b.name, b.inputs, b.output, b.params)
        assert a.arrays.keys() == b.arrays.keys()
        for key in a.arrays:
            assert a.arrays[key].dtype == b.arrays[key].dtype
            np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
    x = np.random.default_rng(0).integers(-128, 128, (2, 8, 8, 2)).astype(np.int8)
    np.testing.assert_array_equal(runtime.run(model, x), runtime.run(loaded, x))


def test_hash_ignores_metadata_but_not_weights():
    a, b = tiny_model(), tiny_model()
    b.metadata = {"source": "elsewhere"}
    assert a.hash == b.hash and len(a.hash) == 16
    b.layers[0].arrays["weights"] = b.layers[0].arrays["weights"].copy()
    b.layers[0].arrays["weights"][0, 0, 0, 0] ^= 1
    assert a.hash != b.hash


def _one_line_error(data, match):
    with pytest.raises(runtime.ModelFileError, match=match) as info:
        from_bytes(data, "m.tcm")
    assert "\n" not in str(info.value)


def test_truncated_file():
    data = tiny_model().to_bytes()
    _one_line_error(data[:10], "too short")
    _one_line_error(data[:-7], "CRC-32 mismatch")


def test_corrupt_byte():
    data = bytearray(tiny_model().to_bytes())
    data[len(data) // 2] ^= 0x40
    _one_line_error(bytes(data), "CRC-32 mismatch")


def test_bad_magic():
    data = b"NOTAMODL" + tiny_model().to_bytes()[8:]
    _one_line_error(data, "bad magic")


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_newer_version():
    body = bytearray(tiny_model().to_bytes()[:-4])
    struct.pack_into("<H", body, 8, FORMAT_VERSION + 1)
    _one_line_error(_reseal(bytes(body)), "newer tinyconv")


def test_malformed_header():
    body = bytearray(tiny_model().to_bytes()[:-4])
    body[16:20] = b"}}}}"  # break the JSON
    _one_line_error(_reseal(bytes(body)), "malformed model header")


def test_missing_file(tmp_path):
    with pytest.raises(runtime.ModelFileError, match="cannot read model"):
        runtime.load(tmp_path / "absent.tcm")


def test_save_leaves_no_partial_file(tmp_path, monkeypatch):
    import runtime.model as model_module

    def fail_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(model_module.os, "replace", fail_replace)
    with pytest.raises(TinyconvError, match="disk full"):
        tiny_model().save(tmp_path / "model.tcm")
    assert list(tmp_path.iterdir()) == []


def test_one_mac_count_for_report_and_device():
    """MACs are conv/fc multiply-accumulates by weights, pools and add count 0 (hand-counted
    from tests/tiny_models.py, which has every op); report.json and TC_TOTAL_MACS agree."""
    import re

    from export.c_codegen import render
    from export.plan import plan_arena
    from export.report import build_report
    from runtime.model import layer_macs

    model = tiny_model()
    expected = {"conv1": 8 * 8 * 6 * 3 * 3 * 2, "dwconv": 4 * 4 * 6 * 3 * 3 * 1, "pool": 0,
                "conv2": 4 * 4 * 6 * 6, "residual": 0, "avg": 0, "excite": 0, "diff": 0,
                "cat": 0, "pad": 0, "up": 0, "gap": 0, "act": 0, "softmax": 0, "fc": 3 * 12}
    assert {layer.op for layer in model.layers} == set(runtime.model.OPS)
    assert {layer.name: layer_macs(model, layer) for layer in model.layers} == expected
    report = build_report(model)
    assert [row["macs"] for row in report["layers"]] == list(expected.values())
    assert report["totals"]["macs"] == model.total_macs == sum(expected.values())
    for spec in model.tensors.values():
        spec.offset = 0
    model.arena_size = 0
    plan_arena(model)
    header, source = render(model)
    assert f"#define TC_TOTAL_MACS {sum(expected.values())}UL" in header
    assert [int(m) for m in re.findall(r"\.macs = (\d+)u", source)] == list(expected.values())


def _as_version(data: bytes, version: int) -> bytes:
    body = bytearray(data[:-4])
    struct.pack_into("<H", body, 8, version)
    return _reseal(bytes(body))


def test_version_1_fixed_global_average_pool_is_refused():
    """Version 1 stored a fixed-mode global average pool's multiplier without the count (the
    device divided after it): read with today's kernel it would compute the wrong thing."""
    model = tiny_model("fixed")
    assert any(layer.op == "global_avg_pool" for layer in model.layers)
    _one_line_error(_as_version(model.to_bytes(), 1), "export the model again")


def test_version_1_without_the_changed_layer_still_loads():
    model = tiny_model("float")  # float mode's pool constants did not change
    assert from_bytes(_as_version(model.to_bytes(), 1)).hash == model.hash
