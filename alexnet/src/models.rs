//! The built-in networks: the paper's, torchvision's, and a small one for 28×28 images.

use crate::alexnet;
use crate::Plan;

alexnet! {
    /// ImageNet classifier of Krizhevsky, Sutskever & Hinton (NIPS 2012): 227×227 input,
    /// grouped conv2/conv4/conv5, LRN after conv1 and conv2. Declared for two devices as in
    /// the paper: every layer is split into two towers (`PLAN.towers`), which inference runs
    /// on two devices (`TowerSession`) or both on one (`Session`); training runs on one.
    pub AlexNet {
        input: [3, 227, 227],
        devices: 2,
        max_batch: 128,
        conv1: conv(96, k = 11, s = 4) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        conv2: conv(256, k = 5, p = 2, groups = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2),
        conv3: conv(384, k = 3, p = 1) -> relu,
        conv4: conv(384, k = 3, p = 1, groups = 2) -> relu,
        conv5: conv(256, k = 3, p = 1, groups = 2) -> relu -> maxpool(k = 3, s = 2),
        fc6: linear(4096) -> relu -> dropout(0.5),
        fc7: linear(4096) -> relu -> dropout(0.5),
        fc8: linear(1000) -> softmax,
    }
}

alexnet! {
    /// torchvision's AlexNet ("one weird trick"): 224×224 input, no LRN, no groups, and
    /// torchvision's parameter names (`features.0.weight` … `classifier.6.bias`). Its conv1
    /// does not tile 224 exactly, so it uses PyTorch's `floor` rounding; at 224 torchvision's
    /// adaptive average pool is the identity and is omitted.
    pub AlexNetTorchvision {
        input: [3, 224, 224],
        max_batch: 128,
        #[weights = "features.0"]
        conv1: conv(64, k = 11, s = 4, p = 2, floor) -> relu -> maxpool(k = 3, s = 2),
        #[weights = "features.3"]
        conv2: conv(192, k = 5, p = 2) -> relu -> maxpool(k = 3, s = 2),
        #[weights = "features.6"]
        conv3: conv(384, k = 3, p = 1) -> relu,
        #[weights = "features.8"]
        conv4: conv(256, k = 3, p = 1) -> relu,
        #[weights = "features.10"]
        conv5: conv(256, k = 3, p = 1) -> relu -> maxpool(k = 3, s = 2),
        #[weights = "classifier.1"]
        fc6: dropout(0.5) -> linear(4096) -> relu,
        #[weights = "classifier.4"]
        fc7: dropout(0.5) -> linear(4096) -> relu,
        #[weights = "classifier.6"]
        fc8: linear(1000),
    }
}

alexnet! {
    /// A small AlexNet-style net for 28×28 grey images such as Fashion-MNIST: the paper's
    /// conv → ReLU → LRN → overlapping max-pool blocks, grouped convolutions and dropout,
    /// about 9 M multiply-adds per image, so it trains in minutes on a CPU-only machine.
    pub AlexNetMini {
        input: [1, 28, 28],
        max_batch: 256,
        conv1: conv(32, k = 5, p = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2, p = 1, floor),
        conv2: conv(64, k = 3, p = 1, groups = 2) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2, p = 1, floor),
        conv3: conv(96, k = 3, p = 1) -> relu,
        conv4: conv(96, k = 3, p = 1, groups = 2) -> relu,
        conv5: conv(64, k = 3, p = 1, groups = 2) -> relu -> maxpool(k = 3, s = 2),
        fc6: linear(256) -> relu -> dropout(0.5),
        fc7: linear(256) -> relu -> dropout(0.5),
        fc8: linear(10) -> softmax,
    }
}

/// The built-in models by CLI name: `alexnet`, `alexnet-torchvision`, `alexnet-mini`.
pub const BUILTIN: [(&str, &Plan); 3] = [
    ("alexnet", &AlexNet::PLAN),
    ("alexnet-torchvision", &AlexNetTorchvision::PLAN),
    ("alexnet-mini", &AlexNetMini::PLAN),
];

/// Looks a built-in model up by its CLI name.
pub fn by_name(name: &str) -> Option<&'static Plan> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}
