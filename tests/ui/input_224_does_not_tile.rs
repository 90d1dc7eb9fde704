// The paper's net with a 224 input: conv1 (k11 s4 p0) does not tile it.
alexnet::alexnet! {
    pub Paper224 {
        input: [3, 224, 224],
        conv1: conv(96, k = 11, s = 4) -> relu -> maxpool(k = 3, s = 2),
        fc: linear(10),
    }
}

fn main() {}
