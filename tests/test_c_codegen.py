"""export.c_codegen: model_data.h/.c compile standalone on gcc and arm-none-eabi-gcc with the
strict flags, carry the contract macros with the model's values, and refuse models the
firmware cannot run with a one-line TinyconvError."""
from __future__ import annotations

import struct
import subprocess

import numpy as np
import pytest

from _firmware_models import CFLAGS, FIRMWARE_SRC, random_model, require_tool
from export.c_codegen import write_c_sources
from runtime.errors import TinyconvError

SPEC = ((6, 5, 2), [
    dict(op="conv2d", out=4, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
    dict(op="conv2d", out=4, kernel=(3, 3), groups=4, padding=(1, 1, 1, 1)),
    dict(op="avg_pool2d", kernel=(2, 2)),
    dict(op="conv2d", out=4, kernel=(1, 1)),
    dict(op="add", **{"with": 3}),
    dict(op="max_pool2d", kernel=(2, 2), stride=(1, 1), padding=(0, 0, 1, 1)),
    dict(op="global_avg_pool"),
    dict(op="fully_connected", out=3),
])

PRINT_MACROS = r"""
#include <stdio.h>
#include "model_data.h"
int main(void)
{
    static const int in_shape[] = TC_INPUT_SHAPE_INIT, out_shape[] = TC_OUTPUT_SHAPE_INIT;
    int i;
    printf("name=%s\nhash=%016llx\nmode=%d\narena=%ld\n", TC_MODEL_NAME,
           (unsigned long long)TC_MODEL_HASH, TC_REQUANT_MODE, (long)TC_ARENA_SIZE);
    printf("in_size=%ld\nout_size=%ld\nin_rank=%d\nout_rank=%d\n", (long)TC_INPUT_SIZE,
           (long)TC_OUTPUT_SIZE, TC_INPUT_RANK, TC_OUTPUT_RANK);
    printf("in_scale=%08lx\nin_zp=%d\nout_scale=%08lx\nout_zp=%d\n",
           (unsigned long)TC_INPUT_SCALE_BITS, TC_INPUT_ZERO_POINT,
           (unsigned long)TC_OUTPUT_SCALE_BITS, TC_OUTPUT_ZERO_POINT);
    printf("layers=%d\nmacs=%lu\nin_shape=", TC_NUM_LAYERS, (unsigned long)TC_TOTAL_MACS);
    for (i = 0; i < TC_INPUT_RANK; i++) printf("%d,", in_shape[i]);
    printf("\nout_shape=");
    for (i = 0; i < TC_OUTPUT_RANK; i++) printf("%d,", out_shape[i]);
    printf("\nlayer0_op=%ld\n", (long)tc_layers[0].op);
    return 0;
}
"""


def _bits(value: float) -> str:
    return "%08x" % struct.unpack("<I", struct.pack("<f", value))[0]


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_macros_carry_the_model(mode, tmp_path):
    cc = require_tool("gcc")
    name = 'odd "name" ??= \\ \u00e9'  # quotes, a trigraph, a backslash, UTF-8
    model = random_model(np.random.default_rng(3), SPEC[0], SPEC[1], mode, name=name)
    paths = write_c_sources(model, tmp_path)
    assert [p.name for p in paths] == ["model_data.h", "model_data.c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_data.c", "model_data.h"]
    (tmp_path / "main.c").write_text(PRINT_MACROS)
    exe = tmp_path / "macros"
    subprocess.run([cc, *CFLAGS, "-I", str(tmp_path), str(tmp_path / "main.c"),
                    str(tmp_path / "model_data.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], capture_output=True, check=True).stdout.decode()
    values = dict(line.split("=", 1) for line in out.splitlines())
    inp, outp = model.input_spec, model.output_spec
    # expected values come from the model and the hand-written spec, not from the generator
    assert values["name"] == name
    assert values["hash"] == model.hash
    assert values["mode"] == ("1" if mode == "float" else "0")
    assert int(values["arena"]) == model.arena_size
    assert (int(values["in_size"]), int(values["out_size"])) == (6 * 5 * 2, 3)
    assert (values["in_rank"], values["out_rank"]) == ("3", "1")
    assert values["in_shape"] == "6,5,2," and values["out_shape"] == "3,"
    assert values["in_scale"] == _bits(inp.scale) and int(values["in_zp"]) == inp.zero_point
    assert values["out_scale"] == _bits(outp.scale) and int(values["out_zp"]) == outp.zero_point
    assert int(values["layers"]) == len(SPEC[1])
    # MACs by hand: conv 6*5*4*9*2, depthwise 6*5*4*9, 1x1 on 3x2: 3*2*4*4, fc 4*3
    assert int(values["macs"]) == 6 * 5 * 4 * 9 * 2 + 6 * 5 * 4 * 9 + 3 * 2 * 4 * 4 + 4 * 3


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("compiler,flags", [
    ("gcc", ()),
    ("arm-none-eabi-gcc", ("-mcpu=cortex-m3", "-mthumb", "-Os")),
    ("arm-none-eabi-gcc", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard",
                           "-mfpu=fpv4-sp-d16", "-Os")),
])
def test_compiles_standalone_with_strict_flags(mode, compiler, flags, tmp_path):
    cc = require_tool(compiler)
    model = random_model(np.random.default_rng(4), SPEC[0], SPEC[1], mode)
    write_c_sources(model, tmp_path)
    source = (tmp_path / "model_data.c").read_text()
    header = (tmp_path / "model_data.h").read_text()
    assert "#ifndef TC_MODEL_DATA_H" in header and "#ifndef TC_ALIGN" in header
    includes = [ln for ln in (header + source).splitlines() if ln.startswith("#include")]
    assert set(includes) == {"#include <stdint.h>", '#include "model_data.h"'}
    if mode == "fixed":
        assert "static const float" not in source
    result = subprocess.run([cc, *CFLAGS, *flags, "-c", str(tmp_path / "model_data.c"),
                             "-o", str(tmp_path / "model_data.o")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    # the header also compiles twice in one unit (include guard) and as a user overrides TC_ALIGN
    (tmp_path / "twice.c").write_text('#define TC_ALIGN\n#include "model_data.h"\n'
                                      '#include "model_data.h"\nint tc_twice;\n')
    result = subprocess.run([cc, *CFLAGS, *flags, "-I", str(tmp_path), "-c",
                             str(tmp_path / "twice.c"), "-o", str(tmp_path / "twice.o")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_weights_are_copied_verbatim(tmp_path):
    model = random_model(np.random.default_rng(5), SPEC[0], SPEC[1], "fixed")
    write_c_sources(model, tmp_path)
    source = (tmp_path / "model_data.c").read_text()
    body = source.split("tc_l0_weights[", 1)[1].split("{", 1)[1].split("}", 1)[0]
    values = np.array([int(v) for v in body.replace("\n", " ").split(",") if v.strip()])
    assert np.array_equal(values, model.layers[0].arrays["weights"].reshape(-1))


def test_unplanned_arena_is_refused(tmp_path):
    model = random_model(np.random.default_rng(6), SPEC[0], SPEC[1], "fixed")
    model.arena_size = 10
    with pytest.raises(TinyconvError, match="arena"):
        write_c_sources(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_overlapping_tensors_are_refused(tmp_path):
    model = random_model(np.random.default_rng(6), SPEC[0], SPEC[1], "fixed")
    first = model.layers[0]
    model.tensors[first.output].offset = model.tensors[first.inputs[0]].offset
    with pytest.raises(TinyconvError, match=f"layer '{first.name}' writes"):
        write_c_sources(model, tmp_path)


def test_inconsistent_layer_names_the_layer(tmp_path):
    model = random_model(np.random.default_rng(6), SPEC[0], SPEC[1], "fixed")
    model.layers[0].params["stride"] = [2, 2]
    with pytest.raises(TinyconvError,
                       match=r"layer 'conv2d_0' \(conv2d\): output has shape \(6, 5, "):
        write_c_sources(model, tmp_path)


SCRATCH_PROBE = r"""
#include <stdio.h>
#include "model_data.h"
#include "tc_kernels.h"
int main(void)
{
    const tc_layer_t *l = &tc_layers[0];
    tc_conv_params p;
    tc_filter_dims f;
    tc_dims out;
    p.stride_w = l->stride_w;
    p.dilation_w = l->dilation_w;
    p.groups = l->groups;
    f.m = l->out_c;
    f.kh = l->kernel_h;
    f.kw = l->kernel_w;
    f.c = l->in_c / l->groups;
    out.h = l->out_h;
    out.w = l->out_w;
    out.c = l->out_c;
    printf("%ld %ld %ld\n", (long)TC_SCRATCH_SIZE, (long)tc_conv2d_get_buffer_size(&f),
           (long)tc_conv2d_1ch_get_buffer_size(&p, &f, &out));
    return 0;
}
"""


@pytest.mark.parametrize("layer", [
    dict(kernel=(3, 3), padding=(1, 1, 1, 1)),  # even width 10
    dict(kernel=(3, 3), stride=(2, 2), padding=(2, 0, 1, 3)),  # odd output width 5
    dict(kernel=(5, 5), dilation=(1, 2), padding=(2, 4, 2, 4)),
    dict(kernel=(1, 1)),  # the rows fit the output's tail, then the input: no scratch
    dict(kernel=(2, 4), stride=(1, 3)),
])
def test_one_channel_scratch_is_the_kernels_size(layer, tmp_path):
    """A one-channel conv's TC_SCRATCH_SIZE is tc_conv2d_1ch_get_buffer_size (larger than the
    generic path's, which it also covers for weights the kernel refuses), or the least (4)
    where its rows go to the output's tail and then the spare input (tc_conv2d_1ch.c): the
    36 B of the 1x1 layer's rows fit 9x10x5's output with 8 rows to spare, and the input rows
    before row 8 hold 80 B."""
    cc = require_tool("gcc")
    model = random_model(np.random.default_rng(8), (9, 10, 1),
                         [dict(op="conv2d", out=5, **layer)], "fixed")
    write_c_sources(model, tmp_path)
    (tmp_path / "probe.c").write_text(SCRATCH_PROBE)
    exe = tmp_path / "probe"
    subprocess.run([cc, *CFLAGS, "-I", str(tmp_path), "-I", str(FIRMWARE_SRC),
                    str(tmp_path / "probe.c"), str(FIRMWARE_SRC / "tc_conv2d.c"),
                    str(FIRMWARE_SRC / "tc_conv2d_1ch.c"), str(FIRMWARE_SRC / "tc_matmul.c"),
                    str(tmp_path / "model_data.c"), "-o", str(exe)], check=True)
    scratch, generic, one_channel = map(int, subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.split())
    assert one_channel > generic
    assert scratch == (4 if layer["kernel"] == (1, 1) else one_channel)
