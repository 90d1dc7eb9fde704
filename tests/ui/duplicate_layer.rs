alexnet::alexnet! {
    pub Duplicate {
        input: [3, 32, 32],
        conv1: conv(16, k = 3),
        conv1: conv(16, k = 3),
    }
}

fn main() {}
