alexnet::alexnet! {
    pub UnknownField {
        input: [3, 32, 32],
        devices: 3,
        conv1: conv(16, k = 3),
        #[name = "x"]
        conv2: conv(16, k = 3),
    }
}

fn main() {}
