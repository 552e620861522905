"""The quantized model: the single description that export/ writes and everyone else reads.

runtime/ executes a ``QuantModel``, the C generator writes it out as ``model_data.c``, the host
tool reads it for shapes and the model hash. Nothing re-derives quantization constants after
export: they are stored here, computed once.

Conventions
- Activations are int8, NHWC. A ``TensorSpec.shape`` is the shape of one sample, without the
  batch axis: ``(H, W, C)`` for feature maps, ``(K,)`` for vectors.
- Conv weights are int8 OHWI ``[M, KH, KW, C // groups]``; fully connected weights are
  ``[M, K]`` with K in the NHWC flattening order of the input. Biases are int32 ``[M]``.
- ``Layer.params`` holds the op's scalar attributes (JSON-serializable); ``Layer.arrays`` holds
  its constant arrays (weights, bias, requantization constants, ...).

The ``.tcm`` file: ``b"TINYCONV"``, u16 format version, u16 reserved, u32 header length, a JSON
header, the arrays' bytes (each 16-byte aligned, little-endian), and a CRC-32 of everything
before it. The model hash is the first 8 bytes of SHA-256 over header and arrays, so any change
to the integer computation changes the hash the device reports.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from runtime.errors import ModelFileError, TinyconvError
from runtime.model_checks import OPS, check_model  # noqa: F401 (OPS: the ops a model may use)
from runtime.requant import Requant

FORMAT_VERSION = 2  # 2: a fixed-mode global_avg_pool's multiplier has the count folded in
MAGIC = b"TINYCONV"
_PREAMBLE = struct.Struct("<8sHHI")
_ALIGN = 16
_DTYPES = {"int8": np.int8, "int32": np.int32, "float32": np.float32, "uint8": np.uint8}


@dataclass
class TensorSpec:
    """One int8 activation tensor: per-sample shape, quantization, and its place in the arena."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    offset: int = 0  # byte offset in the device's activation arena, planned by export/

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Layer:
    """One operation. ``inputs`` and ``output`` name tensors of the model."""

    op: str
    name: str
    inputs: list[str]
    output: str
    params: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def requant(self, prefix: str = "") -> Requant:
        """The requantization constants stored under ``prefix`` (``""`` for conv/fc output).

        The mode is the model's; a layer stores ``multiplier``/``shift`` or ``scale``."""
        a = self.arrays
        if prefix + "multiplier" in a:
            return Requant.fixed(a[prefix + "multiplier"], a[prefix + "shift"],
                                 self.params.get("rounding", "double"))
        return Requant.float(a[prefix + "scale"])


@dataclass
class QuantModel:
    name: str
    requant_mode: str
    tensors: dict[str, TensorSpec]
    layers: list[Layer]
    input: str
    output: str
    arena_size: int = 0
    metadata: dict = field(default_factory=dict)  # provenance: source file, calibration, ...

    @property
    def input_spec(self) -> TensorSpec:
        return self.tensors[self.input]

    @property
    def output_spec(self) -> TensorSpec:
        return self.tensors[self.output]

    def validate(self) -> None:
        """Everything runtime/ and the C generator rely on (runtime/model_checks.py): array
        dtypes and shapes, op parameters, output shapes, requantization constants, the arena.
        Raises ModelFileError naming the layer and the field."""
        check_model(self)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one inference: the sum of ``layer_macs`` over the layers."""
        return sum(layer_macs(self, layer) for layer in self.layers)

    def freeze(self) -> None:
        """Make every constant array read-only. A model is immutable once run: the executor
        caches preprocessed weights, so an in-place edit must fail rather than go unseen;
        replace an array (or build a new model) instead."""
        for layer in self.layers:
            for array in layer.arrays.values():
                if isinstance(array, np.ndarray):
                    array.setflags(write=False)

    # -- serialization -------------------------------------------------------------------------

    def _header_and_blob(self, with_metadata: bool = True) -> tuple[bytes, bytes]:
        blob = bytearray()
        layers = []
        for layer in self.layers:
            arrays = {}
            for key, value in sorted(layer.arrays.items()):
                value = np.ascontiguousarray(value)
                if value.dtype.name not in _DTYPES:
                    raise ValueError(f"{layer.name}.{key}: dtype {value.dtype} not storable")
                blob.extend(b"\0" * (-len(blob) % _ALIGN))
                arrays[key] = {"dtype": value.dtype.name, "shape": list(value.shape),
                               "offset": len(blob)}
                blob.extend(value.astype(value.dtype.newbyteorder("<")).tobytes())
            layers.append({"op": layer.op, "name": layer.name, "inputs": list(layer.inputs),
                           "output": layer.output, "params": layer.params, "arrays": arrays})
        header = {
            "name": self.name, "requant_mode": self.requant_mode, "input": self.input,
            "output": self.output, "arena_size": self.arena_size,
            "tensors": [{"name": t.name, "shape": list(t.shape), "scale": float(t.scale),
                         "zero_point": int(t.zero_point), "offset": int(t.offset)}
                        for t in self.tensors.values()],
            "layers": layers,
        }
        if with_metadata:
            header["metadata"] = self.metadata
        text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return text, bytes(blob)

    @property
    def hash(self) -> str:
        """16 hex digits identifying the integer computation (and what the device reports).

        Metadata (provenance) is left out, so re-exporting the same model gives the same hash."""
        header, blob = self._header_and_blob(with_metadata=False)
        digest = hashlib.sha256()
        digest.update(header)
        digest.update(blob)
        return digest.hexdigest()[:16]

    def to_bytes(self) -> bytes:
        header, blob = self._header_and_blob()
        pad = b"\0" * (-(_PREAMBLE.size + len(header)) % _ALIGN)
        body = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(header) + len(pad)) + header + pad
        body += blob
        return body + struct.pack("<I", zlib.crc32(body))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a crash never leaves a half-written file under ``path``."""
        write_atomic(Path(path), self.to_bytes())


