alexnet::alexnet! {
    pub UnknownArg {
        input: [3, 32, 32],
        conv1: conv(16, k = 3, dilation = 2) -> lrn(size = 5),
    }
}

fn main() {}
