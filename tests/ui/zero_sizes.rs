alexnet::alexnet! {
    pub Zero {
        input: [3, 0, 32],
        dispatch_gflop: 0,
        conv1: conv(0, k = 3, s = 0),
        pool: maxpool(k = 0),
        fc: linear(0),
    }
}

fn main() {}