def layer_macs(model: QuantModel, layer: Layer) -> int:
    """Multiply-accumulates of one layer for one sample: one per weight per output position
    of conv2d (``OH*OW*M*KH*KW*C/groups``) and fully_connected (``M*K``); pools and add do no
    multiplications by weights and count 0. This is the one definition: report.json's
    ``macs``, the C layer table's ``macs``, ``TC_TOTAL_MACS`` and so the device's ticks per
    MAC all use it."""
    if layer.op not in ("conv2d", "fully_connected"):
        return 0
    weights = layer.arrays["weights"]
    positions = model.tensors[layer.output].size // weights.shape[0]
    return int(positions * weights.size)


def _current_umask() -> int:
    """The process umask (reading it means setting it, so read once, at import)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _current_umask()


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before a long run, when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise TinyconvError(f"cannot write {path}: it is a directory")
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise TinyconvError(f"cannot write {path}: {parent} is not a writable directory")
    return path


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing, with the permissions a plain open() gives.

    An OS error (a directory in the way, no permission, a full disk) is the user's problem, so
    it is a TinyconvError; a crash never leaves a half-written file under ``path``. A symbolic
    link is followed (its target is written), never replaced by a file."""
    path = check_writable(path)
    if path.is_symlink():
        path = check_writable(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise TinyconvError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise TinyconvError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def _dims(value, what: str) -> tuple[int, ...]:
    """A shape from the header: a list of non-negative ints, nothing else."""
    if not isinstance(value, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise ModelFileError(f"{what}: shape {value!r} is not a list of non-negative integers")
    return tuple(value)


def _tensor(t: dict, source: str) -> TensorSpec:
    """Values are checked by ``QuantModel.validate`` (runtime/model_checks.py)."""
    return TensorSpec(t["name"], _dims(t["shape"], f"{source}: tensor {t['name']!r}"),
                      t["scale"], t["zero_point"], t["offset"])


def from_bytes(data: bytes, source: str = "model") -> QuantModel:
    if len(data) < _PREAMBLE.size + 4:
        raise ModelFileError(f"{source}: too short to be a tinyconv model ({len(data)} bytes)")
    magic, version, _, header_len = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ModelFileError(f"{source}: not a tinyconv model file (bad magic)")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{source}: model format version {version} was written by a newer "
                             f"tinyconv; this one reads up to version {FORMAT_VERSION}")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise ModelFileError(f"{source}: corrupt or truncated (CRC-32 mismatch)")
    start = _PREAMBLE.size
    try:
        header = json.loads(data[start:start + header_len].rstrip(b"\0"))
        blob = memoryview(data)[start + header_len:len(data) - 4]
        tensors = {t["name"]: _tensor(t, source) for t in header["tensors"]}
        layers = []
        for item in header["layers"]:
            arrays = {}
            for key, meta in item["arrays"].items():
                dtype = np.dtype(_DTYPES[meta["dtype"]]).newbyteorder("<")
                shape = _dims(meta["shape"], f"{source}: array {item['name']}.{key}")
                count = math.prod(shape)
                offset = meta["offset"]
                end = offset + count * dtype.itemsize if isinstance(offset, int) else -1
                if not isinstance(offset, int) or offset < 0 or end > len(blob):
                    raise ModelFileError(f"{source}: array {item['name']}.{key} out of bounds")
                arrays[key] = np.frombuffer(blob[meta["offset"]:end], dtype=dtype).astype(
                    dtype.newbyteorder("=")).reshape(shape)
            layers.append(Layer(item["op"], item["name"], item["inputs"], item["output"],
                                item["params"], arrays))
        if version < 2 and header["requant_mode"] != "float" and any(
                layer.op == "global_avg_pool" for layer in layers):
            raise ModelFileError(f"{source}: written by an older tinyconv (format version "
                                 f"{version}), whose fixed-mode global average pool constants "
                                 "this one reads differently; export the model again")
        model = QuantModel(header["name"], header["requant_mode"], tensors, layers,
                           header["input"], header["output"], header["arena_size"],
                           header.get("metadata", {}))
        try:  # inside the outer try: a header that lies about types is malformed too
            model.validate()
        except ModelFileError as exc:
            raise ModelFileError(f"{source}: {exc}") from None
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError,
            RecursionError) as exc:
        raise ModelFileError(f"{source}: malformed model header ({exc})") from None
    model.freeze()
    return model


def load(path: str | os.PathLike) -> QuantModel:
    """Read a ``.tcm`` file (or the ``model.tcm`` inside an export directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.tcm"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model {path}: {exc.strerror}") from None
    return from_bytes(data, str(path))
