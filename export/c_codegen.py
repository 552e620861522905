"""C code generation: a ``QuantModel`` written out as ``model_data.h`` / ``model_data.c``.

The generated files are the device's copy of the model: ``const`` weights (OHWI), biases and
requantization constants copied verbatim from the model (never re-derived), the conv kernels'
per-channel constants derived from them once (export/conv_constants.py: flash instead of
kernel scratch; a fully connected layer's bias with its input zero point folded in comes from
there too), a ``const`` layer table that ``firmware/src/tc_model.c`` walks, and the
macros of the firmware contract (name,
hash, shapes, quantization, arena size). They depend on ``<stdint.h>`` only, so a user can drop
them into any C99 project; the layer table's struct is defined in the header itself and carries
a version number that ``tc_model.c`` checks at compile time.

Values that are floats in the model (scales) are written as C99 hexadecimal float literals, so
the device sees exactly the float32 bits runtime/ uses; in ``fixed`` mode no float appears at
all, and input/output scales are given as IEEE-754 bit patterns.
"""
from __future__ import annotations

import functools
import operator
import struct
from pathlib import Path

import numpy as np

from export import conv_constants
from export.plan import free_gap, lifetimes
from runtime.errors import TinyconvError
from runtime.kernels.tensor_ops import CODES, PAD_MODES
from runtime.model import Layer, QuantModel, TensorSpec, layer_macs, write_atomic

LAYER_TABLE_VERSION = 4
OP_CODES = {"conv2d": 0, "depthwise_conv2d": 1, "fully_connected": 2, "max_pool2d": 3,
            "avg_pool2d": 4, "global_avg_pool": 5, "add": 6, "softmax": 7, "lookup": 8,
            "concat": 9, "pad": 10, "mul": 11, "resize_nearest": 12, "sub": 13}
RQ_CODES = {"double": 0, "single": 1, "float": 2}  # firmware/src/tc_requant.h TC_RQ_*
IPARAM_COUNT = 10

# Op-specific constants of avg_pool2d / global_avg_pool / add (runtime.kernels *_constants),
# in the order tc_model.c reads them from tc_layer_t.iparams / .fparams.
_IPARAM_KEYS = {
    ("avg_pool2d", "fixed"): ("input_zero_point", "output_zero_point", "multiplier", "shift",
                              "rescale"),
    ("avg_pool2d", "float"): ("input_zero_point", "output_zero_point"),
    ("global_avg_pool", "fixed"): ("input_zero_point", "output_zero_point", "multiplier",
                                   "shift", "count"),
    ("global_avg_pool", "float"): ("input_zero_point", "output_zero_point", None, None,
                                   "count"),
    ("add", "fixed"): ("a_zero_point", "b_zero_point", "output_zero_point", "left_shift",
                       "a_multiplier", "a_shift", "b_multiplier", "b_shift", "multiplier",
                       "shift"),
    ("add", "float"): (),
    ("softmax", "fixed"): ("input_multiplier", "input_left_shift", "diff_min"),
    ("softmax", "float"): (),
    ("mul", "fixed"): ("a_zero_point", "b_zero_point", "output_zero_point", "multiplier",
                       "shift"),
    ("mul", "float"): ("a_zero_point", "b_zero_point", "output_zero_point"),
    ("sub", "float"): ("a_zero_point", "b_zero_point", "output_zero_point"),
}
_IPARAM_KEYS[("sub", "fixed")] = _IPARAM_KEYS[("add", "fixed")]
_FPARAM_KEYS = {
    ("avg_pool2d", "float"): ("x_scale", "y_scale", "global_scale"),
    ("global_avg_pool", "float"): ("scale",),
    ("add", "float"): ("a_scale", "b_scale", "offset"),
    ("mul", "float"): ("scale",),
    ("sub", "float"): ("a_scale", "b_scale", "y_scale"),
}

