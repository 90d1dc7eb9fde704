alexnet::alexnet! {
    pub Drop {
        input: [3, 8, 8],
        fc6: linear(16) -> dropout(1.0),
        fc7: linear(16) -> dropout(1.5),
    }
}

fn main() {}
