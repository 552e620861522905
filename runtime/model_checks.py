"""What a ``QuantModel`` must satisfy before anyone runs it or writes it out as C.

``QuantModel.validate()`` calls ``check_model``; ``from_bytes`` calls ``validate()``, so a
``.tcm`` file whose CRC is right but whose header lies (a hostile or buggy writer) is refused
here, with a ``ModelFileError`` naming the layer and the field, instead of failing deep inside a
kernel. The C generator relies on these checks too and adds only what is specific to the
firmware. The checks are semantic: array dtypes and shapes against the tensors they connect,
op parameters, the output-size formula (``runtime.kernels.output_size``), requantization
constants (``runtime.requant.Requant``), and the arena.
"""
from __future__ import annotations

import math

import numpy as np

from runtime.errors import ModelFileError
from runtime.kernels import ADD_LEFT_SHIFT, output_size, worst_case_accumulator
from runtime.kernels.softmax import OUTPUT_SCALE, OUTPUT_ZERO_POINT, softmax_constants
from runtime.kernels.tensor_ops import PAD_MODES
from runtime.requant import INT32_MAX, MODES, ROUNDINGS, Requant

OPS = ("conv2d", "fully_connected", "max_pool2d", "avg_pool2d", "global_avg_pool", "add",
       "lookup", "softmax", "concat", "pad", "mul", "resize_nearest", "sub")
_INPUT_COUNT = {"add": 2, "mul": 2, "sub": 2, "concat": None}  # None: two or more

# The constants runtime.kernels' *_constants functions make, by (op, mode): name -> dtype.
_I32, _F32 = np.dtype(np.int32), np.dtype(np.float32)
_CONSTANTS = {
    ("avg_pool2d", "fixed"): dict.fromkeys(
        ("input_zero_point", "output_zero_point", "multiplier", "shift", "rescale"), _I32),
    ("avg_pool2d", "float"): {"input_zero_point": _I32, "output_zero_point": _I32,
                              "x_scale": _F32, "y_scale": _F32, "global_scale": _F32},
    ("global_avg_pool", "fixed"): dict.fromkeys(
        ("input_zero_point", "output_zero_point", "count", "multiplier", "shift"), _I32),
    ("global_avg_pool", "float"): {"input_zero_point": _I32, "output_zero_point": _I32,
                                   "count": _I32, "scale": _F32},
    ("add", "fixed"): dict.fromkeys(
        ("a_zero_point", "b_zero_point", "output_zero_point", "left_shift", "a_multiplier",
         "a_shift", "b_multiplier", "b_shift", "multiplier", "shift"), _I32),
    ("add", "float"): {"a_scale": _F32, "b_scale": _F32, "offset": _F32},
    ("mul", "fixed"): dict.fromkeys(
        ("a_zero_point", "b_zero_point", "output_zero_point", "multiplier", "shift"), _I32),
    ("mul", "float"): {"a_zero_point": _I32, "b_zero_point": _I32, "output_zero_point": _I32,
                       "scale": _F32},
    ("sub", "float"): {"a_zero_point": _I32, "b_zero_point": _I32, "output_zero_point": _I32,
                       "a_scale": _F32, "b_scale": _F32, "y_scale": _F32},
}
_CONSTANTS[("sub", "fixed")] = _CONSTANTS[("add", "fixed")]
_REQUANT_KEYS = {"fixed": ("multiplier", "shift"), "float": ("scale",)}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