_HEADER_TYPES = """\
#define TC_LAYER_TABLE_VERSION {version}

/* tc_layer_t.op */
{op_macros}

/* tc_layer_t.rq_mode: how conv2d / fully_connected requantize (firmware/src/tc_requant.h) */
#define TC_LAYER_RQ_FIXED_DOUBLE 0
#define TC_LAYER_RQ_FIXED_SINGLE 1
#define TC_LAYER_RQ_FLOAT 2

/* One layer. Shapes are per sample, NHWC; a vector of K values is 1 x 1 x K. Offsets are byte
 * offsets into the activation arena. iparams / fparams hold the op-specific constants of
 * avg_pool2d, global_avg_pool, add, mul and sub in the order export/c_codegen.py documents.
 * concat: iparams[0] inputs, bias {{arena offset, channels, table index or -1}} per input,
 * weights the 256-entry tables; resize_nearest: bias the out_h row then out_w column indices;
 * pad: iparams[0] the value, iparams[1] the mode (0 constant, 1 reflect, 2 edge); mul: iparams[5] the size of b (a's, out_c or 1). */
/* A word of a kernel's table: a constant or, on Thumb-2, the address of code in the kernel's
 * threaded loop (tc_kernels.h's tc_kernel_word) */
typedef union {{
    int32_t value;
    const unsigned char *code;
}} tc_layer_word;

typedef struct {{
    int32_t op, rq_mode;
    uint32_t input_offset, input2_offset, output_offset;
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t groups, count_include_pad;
    int32_t ceil_pad_bottom, ceil_pad_right; /* avg_pool2d: uncounted part of the padding */
    int32_t input_zero_point, output_zero_point, act_min, act_max;
    uint32_t macs;
    const int8_t *weights;      /* OHWI [out_c, kernel_h, kernel_w, in_c / groups] or [out_c, K] */
    const int32_t *bias;        /* [out_c] or 0; fully_connected: input zero point folded in */
    const int32_t *multiplier;  /* fixed mode: [out_c] */
    const int32_t *shift;       /* fixed mode: [out_c] */
    const float *scale;         /* float mode: [out_c] */
    int32_t iparams[{iparams}];
    const float *fparams;
    /* conv2d, depthwise 3x3: per channel the fast requantization's {{fast, multiplier, offset,
     * right}} (tc_requant_fast; depthwise: 2 flag bits a channel, tc_depthwise.h) and the
     * bias with the input zero point folded in (depthwise: in the bias's place); 1x1: the
     * weights as int16 row pairs for a DSP core's dot loop, or 0 */
    const int32_t *fast;
    const int32_t *folded_bias;
    const int16_t *weights_s16;
    const tc_layer_word *table_1ch; /* one-channel conv2d: its kernel's table, or 0 */
}} tc_layer_t;

extern const tc_layer_t tc_layers[TC_NUM_LAYERS];
"""


# Bytes a layer's weights may take in a second, faster form: the int16 pointwise weights
# (flash, Cortex-M4-class images only) and the one-channel kernel's table (flash).
# Past this the kernels run without the copy, so that no scratch grows with a layer's weights
# and the flash stays near the weights' own (MobileNet's 256x256 pointwise layer: 128 KB).
WEIGHT_COPY_MAX = 4096


def _fail(model: QuantModel, message: str) -> TinyconvError:
    return TinyconvError(f"model {model.name!r}: cannot generate C: {message}")


