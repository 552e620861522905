"""runtime: the golden int8 executor, bit-exact with the device.

    from runtime import kernels
    model = runtime.load("build/digits/model.tcm")
"""
from runtime.errors import ModelFileError, TinyconvError
from runtime.model import Layer, QuantModel, TensorSpec, load

__all__ = ["Layer", "ModelFileError", "QuantModel", "TensorSpec", "TinyconvError", "load"]
