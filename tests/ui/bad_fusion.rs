alexnet::alexnet! {
    pub BadFusion {
        input: [3, 32, 32],
        fusion: maybe,
        conv1: conv(16, k = 3) -> relu -> maxpool(k = 2, s = 2),
    }
}

fn main() {}
