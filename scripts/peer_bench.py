"""Times the paper's AlexNet forward in onnxruntime on the CPU (2 threads), as the peer of
`alexnet bench --model alexnet` on a CPU-only machine; run both in one sitting.

The network is the one the onnxruntime parity test builds from the paper's definition
(LRN, grouped conv2/4/5, 227x227 input), so both sides time the same net; the timed region
is `session.run` on an input already in memory, like `alexnet bench`'s forward.

    python3 scripts/peer_bench.py 1 8        # batches (default: 1 8)
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
from test_onnx_parity import PAPER_CONV, PAPER_FC, TV_CONV, TV_FC, build  # noqa: E402


def main():
    batches = [int(b) for b in sys.argv[1:]] or [1, 8]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    for name, conv, fc, shape in [("AlexNet (paper)", PAPER_CONV, PAPER_FC, (3, 227, 227)), ("AlexNet (torchvision)", TV_CONV, TV_FC, (3, 224, 224))]:
        model, _ = build(conv, fc, shape)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for batch in batches:
            x = np.random.default_rng(0).uniform(-1, 1, size=(batch, *shape)).astype(np.float32)
            session.run(None, {"x": x})
            times = []
            for _ in range(5):
                start = time.perf_counter()
                session.run(None, {"x": x})
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            print(f"onnxruntime {ort.__version__} CPU, 2 threads: {name} batch {batch}: median {median * 1e3:.1f} ms per forward ({batch / median:.1f} images/s)")


if __name__ == "__main__":
    main()
