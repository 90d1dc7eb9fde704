"""Times PyTorch (fp32, eager, TF32 off) on the same networks and regions as `alexnet bench`,
as its peer in one sitting: the paper's AlexNet (LRN, grouped conv2/4/5, 227x227 input; the
peer of `--model alexnet`) and torchvision's (the peer of `--model alexnet-torchvision`).

- forward: an input already in memory to logits back on the host (`alexnet bench`);
- training step (`--train`): forward, cross-entropy, backward and the paper's SGD update
  (momentum 0.9, weight decay 0.0005, dropout on; `alexnet bench --train`).

On a CPU-only machine: `--device cpu --threads 2` (the 2-core machines' peer); on a GPU:
`--device cuda` (cuDNN, TF32 off).

    python3 scripts/torch_bench.py --device cpu --threads 2 1 8
    python3 scripts/torch_bench.py --device cpu --threads 2 --train 8
    python3 scripts/torch_bench.py --device cuda 1 128
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
# The layer tables the onnxruntime peer and parity test build from: both peers time one net.
from test_onnx_parity import PAPER_CONV, PAPER_FC, TV_CONV, TV_FC  # noqa: E402


def build(conv, fc, in_shape):
    """The net of `conv` blocks (name, out, k, stride, pad, groups, lrn, pool) and `fc` layers
    (name, out, relu), as `test_onnx_parity.build` makes it, with dropout after hidden layers."""
    layers, (c, h, w) = [], in_shape
    for _, out, k, s, p, g, lrn, pool in conv:
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p, groups=g), nn.ReLU()]
        h, w, c = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, out
        if lrn:
            # PyTorch divides alpha by the window; the paper (and `alexnet!`) does not.
            layers.append(nn.LocalResponseNorm(5, alpha=1e-4 * 5, beta=0.75, k=2.0))
        if pool:
            layers.append(nn.MaxPool2d(3, 2))
            h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
    layers.append(nn.Flatten())
    features = c * h * w
    for _, out, relu in fc:
        layers.append(nn.Linear(features, out))
        features = out
        if relu:
            layers += [nn.ReLU(), nn.Dropout(0.5)]
    return nn.Sequential(*layers)


def median_seconds(run, device, warmup, iters):
    for _ in range(warmup):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("batches", type=int, nargs="*", default=[1, 8])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads on the CPU")
    parser.add_argument("--train", action="store_true", help="time a training step instead of a forward")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--model", choices=["alexnet", "alexnet-torchvision", "both"], default="both")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        where = f"CPU, {args.threads} threads"
    else:
        where = torch.cuda.get_device_name()
    nets = [("alexnet", "AlexNet (paper)", PAPER_CONV, PAPER_FC, 227), ("alexnet-torchvision", "AlexNet (torchvision)", TV_CONV, TV_FC, 224)]
    for key, name, conv, fc, size in nets:
        if args.model not in (key, "both"):
            continue
        torch.manual_seed(0)
        model = build(conv, fc, (3, size, size)).to(args.device)
        for batch in args.batches:
            x = torch.rand(batch, 3, size, size).to(args.device)
            if args.train:
                model.train()
                labels = torch.randint(0, 1000, (batch,)).to(args.device)
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

                def run():
                    opt.zero_grad(set_to_none=False)
                    loss = nn.functional.cross_entropy(model(x), labels)
                    loss.backward()
                    opt.step()
                    return loss.item()

                what = "training step"
            else:
                model.eval()

                def run():
                    with torch.no_grad():
                        return model(x).cpu()

                what = "forward"
            seconds = median_seconds(run, args.device, warmup=2, iters=args.iters)
            print(f"torch {torch.__version__} {where}: {name} batch {batch}: median {seconds * 1e3:.1f} ms per {what} ({batch / seconds:.1f} images/s)")


if __name__ == "__main__":
    main()
