"""runtime: the golden int8 executor, bit-exact with the device.

    import runtime
    from runtime import kernels
    model = runtime.load("build/digits/model.tcm")
    y_q = runtime.run(model, x_int8)
"""
from runtime import kernels
from runtime.errors import ModelFileError, TinyconvError
from runtime.executor import run
from runtime.model import Layer, QuantModel, TensorSpec, load

__all__ = ["Layer", "ModelFileError", "QuantModel", "TensorSpec", "TinyconvError", "kernels",
           "load", "run"]
