// A broken declaration still defines the type, so this use adds no error of its own.
alexnet::alexnet! {
    pub Broken {
        input: [3, 8, 8],
        fc: linear(0),
    }
}

fn main() {
    let _net = Broken;
}
