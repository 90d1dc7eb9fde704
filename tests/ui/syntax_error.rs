alexnet::alexnet! {
    pub Syntax {
        input: [3, 8, 8],
        conv1: conv(4, k = 3) relu,
    }
}

fn main() {}
