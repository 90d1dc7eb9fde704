alexnet::alexnet! {
    pub Unknown {
        input: [3, 32, 32],
        conv1: conv(16, k = 3) -> tanh -> maxpool(k = 2),
    }
}

fn main() {}
