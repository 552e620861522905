"""export: from a trained model to model.onnx, model.q.onnx, model.tcm, C sources and a report.

    import export
    result = export.from_onnx("net.onnx", "calib.npz", requant="float")
    result.save("build/net")
"""
from export.api import ExportResult, from_filters, from_onnx, from_tflite

__all__ = ["ExportResult", "from_filters", "from_onnx", "from_tflite"]