class _Layer:
    """One layer's checks; every failure names the layer and the field."""

    def __init__(self, model, layer):
        self.model, self.layer = model, layer
        self.params, self.arrays = layer.params, layer.arrays

    def fail(self, what: str, problem: str) -> ModelFileError:
        return ModelFileError(f"layer {self.layer.name!r} ({self.layer.op}): {what} {problem}")

    # -- params ----------------------------------------------------------------------------

    def ints(self, key: str, count: int, default, minimum=None) -> tuple[int, ...]:
        value = self.params.get(key, default)
        if not isinstance(value, (list, tuple)) or len(value) != count or not all(
                _is_int(v) for v in value):
            raise self.fail(key, f"is {value!r}, not a list of {count} integers")
        if minimum is not None and min(value) < minimum:
            raise self.fail(key, f"is {list(value)!r}; every value must be >= {minimum}")
        return tuple(int(v) for v in value)

    def act_range(self) -> None:
        low, high = (self.params.get(k, d) for k, d in (("act_min", -128), ("act_max", 127)))
        if not (_is_int(low) and _is_int(high) and -128 <= low <= high <= 127):
            raise self.fail("act_min/act_max", f"are {low!r}/{high!r}; they must satisfy "
                                               "-128 <= act_min <= act_max <= 127")

    # -- tensors ---------------------------------------------------------------------------

    def tensor(self, index: int | None = 0):
        name = self.layer.output if index is None else self.layer.inputs[index]
        return self.model.tensors[name]

    def hwc(self, index: int | None = 0) -> tuple[int, int, int]:
        spec = self.tensor(index)
        if len(spec.shape) != 3:
            what = "output" if index is None else f"input {spec.name!r}"
            raise self.fail(what, f"has shape {spec.shape}; this op needs (H, W, C)")
        return spec.shape

    def spatial_output(self, in_hw, kernel, stride, padding, dilation, channels) -> None:
        expect = tuple(
            output_size(in_hw[axis], kernel[axis], stride[axis], padding[axis],
                        padding[axis + 2], dilation[axis]) for axis in (0, 1)) + (channels,)
        if min(expect) < 1 or self.tensor(None).shape != expect:
            raise self.fail("output", f"has shape {self.tensor(None).shape} but the input "
                                      f"and parameters give {expect}")

    # -- arrays ----------------------------------------------------------------------------

    def array(self, key: str, dtype, shape=None) -> np.ndarray:
        if key not in self.arrays:
            raise self.fail(f"array {key!r}", "is missing")
        value = self.arrays[key]
        if not isinstance(value, np.ndarray) or value.dtype != dtype:
            got = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise self.fail(f"array {key!r}", f"is {got}, expected {np.dtype(dtype).name}")
        if shape is not None and value.shape != shape:
            raise self.fail(f"array {key!r}", f"has shape {value.shape}, expected {shape}")
        return value

    def only_arrays(self, allowed) -> None:
        extra = sorted(set(self.arrays) - set(allowed))
        if extra:
            raise self.fail("arrays", f"{extra} are not used by this op in "
                                      f"{self.model.requant_mode} mode")

    def fixed_pair(self, multiplier: str, shift: str, rounding: str = "double") -> None:
        try:
            Requant.fixed(self.arrays[multiplier], self.arrays[shift], rounding)
        except ValueError as exc:
            raise self.fail(f"arrays {multiplier!r}/{shift!r}", f"are invalid: {exc}") from None

    def weights_bias_requant(self, weights_ndim: int) -> np.ndarray:
        """The conv / fc constants; returns the weights."""
        weights = self.array("weights", np.int8)
        if weights.ndim != weights_ndim or min(weights.shape) < 1:
            raise self.fail("array 'weights'", f"has shape {weights.shape}; expected "
                                               f"{weights_ndim} non-zero dimensions")
        m = weights.shape[0]
        bias = self.array("bias", np.int32, (m,)) if "bias" in self.arrays else None
        bound = int(worst_case_accumulator(weights, bias).max())
        if bound > INT32_MAX:
            raise self.fail("arrays 'weights'/'bias'", f"allow an accumulator of {bound}, "
                                                       "which overflows int32")
        mode = self.model.requant_mode
        keys = _REQUANT_KEYS[mode]
        self.only_arrays(("weights", "bias") + keys)
        for key in keys:  # per channel, or one value for every channel
            value = self.array(key, _I32 if mode == "fixed" else _F32)
            if value.shape not in ((m,), (1,)):
                raise self.fail(f"array {key!r}", f"has shape {value.shape}, expected ({m},) "
                                                  "or (1,)")
        if mode == "fixed":
            rounding = self.params.get("rounding", "double")
            if rounding not in ROUNDINGS:
                raise self.fail("rounding", f"is {rounding!r}, not one of {ROUNDINGS}")
            self.fixed_pair("multiplier", "shift", rounding)
        else:
            try:
                Requant.float(self.arrays["scale"])
            except ValueError as exc:
                raise self.fail("array 'scale'", f"is invalid: {exc}") from None
        return weights

    def constants(self) -> dict[str, int | float]:
        """The scalar constants of avg_pool2d / global_avg_pool / add, by name."""
        wanted = _CONSTANTS[(self.layer.op, self.model.requant_mode)]
        self.only_arrays(wanted)
        values = {key: self.array(key, dtype, (1,))[0] for key, dtype in wanted.items()}
        for key, value in values.items():
            if key.endswith("zero_point") and not -128 <= value <= 127:
                raise self.fail(f"array {key!r}", f"is {value}, outside [-128, 127]")
            if wanted[key] == _F32 and not np.isfinite(value):
                raise self.fail(f"array {key!r}", f"is {value}; it must be finite")
            if wanted[key] == _F32 and key != "offset" and not value > 0:
                raise self.fail(f"array {key!r}", f"is {value}; a scale must be > 0")
        for prefix in ("a_", "b_", ""):
            if prefix + "multiplier" in values:
                self.fixed_pair(prefix + "multiplier", prefix + "shift")
        if "rescale" in values and values["rescale"] not in (0, 1):
            raise self.fail("array 'rescale'", f"is {values['rescale']}, not 0 or 1")
        if "left_shift" in values and not 0 <= values["left_shift"] <= ADD_LEFT_SHIFT:
            raise self.fail("array 'left_shift'",
                            f"is {values['left_shift']}, outside [0, {ADD_LEFT_SHIFT}]")
        return values

    # -- one method per op -----------------------------------------------------------------

    def conv2d(self) -> None:
        weights = self.weights_bias_requant(4)
        m, kh, kw, cg = weights.shape
        h, w, c = self.hwc()
        groups = self.params.get("groups", 1)
        if not _is_int(groups) or groups < 1 or cg * groups != c or m % groups:
            raise self.fail("groups", f"is {groups!r}; weights {weights.shape} with that many "
                                      f"groups do not map {c} input channels to {m} outputs")
        stride = self.ints("stride", 2, [1, 1], 1)
        dilation = self.ints("dilation", 2, [1, 1], 1)
        padding = self.ints("padding", 4, [0, 0, 0, 0])
        self.spatial_output((h, w), (kh, kw), stride, padding, dilation, m)

    def fully_connected(self) -> None:
        weights = self.weights_bias_requant(2)
        depth = self.tensor().size
        if weights.shape[1] != depth:
            raise self.fail("array 'weights'", f"has shape {weights.shape} but the input has "
                                               f"{depth} values")
        if self.tensor(None).size != weights.shape[0]:
            raise self.fail("output", f"has shape {self.tensor(None).shape}, not "
                                      f"({weights.shape[0]},)")

    def pool(self) -> None:
        h, w, c = self.hwc()
        kernel = self.ints("kernel", 2, None, 1)
        stride = self.ints("stride", 2, kernel, 1)
        padding = self.ints("padding", 4, [0, 0, 0, 0])
        self.spatial_output((h, w), kernel, stride, padding, (1, 1), c)

    def max_pool2d(self) -> None:
        self.pool()
        self.only_arrays(())
        src, dst = self.tensor(), self.tensor(None)
        if (np.float32(src.scale), src.zero_point) != (np.float32(dst.scale), dst.zero_point):
            raise self.fail("output", "must keep its input's scale and zero point")

    def avg_pool2d(self) -> None:
        self.pool()
        include = self.params.get("count_include_pad", False)
        if include not in (True, False):
            raise self.fail("count_include_pad", f"is {include!r}, not a bool")
        padding = self.ints("padding", 4, [0, 0, 0, 0])
        ceil_pad = self.ints("ceil_pad", 2, [0, 0])
        if not all(0 <= ceil_pad[i] <= max(padding[2 + i], 0) for i in (0, 1)):
            raise self.fail("ceil_pad", f"is {ceil_pad}; it must lie within the bottom and "
                                        f"right padding {padding[2:]}")
        self.constants()

    def global_avg_pool(self) -> None:
        h, w, c = self.hwc()
        if self.tensor(None).shape not in ((1, 1, c), (c,)):
            raise self.fail("output", f"has shape {self.tensor(None).shape}, not (1, 1, {c})")
        count = self.constants()["count"]
        if count != h * w:
            raise self.fail("array 'count'", f"is {count} but the input has {h}x{w} positions")

    def add(self) -> None:
        shapes = {self.tensor(0).shape, self.tensor(1).shape, self.tensor(None).shape}
        if len(shapes) != 1:
            raise self.fail("inputs", "and output must have the same shape, got "
                                      f"{self.tensor(0).shape}, {self.tensor(1).shape} -> "
                                      f"{self.tensor(None).shape}")
        self.constants()

    def lookup(self) -> None:
        """One int8[256] table, or int8[C, 256] with a row per channel (then act_min/act_max
        clamp the looked-up value, as for every op)."""
        if self.tensor(0).shape != self.tensor(None).shape:
            raise self.fail("output", f"has shape {self.tensor(None).shape}, not its input's "
                                      f"{self.tensor(0).shape}")
        self.only_arrays(("table",))
        table = self.array("table", np.int8)
        channels = self.tensor(0).shape[-1]
        if table.shape not in ((256,), (channels, 256)):
            raise self.fail("array 'table'", f"has shape {table.shape}, expected (256,) or "
                                             f"({channels}, 256)")
    def softmax(self) -> None:
        """Constants as ``softmax_constants`` makes them for the input's scale and channels,
        output at TFLite's fixed quantization, no clamp."""
        src, dst = self.tensor(), self.tensor(None)
        if dst.shape != src.shape:
            raise self.fail("output", f"has shape {dst.shape}, not its input's {src.shape}")
        if (np.float32(dst.scale), dst.zero_point) != (np.float32(OUTPUT_SCALE),
                                                       OUTPUT_ZERO_POINT):
            raise self.fail("output", f"has scale {dst.scale} and zero point {dst.zero_point}, "
                                      "not 1/256 and -128")
        if (self.params.get("act_min", -128), self.params.get("act_max", 127)) != (-128, 127):
            raise self.fail("act_min/act_max", "must be -128/127 (softmax takes no clamp)")
        try:
            expect = softmax_constants(src.scale, src.shape[-1], self.model.requant_mode)
        except ValueError as exc:
            raise self.fail("input", f"cannot be a softmax input: {exc}") from None
        self.only_arrays(expect)
        if self.model.requant_mode == "fixed":  # integer and double arithmetic: exact anywhere
            for key, value in expect.items():
                if self.array(key, _I32, (1,))[0] != value[0]:
                    raise self.fail(f"array {key!r}", f"is not {value[0]}, TFLM's value for "
                                                      "the input's scale")
            return
        # the float table went through the exporting machine's libm exp: checked for shape
        table = self.array("exp_table", _F32, (256,))
        if not (np.all(np.isfinite(table * np.float32(256.0))) and table[0] > 0
                and np.all(table[1:] <= table[:-1]) and table[-1] >= 0):
            raise self.fail("array 'exp_table'", "is not a finite, positive, non-increasing "
                                                 "table of exponentials")

    # tensor ops (runtime/kernels/tensor_ops.py)

    def same_quantization(self, index: int = 0) -> None:
        src, dst = self.tensor(index), self.tensor(None)
        if (np.float32(src.scale), src.zero_point) != (np.float32(dst.scale), dst.zero_point):
            raise self.fail("output", "must keep its input's scale and zero point")

    def concat(self) -> None:
        shapes = [self.hwc(i) for i in range(len(self.layer.inputs))]
        h, w = shapes[0][:2]
        expect = (h, w, sum(s[2] for s in shapes))
        if any(s[:2] != (h, w) for s in shapes) or self.hwc(None) != expect:
            raise self.fail("inputs", f"{shapes} do not concatenate along channels to the "
                                      f"output {self.tensor(None).shape}")
        self.only_arrays(("tables",))
        self.array("tables", np.int8, (len(shapes), 256))

    def pad(self) -> None:
        h, w, c = self.hwc()
        pads = self.ints("pads", 4, None, 0)
        mode = self.params.get("mode", "constant")
        if mode not in PAD_MODES:
            raise self.fail("mode", f"is {mode!r}, not one of {PAD_MODES}")
        if mode == "reflect" and (max(pads[0], pads[2]) >= h or max(pads[1], pads[3]) >= w):
            raise self.fail("pads", f"{list(pads)} reflect beyond the input ({h}, {w})")
        if self.hwc(None) != (h + pads[0] + pads[2], w + pads[1] + pads[3], c):
            raise self.fail("output", f"has shape {self.tensor(None).shape}, not the input "
                                      f"{(h, w, c)} padded by {list(pads)}")
        self.same_quantization()
        self.only_arrays(("value",))
        self.array("value", np.int8, (1,))

    def resize_nearest(self) -> None:
        h, w, c = self.hwc()
        oh, ow, oc = self.hwc(None)
        if oc != c:
            raise self.fail("output", f"has {oc} channels, the input {c}")
        self.same_quantization()
        self.only_arrays(("rows", "cols"))
        for key, size, limit in (("rows", oh, h), ("cols", ow, w)):
            index = self.array(key, _I32, (size,))
            if index.min() < 0 or index.max() >= limit:
                raise self.fail(f"array {key!r}", f"indexes outside [0, {limit})")

    def mul(self) -> None:
        a, b = self.hwc(0), self.hwc(1)
        if b not in (a, (1, 1, a[2]), (1, 1, 1)) or self.hwc(None) != a:
            raise self.fail("inputs", f"{a} * {b} -> {self.tensor(None).shape}: b must have "
                                      "a's shape, (1, 1, C) or (1, 1, 1), the output a's")
        self.constants()

    def sub(self) -> None:
        self.add()


