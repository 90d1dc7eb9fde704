alexnet::alexnet! {
    pub Rank {
        input: [3, 8, 8],
        fc: linear(16),
        conv: conv(4, k = 3),
        two: linear(4) -> linear(2),
    }
}

fn main() {}
