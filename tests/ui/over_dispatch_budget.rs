// With a 1 GFLOP dispatch budget, conv1 of one 256x256 image (128 channels, 11x11 kernels:
// 6.1 GFLOP) cannot be dispatched within it, and no micro-batch makes it smaller; fc's
// reduction over 8.4 M features is longer than the loops software adapters finish.
alexnet::alexnet! {
    pub TooSlow {
        input: [3, 256, 256],
        dispatch_gflop: 1,
        conv1: conv(128, k = 11, p = 5) -> relu,
        fc: linear(10),
    }
}

fn main() {}
