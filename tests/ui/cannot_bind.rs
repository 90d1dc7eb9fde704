// With a 1 KiB binding limit, one image's conv output (16x30x30 floats) cannot be bound
// even after splitting the batch, and neither can one row of fc's weight.
alexnet::alexnet! {
    pub TooBig {
        input: [3, 32, 32],
        binding_limit: 1024,
        conv1: conv(16, k = 3),
        fc: linear(10),
    }
}

fn main() {}
