alexnet::alexnet! {
    pub Groups {
        input: [3, 32, 32],
        conv1: conv(16, k = 3, p = 1, groups = 2),
        conv2: conv(10, k = 3, p = 1, groups = 4),
    }
}

fn main() {}
