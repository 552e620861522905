"""A small hand-built QuantModel using every op, for executor, model-file and CLI tests."""
import numpy as np

from runtime import kernels
from runtime.model import Layer, QuantModel, TensorSpec
from runtime.requant import Requant


def _requant_arrays(mode, x_scale, w_scales, y_scale):
    rq = Requant.from_scales(x_scale, w_scales, y_scale, mode)
    if mode == "fixed":
        return {"multiplier": rq.multiplier, "shift": rq.shift}
    return {"scale": rq.scale}


def tiny_model(mode="fixed", seed=0) -> QuantModel:
    rng = np.random.default_rng(seed)
    t = {}

    def tensor(name, shape, scale, zp):
        t[name] = TensorSpec(name, shape, float(np.float32(scale)), zp)

    tensor("x", (8, 8, 2), 0.03, -5)
    tensor("c1", (8, 8, 6), 0.05, -128)
    tensor("dw", (4, 4, 6), 0.04, -120)
    tensor("mp", (2, 2, 6), 0.04, -120)
    tensor("c2", (4, 4, 6), 0.06, 3)
    tensor("sum", (4, 4, 6), 0.08, -2)
    tensor("ap", (4, 4, 6), 0.07, 1)
    tensor("ml", (4, 4, 6), 0.09, 4)
    tensor("df", (4, 4, 6), 0.06, -3)
    tensor("ct", (4, 4, 12), 0.08, 2)
    tensor("pd", (5, 5, 12), 0.08, 2)
    tensor("up", (3, 2, 12), 0.08, 2)
    tensor("gap", (1, 1, 12), 0.05, 0)
    tensor("act", (1, 1, 12), 0.02, -5)
    tensor("fc", (3,), 0.1, 7)
    tensor("prob", (1, 1, 12), 1 / 256, -128)  # a side branch: softmax of gap
    layers = []

    def conv(name, src, dst, m, k, cg, groups=1, **params):
        w = rng.integers(-127, 128, (m, k, k, cg)).astype(np.int8)
        w_scales = np.exp(rng.uniform(-6, -4, m)).astype(np.float32)
        arrays = {"weights": w, "bias": rng.integers(-2000, 2000, m).astype(np.int32)}
        arrays.update(_requant_arrays(mode, t[src].scale, w_scales, t[dst].scale))
        params = {"stride": [1, 1], "padding": [0, 0, 0, 0], "dilation": [1, 1],
                  "groups": groups, "act_min": -128, "act_max": 127, **params}
        layers.append(Layer("conv2d", name, [src], dst, params, arrays))

    conv("conv1", "x", "c1", 6, 3, 2, padding=[1, 1, 1, 1], act_min=-128)
    conv("dwconv", "c1", "dw", 6, 3, 1, groups=6, stride=[2, 2], padding=[0, 0, 1, 1],
         act_min=-120)
    layers.append(Layer("max_pool2d", "pool", ["dw"], "mp",
                        {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0],
                         "act_min": -128, "act_max": 127}))
    conv("conv2", "dw", "c2", 6, 1, 6, act_min=3, act_max=90)
    layers.append(Layer("add", "residual", ["c2", "dw"], "sum",
                        {"act_min": -128, "act_max": 127},
                        kernels.add_constants(t["c2"].scale, 3, t["dw"].scale, -120,
                                              t["sum"].scale, -2, mode)))
    layers.append(Layer("avg_pool2d", "avg", ["sum"], "ap",
                        {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1],
                         "count_include_pad": False, "act_min": -128, "act_max": 127},
                        kernels.avg_pool_constants(t["sum"].scale, -2, t["ap"].scale, 1, (3, 3),
                                                   mode)))
    full = {"act_min": -128, "act_max": 127}
    layers.append(Layer("mul", "excite", ["ap", "sum"], "ml", dict(full, act_min=0),
                        kernels.mul_constants(t["ap"].scale, 1, t["sum"].scale, -2,
                                              t["ml"].scale, 4, mode)))
    layers.append(Layer("sub", "diff", ["ml", "ap"], "df", full,
                        kernels.sub_constants(t["ml"].scale, 4, t["ap"].scale, 1,
                                              t["df"].scale, -3, mode)))
    layers.append(Layer("concat", "cat", ["df", "sum"], "ct", full,
                        kernels.concat_constants([(t["df"].scale, -3), (t["sum"].scale, -2)],
                                                 t["ct"].scale, 2, mode)))
    layers.append(Layer("pad", "pad", ["ct"], "pd", dict(full, pads=[0, 1, 1, 0]),
                        {"value": np.array([2], np.int8)}))
    layers.append(Layer("resize_nearest", "up", ["pd"], "up", full,
                        {"rows": np.array([0, 2, 4], np.int32),
                         "cols": np.array([1, 3], np.int32)}))
    layers.append(Layer("global_avg_pool", "gap", ["up"], "gap",
                        {"act_min": -128, "act_max": 127},
                        kernels.global_avg_pool_constants(t["up"].scale, 2, t["gap"].scale, 0,
                                                          (3, 2), mode)))
    layers.append(Layer("lookup", "act", ["gap"], "act", {"act_min": -120, "act_max": 127},
                        {"table": rng.integers(-128, 128, (12, 256)).astype(np.int8)}))
    layers.append(Layer("softmax", "softmax", ["gap"], "prob",
                        {"act_min": -128, "act_max": 127},
                        kernels.softmax_constants(t["gap"].scale, 12, mode)))
    w = rng.integers(-127, 128, (3, 12)).astype(np.int8)
    arrays = {"weights": w, "bias": rng.integers(-500, 500, 3).astype(np.int32)}
    arrays.update(_requant_arrays(mode, t["act"].scale, np.full(3, 0.01, np.float32),
                                  t["fc"].scale))
    layers.append(Layer("fully_connected", "fc", ["act"], "fc",
                        {"act_min": -128, "act_max": 127}, arrays))
    model = QuantModel("tiny", mode, t, layers, "x", "fc", arena_size=1024,
                       metadata={"source": "tests/tiny_models.py"})
    model.validate()
    return model
