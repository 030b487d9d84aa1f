"""The deployed model as the server runs it: `model.onnx` in onnxruntime, numpy in and out.

Deliberately free of torch and the training code (`divqat.quant` imports torchao): a server
needs only the ONNX file, whose contract is float32 NCHW pixels in [0, 1] -> probabilities.
"""

from pathlib import Path

import numpy as np
import onnxruntime as ort

from divqat.errors import DivqatError

ONNX = "model.onnx"


class ServedModel:
    """`predict_proba(images (N, C, H, W) float32) -> (N, K) float32`, thread-safe (onnxruntime's
    `run` may be called from many threads at once)."""

    def __init__(self, path: Path, threads: int = 0):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad or missing files
            raise DivqatError(f"{path}: not a valid ONNX model ({str(e).splitlines()[0][:200]})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not all(isinstance(d, int) for d in inputs[0].shape[1:]):
            raise DivqatError(f"{path}: expected one NCHW input with fixed C, H, W, got {inputs[0].shape}")
        self.input_name = inputs[0].name
        self.input_shape: tuple[int, int, int] = tuple(inputs[0].shape[1:])
        # The output's class dimension may be symbolic in the file: one blank image settles it.
        self.num_classes = int(self.predict_proba(np.zeros((1, *self.input_shape), np.float32)).shape[1])

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]


def load_served_model(run_dir: Path, threads: int = 0) -> ServedModel:
    path = Path(run_dir) / ONNX
    if not Path(run_dir).is_dir():
        raise DivqatError(f"{run_dir} is not a directory")
    if not path.is_file():
        raise DivqatError(f"{run_dir} has no {ONNX}: not a divqat run directory")
    return ServedModel(path, threads)