def _c_string(text: str) -> str:
    """A C string literal for any text (escapes, and no '??' trigraphs under -std=c99)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\?':
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


def _c_int(value: int) -> str:
    value = int(value)
    return "(-2147483647 - 1)" if value == -(2**31) else str(value)


def _c_float(value) -> str:
    """Exact float32 literal in C99 hexadecimal notation."""
    value = float(np.float32(value))
    if not np.isfinite(value):
        raise ValueError(f"non-finite float {value}")
    return float(value).hex() + "f"


def _float_bits(value: float) -> str:
    return "0x%08xUL" % struct.unpack("<I", struct.pack("<f", float(value)))[0]


def _hw_c(spec: TensorSpec) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in spec.shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 1:
        return 1, 1, shape[0]
    raise ValueError(f"tensor {spec.name!r} has shape {shape}; expected (H, W, C) or (K,)")


class _Writer:
    """Accumulates the ``static const`` arrays of model_data.c."""

    def __init__(self):
        self.chunks: list[str] = []

    def array(self, ctype: str, name: str, values, fmt, comment: str) -> str:
        flat = np.asarray(values).reshape(-1)
        if flat.size == 0:
            raise ValueError(f"{comment}: empty array")
        items = [fmt(v) for v in flat.tolist()]
        lines = []
        for start in range(0, len(items), 16):
            lines.append("    " + ", ".join(items[start:start + 16]) + ",")
        self.chunks.append(f"/* {_comment(comment)} */\nstatic const {ctype} {name}[{flat.size}]"
                           f" TC_ALIGN = {{\n" + "\n".join(lines) + "\n};\n")
        return name


def _layer_entry(model: QuantModel, index: int, layer: Layer, w: _Writer) -> tuple[dict, int]:
    """The tc_layer_t initializer fields of one layer, and its scratch-buffer need in bytes.

    ``model.validate()`` has checked the layer's arrays, params and shapes; what is refused
    here is only what the firmware cannot do."""
    t = model.tensors
    src = t[layer.inputs[0]]
    dst = t[layer.output]
    in_h, in_w, in_c = _hw_c(src)
    out_h, out_w, out_c = _hw_c(dst)
    p = layer.params
    a = layer.arrays
    mode = model.requant_mode
    e = {"op": None, "rq_mode": 0, "input_offset": src.offset, "input2_offset": 0,
         "output_offset": dst.offset, "in_h": in_h, "in_w": in_w, "in_c": in_c,
         "out_h": out_h, "out_w": out_w, "out_c": out_c, "kernel_h": 1, "kernel_w": 1,
         "stride_h": 1, "stride_w": 1, "dilation_h": 1, "dilation_w": 1, "pad_top": 0,
         "pad_left": 0, "pad_bottom": 0, "pad_right": 0, "groups": 1, "count_include_pad": 0,
         "ceil_pad_bottom": 0, "ceil_pad_right": 0,
         "input_zero_point": src.zero_point, "output_zero_point": dst.zero_point,
         "act_min": int(p.get("act_min", -128)), "act_max": int(p.get("act_max", 127)),
         "macs": layer_macs(model, layer), "weights": "0", "bias": "0", "multiplier": "0", "shift": "0",
         "scale": "0", "iparams": [0] * IPARAM_COUNT, "fparams": "0", "fast": "0",
         "folded_bias": "0", "weights_s16": "0", "table_1ch": "0"}
    prefix = f"tc_l{index}"
    scratch = 0

    def spatial(kh, kw, dh=1, dw=1):
        stride = p.get("stride", [1, 1])
        pads = p.get("padding", [0, 0, 0, 0])
        e.update(kernel_h=kh, kernel_w=kw, stride_h=int(stride[0]), stride_w=int(stride[1]),
                 dilation_h=dh, dilation_w=dw, pad_top=int(pads[0]), pad_left=int(pads[1]),
                 pad_bottom=int(pads[2]), pad_right=int(pads[3]))
        if min(pads) < 0:
            raise ValueError(f"negative padding {list(pads)} is not supported by the firmware")

    def requant_arrays(m):
        rq = layer.requant()
        if rq.mode == "float":
            e["rq_mode"] = RQ_CODES["float"]
            e["scale"] = w.array("float", f"{prefix}_scale", np.broadcast_to(rq.scale, (m,)),
                                 _c_float, f"{layer.name}: float32 requantization scale")
        else:
            e["rq_mode"] = RQ_CODES[rq.rounding]
            e["multiplier"] = w.array("int32_t", f"{prefix}_multiplier",
                                      np.broadcast_to(rq.multiplier, (m,)), _c_int,
                                      f"{layer.name}: Q31 multiplier")
            e["shift"] = w.array("int32_t", f"{prefix}_shift", np.broadcast_to(rq.shift, (m,)),
                                 _c_int, f"{layer.name}: shift (> 0: left)")

    def weights_and_bias(weights, m, bias=None, bias_comment="bias"):
        e["weights"] = w.array("int8_t", f"{prefix}_weights", weights, str,
                               f"{layer.name}: weights {'x'.join(map(str, weights.shape))}")
        bias = a.get("bias") if bias is None else bias
        if bias is not None:
            e["bias"] = w.array("int32_t", f"{prefix}_bias", bias, _c_int,
                                f"{layer.name}: {bias_comment}")
        requant_arrays(m)

    if layer.op == "conv2d":
        weights = a["weights"]
        m, kh, kw, cg = weights.shape
        groups = int(p.get("groups", 1))
        dil = p.get("dilation", [1, 1])
        spatial(kh, kw, int(dil[0]), int(dil[1]))
        depthwise = cg == 1 and groups == in_c and groups > 1
        e.update(op=OP_CODES["depthwise_conv2d" if depthwise else "conv2d"], groups=groups)
        # no later layer reads the input (iparams[0], tc_conv_params.input_spare): the pixels
        # already read may hold a kernel's column or rows. The model's input may be spare too:
        # every caller writes it before each run (tc_model_run copies it, each INFER frame is
        # decoded into it, a resend carries the image again) and tc_model.h keeps nothing live
        # between runs.
        spare = lifetimes(model)[layer.inputs[0]][1] == index
        if depthwise:  # no scratch: tc_depthwise_conv2d_get_buffer_size
            if kh == kw == 3 and int(dil[1]) == 1:
                # the Thumb-2 column kernel's room: the spare input, or an arena gap that
                # holds its columns (tc_dw_column_bytes)
                e["iparams"][0] = int(spare)
                _arena_room(model, index, e, 12 * ((out_w + 1) * e["stride_w"] + 3))
                _depthwise_constants(layer, e, w, prefix)
                requant_arrays(m)
                return e, scratch
        else:
            scratch = _conv_constants(layer, e, w, prefix, src.zero_point, dst.zero_point,
                                      spare)
            _arena_room(model, index, e, scratch)
        weights_and_bias(weights, m)
    elif layer.op == "fully_connected":
        weights = a["weights"]
        e["op"] = OP_CODES["fully_connected"]  # no scratch: tc_fully_connected_get_buffer_size
        if src.zero_point != 0:  # folded into the bias: the device multiplies raw inputs
            weights_and_bias(weights, weights.shape[0], conv_constants.folded_bias(
                weights, a.get("bias"), src.zero_point),
                             "bias - input zero point * row sums of the weights")
            e["input_zero_point"] = 0
        else:
            weights_and_bias(weights, weights.shape[0])
    elif layer.op in ("max_pool2d", "avg_pool2d"):
        kh, kw = (int(k) for k in p["kernel"])
        spatial(kh, kw)
        e["op"] = OP_CODES[layer.op]
        e["count_include_pad"] = int(bool(p.get("count_include_pad", False)))
        e["ceil_pad_bottom"], e["ceil_pad_right"] = (int(v) for v in p.get("ceil_pad", (0, 0)))
        if layer.op == "avg_pool2d":
            _op_constants(layer, mode, e, w, prefix)
    elif layer.op == "global_avg_pool":
        e.update(op=OP_CODES["global_avg_pool"], kernel_h=in_h, kernel_w=in_w)
        _op_constants(layer, mode, e, w, prefix)
    elif layer.op == "add":
        e.update(op=OP_CODES["add"], input2_offset=t[layer.inputs[1]].offset)
        _op_constants(layer, mode, e, w, prefix)
    elif layer.op == "lookup":  # weights: the table(s), iparams[0]: how many (1 or in_c)
        table = a["table"]
        e["op"] = OP_CODES["lookup"]
        e["iparams"][0] = 1 if table.ndim == 1 else int(table.shape[0])
        e["weights"] = w.array("int8_t", f"{prefix}_table", table, str,
                               f"{layer.name}: {p.get('function', 'lookup')} table, "
                               "indexed by x + 128")
    elif layer.op == "softmax":
        e["op"] = OP_CODES["softmax"]
        _op_constants(layer, mode, e, w, prefix)
        if mode == "float":
            e["fparams"] = w.array("float", f"{prefix}_exp_table", a["exp_table"], _c_float,
                                   f"{layer.name}: exp table, indexed by row max - x")
    elif layer.op in ("concat", "pad", "mul", "resize_nearest", "sub"):
        _tensor_op(model, layer, e, w, prefix)
    else:
        raise ValueError(f"op {layer.op!r} is not supported by the firmware")
    return e, scratch


def _arena_room(model: QuantModel, index: int, e: dict, need: int) -> None:
    """A conv layer's buffer from the arena: iparams[1], [2] (offset, length) of the lowest
    arena run no tensor alive at this layer uses that holds ``need`` bytes (export/plan.py
    free_gap), which tc_model.c hands the kernel in place of TC_SCRATCH_SIZE's. It costs no
    RAM, and a longer run lets the 3x3 kernel walk wider strips. TC_SCRATCH_SIZE still covers
    every layer's need: the layers with no gap are those at the arena's busiest steps, and
    they run faster in the room another layer's need leaves them (a smaller TC_SCRATCH_SIZE
    was measured: ResNet-8 -2,880 B of RAM for +0.2 % instructions, and the bench's
    28x28x8 -> 16 layer 1.43 -> 1.46 instructions per MAC on the Cortex-M4)."""
    gap = free_gap(model, index, -(-need // 4) * 4) if need > 0 else None
    if gap is not None:
        e["iparams"][1:3] = list(gap)


def _conv_constants(layer: Layer, e: dict, w: _Writer, prefix: str, input_zero_point: int,
                    output_zero_point: int, spare_input: bool = False) -> int:
    """A (non-depthwise) conv2d's constants computed at export (export/conv_constants.py) and
    its kernel scratch in bytes: tc_conv2d_get_buffer_size, plus the row ring where the kernel
    takes it, or the one-channel kernel's tc_conv2d_1ch_get_buffer_size."""
    weights, bias = layer.arrays["weights"], layer.arrays.get("bias")
    m, kh, kw, cg = weights.shape
    e["fast"] = w.array("int32_t", f"{prefix}_fast",
                        conv_constants.fast_requant(weights, bias, layer.requant(),
                                                    output_zero_point), _c_int,
                        f"{layer.name}: fast requantization {{fast, multiplier, offset, right}}")
    e["folded_bias"] = w.array("int32_t", f"{prefix}_folded_bias",
                               conv_constants.folded_bias(weights, bias, input_zero_point),
                               _c_int, f"{layer.name}: bias - input zero point * sum w")
    ring = e["groups"] == 1 and e["dilation_h"] == e["dilation_w"] == 1 and cg % 4 == 0
    # the pair column: two int16 im2col columns
    scratch = column = -(-(2 * kh * kw * cg * 2) // 4) * 4
    # tc_conv2d_get_column_size: a 1x1 conv whose windows are all inside the image keeps its
    # column in the output's unwritten part, or needs none
    pointwise = e["groups"] == 1 and kh == kw == 1 and e["pad_top"] == e["pad_left"] == 0 \
        and (e["out_h"] - 1) * e["stride_h"] < e["in_h"] \
        and (e["out_w"] - 1) * e["stride_w"] < e["in_w"]
    if pointwise:
        scratch = 0
        # iparams[0] (tc_conv_params.input_spare): no later layer reads the input, so the
        # pixels already read may hold the column when the output has no room left for it
        e["iparams"][0] = int(spare_input)
    if ring:
        # tc_conv2d_get_ring_size: kh int16 input rows (4-byte tag each) of a strip of output
        # columns, the widest even one (up to out_w & ~1) whose ring is no larger than the
        # column
        columns = (column // kh - 4) // (cg * 2)
        strip = min(((columns - kw) // e["stride_w"] + 1) & ~1 if columns >= kw else 0,
                    e["out_w"] & ~1)
        if strip > 0 and not pointwise:
            scratch += kh * (4 + ((strip - 1) * e["stride_w"] + kw) * cg * 2)
        pairs = conv_constants.weights_s16_pairs(weights)
        if kh == kw == 1 and 0 < pairs.nbytes <= WEIGHT_COPY_MAX:
            name = w.array("int16_t", f"{prefix}_weights_s16", pairs, str,
                           f"{layer.name}: int16 weight row pairs, pair-swapped")
            w.chunks[-1] = f"#if TC_DSP_WEIGHTS\n{w.chunks[-1]}#endif\n"
            e["weights_s16"] = f"TC_DSP_ONLY({name})"
    if e["groups"] == 1 and cg == 1:
        scratch = _one_channel(layer, e, w, prefix, scratch, spare_input)
    return scratch


def _depthwise_constants(layer: Layer, e: dict, w: _Writer, prefix: str) -> None:
    """A depthwise 3x3 layer's weights and its constants computed at export
    (conv_constants.depthwise_flags, folded_bias): the bias with the input zero point folded in
    takes the plain bias's place (the kernels read only it, tc_depthwise.h)."""
    weights, bias = layer.arrays["weights"], layer.arrays.get("bias")
    e["weights"] = w.array("int8_t", f"{prefix}_weights", weights, str,
                           f"{layer.name}: weights {'x'.join(map(str, weights.shape))}")
    e["fast"] = w.array("int32_t", f"{prefix}_fast", conv_constants.depthwise_flags(
        weights, bias, layer.requant(), e["output_zero_point"]), _c_int,
                        f"{layer.name}: fast requantization flags, 2 bits a channel")
    e["folded_bias"] = w.array("int32_t", f"{prefix}_folded_bias", conv_constants.folded_bias(
        weights, bias, e["input_zero_point"]), _c_int,
                               f"{layer.name}: bias - input zero point * sum w")


def _one_channel(layer: Layer, e: dict, w: _Writer, prefix: str, scratch: int,
                 spare_input: bool) -> int:
    """A one-channel conv2d's table in flash (conv_constants.one_channel_table) and the scratch
    with its kernel's packed rows (tc_conv2d_1ch_get_buffer_size: kh rows of the pairs'
    windows), or none when the rows fit the output's tail until they can move to input rows
    no later window reads (spare input); the generic path's scratch alone when export keeps
    the kernel off the layer."""
    weights = layer.arrays["weights"]
    m, kh, kw, _ = weights.shape
    width = ((e["out_w"] + 1) // 2 - 1) * 2 * e["stride_w"] + (kw - 1) * e["dilation_w"] + 1
    rows = 4 * kh * width
    if rows > max(scratch, WEIGHT_COPY_MAX):  # the generic path runs
        return scratch
    table = conv_constants.one_channel_table(
        weights, conv_constants.fast_requant(weights, layer.arrays.get("bias"),
                                             layer.requant(), e["output_zero_point"]),
        conv_constants.folded_bias(weights, layer.arrays.get("bias"), e["input_zero_point"]),
        e["act_max"], e["stride_w"])
    if table is None or 4 * len(table) > WEIGHT_COPY_MAX:
        return scratch
    words = [f"TC_CODE({v})" if isinstance(v, str) else f"{{{_c_int(v)}}}" for v in table]
    e["table_1ch"] = w.array("tc_layer_word", f"{prefix}_1ch", words, str,
                             f"{layer.name}: one-channel kernel's table")
    # tc_conv2d_1ch's test without the caller's buffer, with the worst alignment (3 bytes)
    row_bytes = e["out_w"] * m
    move = max(e["out_h"] * row_bytes - rows - 3, 0) // row_bytes
    if spare_input and kh <= ONE_CHANNEL_MAX_KH and move > 0 and \
            (move * e["stride_h"] - e["pad_top"]) * e["in_w"] - 3 >= rows:
        e["iparams"][0] = 1
        return 0
    return max(scratch, rows)


ONE_CHANNEL_MAX_KH = 16  # tc_conv2d_1ch.c TC_1CH_MAX_KH


def layer_scratch(model: QuantModel) -> list[int]:
    """Each layer's kernel scratch in bytes; the generated TC_SCRATCH_SIZE is the largest."""
    return [_layer_entry(model, i, layer, _Writer())[1] for i, layer in enumerate(model.layers)]


def _tensor_op(model: QuantModel, layer: Layer, e: dict, w: _Writer, prefix: str) -> None:
    """The layer-table fields of concat, pad, mul, resize_nearest and sub (see _HEADER_TYPES)."""
    t, a = model.tensors, layer.arrays
    e["op"] = OP_CODES[layer.op]
    if layer.op == "concat":
        parts, tables = [], []
        for name, table in zip(layer.inputs, a["tables"]):
            index = -1 if np.array_equal(table, CODES) else len(tables)
            tables += [] if index < 0 else [table]
            parts += [t[name].offset, _hw_c(t[name])[2], index]
        e["iparams"][0] = len(layer.inputs)
        e["bias"] = w.array("int32_t", f"{prefix}_inputs", np.array(parts), _c_int,
                            f"{layer.name}: arena offset, channels, table per input")
        if tables:
            e["weights"] = w.array("int8_t", f"{prefix}_tables", np.stack(tables), str,
                                   f"{layer.name}: requantization tables")
    elif layer.op == "pad":
        top, left, bottom, right = (int(v) for v in layer.params["pads"])
        e.update(pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right)
        e["iparams"][0] = int(a["value"][0])
        e["iparams"][1] = PAD_MODES.index(layer.params.get("mode", "constant"))
    elif layer.op == "resize_nearest":
        e["bias"] = w.array("int32_t", f"{prefix}_indices",
                            np.concatenate([a["rows"], a["cols"]]), _c_int,
                            f"{layer.name}: source row, then column, of each output pixel")
    else:  # mul, sub
        e["input2_offset"] = t[layer.inputs[1]].offset
        _op_constants(layer, model.requant_mode, e, w, prefix)
        if layer.op == "mul":
            e["iparams"][5] = t[layer.inputs[1]].size


def _op_constants(layer: Layer, mode: str, e: dict, w: _Writer, prefix: str) -> None:
    a = layer.arrays
    for slot, key in enumerate(_IPARAM_KEYS[(layer.op, mode)]):
        if key is not None:
            e["iparams"][slot] = int(np.asarray(a[key]).reshape(-1)[0])
    fkeys = _FPARAM_KEYS.get((layer.op, mode))
    if fkeys:
        values = [np.asarray(a[k], np.float32).reshape(-1)[0] for k in fkeys]
        e["fparams"] = w.array("float", f"{prefix}_fparams", np.array(values, np.float32),
                               _c_float, f"{layer.name}: {', '.join(fkeys)}")


def _check_arena(model: QuantModel) -> None:
    """``validate()`` keeps tensors inside a planned arena; the device also needs one planned,
    and no layer writing over its own input."""
    if model.arena_size == 0:
        raise _fail(model, "the activation arena is not planned; plan it first "
                           "(export.plan.plan_arena)")
    for layer in model.layers:
        out = model.tensors[layer.output]
        for name in layer.inputs:
            src = model.tensors[name]
            if src.offset < out.offset + out.size and out.offset < src.offset + src.size:
                raise _fail(model, f"layer {layer.name!r} writes {out.name!r} over its input "
                                   f"{src.name!r} in the arena")


def _shape_init(shape) -> str:
    return "{" + ", ".join(str(int(s)) for s in shape) + "}"


def render(model: QuantModel) -> tuple[str, str]:
    """The text of model_data.h and model_data.c."""
    model.validate()
    if not model.layers:
        raise _fail(model, "the model has no layers")
    _check_arena(model)
    w = _Writer()
    entries = []
    scratch = 4
    for index, layer in enumerate(model.layers):
        try:
            entry, need = _layer_entry(model, index, layer, w)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise _fail(model, f"layer {layer.name!r} ({layer.op}): {detail}") from None
        entries.append((layer, entry))
        scratch = max(scratch, need)
    scratch = -(-scratch // 4) * 4
    inp, out = model.input_spec, model.output_spec
    mode_macro = "TC_REQUANT_FLOAT" if model.requant_mode == "float" else "TC_REQUANT_FIXED"
    total_macs = model.total_macs
    op_macros = "\n".join(f"#define TC_OP_{name.upper()} {code}" for name, code in OP_CODES.items())
    used = functools.reduce(operator.or_, (1 << e["op"] for _, e in entries), 0)
    op_macros += f"\n#define TC_MODEL_OPS 0x{used:x}u /* bit TC_OP_x: the ops this model uses */"
    header = f"""\
/* model_data.h: model {_comment(model.name)} (hash {model.hash}), generated by tinyconv's
 * export/c_codegen.py. Do not edit: re-export instead. Needs <stdint.h> only. */
#ifndef TC_MODEL_DATA_H
#define TC_MODEL_DATA_H

#include <stdint.h>

#define TC_MODEL_NAME {_c_string(model.name)}
#define TC_MODEL_HASH 0x{model.hash}ULL

#define TC_REQUANT_FIXED 0
#define TC_REQUANT_FLOAT 1
#define TC_REQUANT_MODE {mode_macro}

/* Activation arena (bytes) and the model's input/output places in it */
#define TC_ARENA_SIZE {model.arena_size}
#define TC_INPUT_OFFSET {inp.offset}
#define TC_OUTPUT_OFFSET {out.offset}
/* Scratch memory (bytes) the conv2d / fully_connected kernels need */
#define TC_SCRATCH_SIZE {scratch}

#define TC_INPUT_SIZE {inp.size}
#define TC_OUTPUT_SIZE {out.size}
#define TC_INPUT_RANK {len(inp.shape)}
#define TC_INPUT_SHAPE_INIT {_shape_init(inp.shape)}
#define TC_OUTPUT_RANK {len(out.shape)}
#define TC_OUTPUT_SHAPE_INIT {_shape_init(out.shape)}
/* Scales as IEEE-754 float32 bit patterns, so fixed-mode firmware needs no float */
#define TC_INPUT_SCALE_BITS {_float_bits(inp.scale)} /* {float(np.float32(inp.scale))!r} */
#define TC_INPUT_ZERO_POINT ({int(inp.zero_point)})
#define TC_OUTPUT_SCALE_BITS {_float_bits(out.scale)} /* {float(np.float32(out.scale))!r} */
#define TC_OUTPUT_ZERO_POINT ({int(out.zero_point)})

#define TC_NUM_LAYERS {len(entries)}
#define TC_TOTAL_MACS {total_macs}UL

/* Alignment of the weight arrays and the arena; define TC_ALIGN before including this header
 * to override it (e.g. to place weights in a section). */
#ifndef TC_ALIGN
#if defined(__GNUC__)
#define TC_ALIGN __attribute__((aligned(16)))
#else
#define TC_ALIGN
#endif
#endif

""" + _HEADER_TYPES.format(version=LAYER_TABLE_VERSION, op_macros=op_macros,
                           iparams=IPARAM_COUNT) + "\n#endif\n"

    rows = []
    for layer, e in entries:
        fields = []
        for key, value in e.items():
            if key == "iparams":
                value = "{" + ", ".join(_c_int(v) for v in value) + "}"
            elif isinstance(value, (int, np.integer)):
                value = _c_int(value) + ("u" if key.endswith("offset") or key == "macs" else "")
            fields.append(f".{key} = {value}")
        lines = [", ".join(fields[i:i + 4]) for i in range(0, len(fields), 4)]
        rows.append(f"    /* {_comment(layer.name)}: {layer.op} */\n    {{" + ",\n     ".join(lines)
                    + "},")
    source = f"""\
/* model_data.c: model {_comment(model.name)} (hash {model.hash}), generated by tinyconv's
 * export/c_codegen.py. Do not edit: re-export instead. */
#include <stdint.h>

#include "model_data.h"

/* int16 copies of weights only where a dot loop reads them: Thumb-2 with the DSP extension */
#if defined(__thumb2__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TC_DSP_WEIGHTS 1
#define TC_DSP_ONLY(x) x
#else
#define TC_DSP_WEIGHTS 0
#define TC_DSP_ONLY(x) 0
#endif

/* code addresses in the one-channel conv's tables: Thumb-2 only, where its assembly is */
#if defined(__thumb2__)
extern const unsigned char tc_1ch_next[], tc_1ch_last[], tc_1ch_pair_end[], tc_1ch_store[],
    tc_1ch_store_clamp[];
#define TC_CODE(label) {{.code = label}}
#else
#define TC_CODE(label) {{0}}
#endif

""" + "\n".join(w.chunks) + "\nconst tc_layer_t tc_layers[TC_NUM_LAYERS] = {\n" + \
        "\n".join(rows) + "\n};\n"
    return header, source


def write_c_sources(model: QuantModel, out_dir) -> list[Path]:
    """Write ``model_data.h`` and ``model_data.c`` into ``out_dir`` (each atomically) and
    return their paths. Raises TinyconvError naming the layer the firmware cannot run."""
    header, source = render(model)
    out_dir = Path(out_dir)
    paths = [out_dir / "model_data.h", out_dir / "model_data.c"]
    write_atomic(paths[0], header.encode())
    write_atomic(paths[1], source.encode())
    return paths