def _check_tensor(spec, arena_size: int) -> None:
    what = f"tensor {spec.name!r}"
    if not isinstance(spec.shape, tuple) or not spec.shape or not all(
            _is_int(d) and d >= 1 for d in spec.shape):
        raise ModelFileError(f"{what}: shape {spec.shape!r} is not a list of positive integers")
    size = math.prod(spec.shape)
    if size > INT32_MAX:  # the device's layer table holds sizes and offsets in 32 bits
        raise ModelFileError(f"{what}: shape {spec.shape!r} holds {size} values, more than "
                             f"{INT32_MAX}")
    if not _is_number(spec.scale) or not 0 < spec.scale < math.inf:
        raise ModelFileError(f"{what}: scale {spec.scale!r} is not finite and > 0")
    if not _is_int(spec.zero_point) or not -128 <= spec.zero_point <= 127:
        raise ModelFileError(f"{what}: zero point {spec.zero_point!r} is outside [-128, 127]")
    if not _is_int(spec.offset) or spec.offset < 0:
        raise ModelFileError(f"{what}: arena offset {spec.offset!r} is not an integer >= 0")
    if arena_size > 0 and spec.offset + size > arena_size:
        raise ModelFileError(f"{what}: {size} bytes at offset {spec.offset} lie outside "
                             f"the {arena_size}-byte arena")


