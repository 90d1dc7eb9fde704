alexnet::alexnet! {
    pub OddTowers {
        input: [3, 16, 16],
        devices: 2,
        conv1: conv(93, k = 3) -> relu,
        conv2: conv(96, k = 3, groups = 3) -> relu,
        // Placed whole on one device, a layer may have any shape.
        #[device = 1]
        conv3: conv(45, k = 3, groups = 3),
        fc: linear(11),
    }
}

fn main() {}
