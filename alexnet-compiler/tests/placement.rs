//! Two-device placement: which device holds what, and what the towers exchange, computed by
//! hand from the declared shapes.

use alexnet_compiler::plan::{Exchange, ExchangeKind, Place};

fn exchanges(src: &str) -> (Vec<Exchange>, alexnet_compiler::Compiled) {
    let compiled =
        alexnet_compiler::compile_str(src).unwrap_or_else(|e| panic!("{}", e.render("test")));
    (compiled.plan.exchanges.to_vec(), compiled)
}

fn exchange(reader: &str, to: u32, kind: ExchangeKind, bytes_per_image: u64) -> Exchange {
    Exchange {
        reader: reader.to_string().into(),
        to,
        kind,
        bytes_per_image,
    }
}

#[test]
fn one_device_places_everything_on_device_0_and_exchanges_nothing() {
    let (ex, c) = exchanges("pub One { input: [3, 8, 8], c1: conv(6, k = 3) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2), fc: linear(10) }");
    assert!(ex.is_empty());
    assert!(c.plan.layers.iter().all(|l| l.place == Place::Device(0)));
    assert_eq!(c.plan.params_on(0), c.plan.param_count());
    assert_eq!(c.plan.params_on(1), 0);
}

#[test]
fn towers_gather_what_they_read_whole_and_lrn_borrows_boundary_channels() {
    // c1 reads the image, which both devices hold; its LRN (n = 5) reaches 2 channels across
    // the boundary; c2's two groups are the towers; c3 (one group) and fc read both halves;
    // the logits are gathered on device 0.
    let (ex, c) = exchanges(
        "pub Two { input: [3, 8, 8], devices: 2,
            c1: conv(6, k = 3) -> relu -> lrn(n = 5, alpha = 1e-4, beta = 0.75, k = 2),
            c2: conv(8, k = 1, groups = 2) -> relu,
            c3: conv(4, k = 3) -> relu,
            fc: linear(10) }",
    );
    let plane = |c: u64, h: u64, w: u64| 4 * c * h * w;
    let expect = vec![
        exchange(
            "c1.lrn",
            0,
            ExchangeKind::Halo { channels: 2 },
            plane(2, 6, 6),
        ),
        exchange(
            "c1.lrn",
            1,
            ExchangeKind::Halo { channels: 2 },
            plane(2, 6, 6),
        ),
        exchange("c3.conv", 0, ExchangeKind::Gather, plane(8, 6, 6) / 2),
        exchange("c3.conv", 1, ExchangeKind::Gather, plane(8, 6, 6) / 2),
        exchange("fc.linear", 0, ExchangeKind::Gather, plane(4, 4, 4) / 2),
        exchange("fc.linear", 1, ExchangeKind::Gather, plane(4, 4, 4) / 2),
        exchange("output", 0, ExchangeKind::Gather, 4 * 10 / 2),
    ];
    assert_eq!(ex, expect);
    assert!(c.plan.layers.iter().all(|l| l.place == Place::Towers));
    assert_eq!(c.plan.params_on(0), c.plan.param_count() / 2);
    assert_eq!(c.plan.params_on(1), c.plan.param_count() / 2);
    assert!(
        c.plan
            .ir
            .contains("@towers <gather 576B->dev0> <gather 576B->dev1> ; c3"),
        "{}",
        c.plan.ir
    );
    assert!(
        c.plan.dot.contains("color=red"),
        "cross-device edges are marked in the DOT graph"
    );
}

#[test]
fn a_pinned_layer_gathers_on_its_device_and_the_next_towers_take_their_halves() {
    // c2 has 3 groups, which cannot be halved, so it runs whole on device 1: it gathers c1's
    // other half there; c3 (grouped, towers) then needs the half of c2's output that device 0
    // computes, and fc reads c3 whole.
    let (ex, c) = exchanges(
        "pub Pin { input: [3, 8, 8], devices: 2,
            c1: conv(6, k = 3) -> relu,
            #[device = 1]
            c2: conv(6, k = 3, groups = 3) -> relu,
            c3: conv(4, k = 1, groups = 2),
            fc: linear(10) }",
    );
    let expect = vec![
        exchange("c2.conv", 1, ExchangeKind::Gather, 4 * 6 * 6 * 6 / 2),
        exchange("c3.conv", 0, ExchangeKind::Gather, 4 * 6 * 4 * 4 / 2),
        exchange("fc.linear", 0, ExchangeKind::Gather, 4 * 4 * 4 * 4 / 2),
        exchange("fc.linear", 1, ExchangeKind::Gather, 4 * 4 * 4 * 4 / 2),
        exchange("output", 0, ExchangeKind::Gather, 4 * 10 / 2),
    ];
    assert_eq!(ex, expect);
    let place = |name: &str| c.plan.layers.iter().find(|l| l.name == name).unwrap().place;
    assert_eq!(
        (place("c1"), place("c2"), place("c3")),
        (Place::Towers, Place::Device(1), Place::Towers)
    );
    let c2 = c.plan.layers.iter().find(|l| l.name == "c2").unwrap();
    assert_eq!(
        c.plan.params_on(1) - c.plan.params_on(0),
        c2.params,
        "c2's parameters are all on device 1"
    );
}

#[test]
fn a_pinned_layer_reading_the_other_device_receives_it_whole() {
    let (ex, _) = exchanges(
        "pub Whole { input: [3, 8, 8], devices: 2,
            #[device = 0] c1: conv(5, k = 3),
            #[device = 1] c2: conv(5, k = 3),
            #[device = 1] fc: linear(3) }",
    );
    // The logits stay on device 1, where the host reads them.
    assert_eq!(
        ex,
        vec![exchange("c2.conv", 1, ExchangeKind::Whole, 4 * 5 * 6 * 6)]
    );
}

#[test]
fn an_even_lrn_window_reaches_further_up_than_down() {
    // The window of channel c is c-(n-1)/2 ..= c+n/2: with n = 4 device 0 needs 2 of device
    // 1's channels and device 1 only 1 of device 0's; with n = 2 device 1 needs none.
    for (n, to0, to1) in [(4u32, 2u64, 1u64), (2, 1, 0)] {
        let (ex, _) = exchanges(&format!("pub Even {{ input: [3, 8, 8], devices: 2, c1: conv(8, k = 3) -> lrn(n = {n}, alpha = 1e-4, beta = 0.75, k = 2) }}"));
        let mut expect = vec![exchange(
            "c1.lrn",
            0,
            ExchangeKind::Halo {
                channels: to0 as u32,
            },
            4 * to0 * 6 * 6,
        )];
        if to1 > 0 {
            expect.push(exchange(
                "c1.lrn",
                1,
                ExchangeKind::Halo {
                    channels: to1 as u32,
                },
                4 * to1 * 6 * 6,
            ));
        }
        expect.push(exchange(
            "output",
            0,
            ExchangeKind::Gather,
            4 * 8 * 6 * 6 / 2,
        ));
        assert_eq!(ex, expect, "n = {n}");
    }
}
