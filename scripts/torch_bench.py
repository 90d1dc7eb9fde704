"""Times torchvision's AlexNet forward (fp32, TF32 off, eager) on CUDA, as the baseline for
`alexnet bench --model alexnet-torchvision` on the same GPU.

    python3 scripts/torch_bench.py 1 128
"""

import sys
import time

import torch
import torchvision

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
model = torchvision.models.alexnet(weights=None).cuda().eval()
for batch in [int(b) for b in sys.argv[1:]] or [1, 128]:
    x = torch.rand(batch, 3, 224, 224, device="cuda")
    with torch.no_grad():
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(20):
            start = time.perf_counter()
            model(x).cpu()
            times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    print(f"torch {torch.__version__} AlexNet batch {batch} on {torch.cuda.get_device_name()}: median {median * 1e3:.3f} ms per forward ({batch / median:.1f} images/s)")
