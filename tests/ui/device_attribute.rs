alexnet::alexnet! {
    pub OutOfRange {
        input: [3, 16, 16],
        devices: 2,
        #[device = 2]
        conv1: conv(8, k = 3),
        #[device = "first"]
        conv2: conv(8, k = 3),
    }
}

alexnet::alexnet! {
    pub OneDevice {
        input: [3, 16, 16],
        #[device = 1]
        conv1: conv(8, k = 3),
    }
}

fn main() {}