def _check_wiring(model, layer, written: set) -> None:
    """The layer's names and inputs, before any of its semantics are looked at."""
    if not isinstance(layer.name, str):
        raise ModelFileError(f"layer name {layer.name!r} is not a string")
    if layer.op not in OPS:
        raise ModelFileError(f"layer {layer.name!r} has unknown op {layer.op!r}")
    if not isinstance(layer.params, dict) or not isinstance(layer.arrays, dict):
        raise ModelFileError(f"layer {layer.name!r}: params and arrays must be mappings")
    count = _INPUT_COUNT.get(layer.op, 1)
    if not isinstance(layer.inputs, (list, tuple)) or not all(
            isinstance(name, str) for name in layer.inputs) or (
            len(layer.inputs) != count if count else len(layer.inputs) < 2):
        count = count or "two or more"
        raise ModelFileError(f"layer {layer.name!r} ({layer.op}): inputs {layer.inputs!r} are "
                             f"not {count} tensor name(s)")
    for name in layer.inputs:
        if name not in written:
            raise ModelFileError(f"layer {layer.name!r} reads {name!r} before anything writes it")
    if not isinstance(layer.output, str) or layer.output not in model.tensors:
        raise ModelFileError(f"layer {layer.name!r} writes undeclared {layer.output!r}")
    if layer.output in written:
        raise ModelFileError(f"layer {layer.name!r} writes {layer.output!r}, which is "
                             "already written")


def check_model(model) -> None:
    """Raise ModelFileError unless every reader can rely on ``model`` (see the module doc)."""
    if model.requant_mode not in MODES:
        raise ModelFileError(f"unknown requantization mode {model.requant_mode!r}")
    if not _is_int(model.arena_size) or model.arena_size < 0:
        raise ModelFileError(f"arena_size {model.arena_size!r} is not an integer >= 0")
    if not isinstance(model.tensors, dict) or not isinstance(model.layers, list):
        raise ModelFileError("tensors and layers must be a mapping and a list")
    for spec in model.tensors.values():
        _check_tensor(spec, model.arena_size)
    if not isinstance(model.input, str) or not isinstance(model.output, str) or \
            model.input not in model.tensors or model.output not in model.tensors:
        raise ModelFileError("model input or output tensor is not declared")
    written = {model.input}
    for layer in model.layers:
        _check_wiring(model, layer, written)
        checker = _Layer(model, layer)
        checker.act_range()
        getattr(checker, layer.op)()
        written.add(layer.output)
    if model.output not in written:
        raise ModelFileError(f"no layer writes the model output {model.output!r}")
