//! Training end to end on the committed 2,000-image MNIST sample: GPU and CPU agree,
//! runs are reproducible, and a short run reaches a stated accuracy.

mod common;

use wgtrain::data::load_dir;
use wgtrain::model::{Arch, Model};
use wgtrain::train::{self, Engine, Optimizer, Position, Quiet, TrainConfig, Which};

fn sample() -> wgtrain::data::Mnist {
    load_dir(std::path::Path::new("assets/mnist-sample")).expect("committed sample")
}

fn config(arch: &str, epochs: usize) -> TrainConfig {
    let mut cfg = TrainConfig::lecture(Arch::parse(arch).unwrap());
    cfg.epochs = epochs;
    cfg
}

/// Every layer's weight and bias moved by more than `min` from `before` (a layer the optimiser
/// never updated would otherwise pass a comparison of two engines that both skip it).
fn assert_every_layer_moved(name: &str, before: &Model, after: &Model, min: f32) {
    for (i, (p, q)) in before.params.iter().zip(&after.params).enumerate() {
        let dw = (&p.weight - &q.weight).fold(0.0f32, |m, d| m.max(d.abs()));
        let db = (&p.bias - &q.bias).fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(
            dw > min && db > min,
            "{name}: layer {i} moved by only {dw:e} (weight), {db:e} (bias)"
        );
    }
}

#[test]
fn short_gpu_training_reaches_84_percent_on_the_sample() {
    // 784-100-10, lecture hyperparameters, 5 epochs on 2,000 images. The CPU engine's test
    // accuracy after epoch 5 over seeds 1–12: 86.1 86.4 84.9 85.6 86.4 86.7 84.9 84.8 86.3 84.5
    // 85.3 86.0% (mean 85.7%, standard deviation 0.75 points, lowest 84.5%); this run (seed 1)
    // gets 86.1% on both adapters. 84% is below every seed's result (2.3 standard deviations
    // under the mean), so a change of seed or of the shuffle does not fail it, while a bug that
    // costs two points does (80%, the old threshold, let a six-point loss through).
    let data = sample();
    let cfg = config("784-100-10", 5);
    for ctx in common::contexts("short_training") {
        let name = ctx.describe();
        let model = cfg.init_model();
        let mut e = Engine::gpu(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let hist = train::run(&mut e, Position::default(), &mut Quiet).unwrap();
        let last = hist.last().unwrap();
        eprintln!(
            "{name}: test accuracy {:.2}% after {} epochs",
            100.0 * last.test_acc,
            hist.len()
        );
        assert_eq!(hist.len(), 5);
        assert!(
            last.test_acc >= 0.84,
            "{name}: test accuracy {}",
            last.test_acc
        );
        assert!(hist[0].train_loss > last.train_loss);
    }
}

/// Largest |w_gpu − w_cpu| after the 20 SGD steps of [`gpu_and_cpu_training_agree_within_rounding`]
/// (784-32-16-10, α = 0.05, μ = 0.9, batch 100, from the same weights). The engines differ only
/// in summation order (u = 2⁻²⁴):
/// * a gradient element sums B = 100 per-sample terms built from forward sums of ≤ 784
///   products; two orders differ by about √n·u relative (random-walk rounding), ≲ 10u·G with
///   G = max |g| ≈ 0.05: 3e-8 (measured at the first step: 0.7–1.5e-8 over seeds 1–4);
/// * a gradient difference at step i reaches w at each later step s through the momentum
///   buffer with weight μ^(s−i), so over 20 steps it counts α·Σ_s Σ_(i<s) μ^i = 0.05·121 = 6
///   times: 6·3e-8 = 1.8e-7;
/// * each update w − αv is rounded on each side, one ulp ≤ 2u·|w| apart once the values
///   differ, |w| ≤ 0.09: 20·2u·0.09 = 2.1e-7.
///
/// Together 3.9e-7. Measured 2.6e-8 for this run (seed 1) and 3.2–4.5e-8 for seeds 2–4, on
/// lavapipe and on llvmpipe GL.
const SGD_20_STEPS_TOL: f32 = 4e-7;

#[test]
fn gpu_and_cpu_training_agree_within_rounding() {
    let data = sample();
    let cfg = config("784-32-16-10", 1);
    let model = cfg.init_model();
    let mut cpu = Engine::cpu(&cfg, &model, None, &data.train, Some(&data.test)).unwrap();
    let hc = train::run(&mut cpu, Position::default(), &mut Quiet).unwrap();
    let mc = cpu.model().unwrap();
    assert_every_layer_moved("cpu", &model, &mc, 1e-3);
    for ctx in common::contexts("gpu_cpu_agree") {
        let name = ctx.describe();
        let mut gpu = Engine::gpu(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let hg = train::run(&mut gpu, Position::default(), &mut Quiet).unwrap();
        let mg = gpu.model().unwrap();
        assert_every_layer_moved(&name, &model, &mg, 1e-3);
        let d = common::max_diff(&mc, &mg);
        eprintln!(
            "{name}: max |w_gpu − w_cpu| = {d:.3e} (moved {:.3e})",
            common::max_diff(&mg, &model)
        );
        assert!(d < SGD_20_STEPS_TOL, "{name}: weights differ by {d}");
        assert!((hc[0].train_loss - hg[0].train_loss).abs() < 1e-4);
        assert!((hc[0].test_acc - hg[0].test_acc).abs() <= 0.002);
    }
}

#[test]
fn fixed_seed_gives_bitwise_identical_runs() {
    let data = sample();
    let mut cfg = config("784-16-10", 1);
    cfg.max_steps = Some(10);
    let mut models = Vec::new();
    for _ in 0..2 {
        for ctx in common::contexts("reproducible").into_iter().take(1) {
            let model = cfg.init_model();
            let mut e = Engine::gpu(ctx, &cfg, &model, None, &data.train, None).unwrap();
            train::run(&mut e, Position::default(), &mut Quiet).unwrap();
            models.push(e.model().unwrap());
        }
    }
    if models.len() == 2 {
        assert_eq!(models[0], models[1]);
    }
}

#[test]
fn evaluation_counts_every_test_image_once_including_a_partial_batch() {
    let data = sample();
    let mut cfg = config("784-10", 1);
    cfg.batch = 300; // 1,000 test images: 3 full batches and one of 100
    let model = Model::init_uniform(&cfg.arch, 0.07, 3);
    let mut cpu = Engine::cpu(&cfg, &model, None, &data.train, Some(&data.test)).unwrap();
    let want = cpu.evaluate(Which::Test).unwrap();
    assert_eq!(want.seen, 1000);
    for ctx in common::contexts("eval_partial") {
        let mut e = Engine::gpu(ctx, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        let got = e.evaluate(Which::Test).unwrap();
        assert_eq!(got.seen, 1000);
        assert_eq!(got.correct, want.correct);
        assert!((got.loss_sum - want.loss_sum).abs() < 1e-3 * want.loss_sum);
    }
}

#[test]
fn no_shuffle_is_file_order_and_shuffle_is_a_seeded_permutation() {
    assert_eq!(train::epoch_order(5, 9, 0, false), vec![0, 1, 2, 3, 4]);
    let a = train::epoch_order(1000, 9, 0, true);
    let b = train::epoch_order(1000, 9, 1, true);
    assert_ne!(a, b, "each epoch gets a new order");
    assert_eq!(
        a,
        train::epoch_order(1000, 9, 0, true),
        "same seed, same order"
    );
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..1000).collect::<Vec<u32>>());
}

#[test]
fn diverging_loss_stops_with_a_clear_error() {
    let data = sample();
    let mut cfg = config("784-64-10", 1);
    cfg.lr = 1e30;
    let model = cfg.init_model();
    let mut engines: Vec<Engine> = common::contexts("diverge")
        .into_iter()
        .map(|ctx| Engine::gpu(ctx, &cfg, &model, None, &data.train, None).unwrap())
        .collect();
    engines.push(Engine::cpu(&cfg, &model, None, &data.train, None).unwrap());
    for e in &mut engines {
        let err = train::run(e, Position::default(), &mut Quiet).unwrap_err();
        assert!(
            err.to_string().contains("diverged"),
            "{}: {err}",
            e.device()
        );
    }
}

/// A small conv net: every layer type (conv with padding and stride, pooling, flatten, dense).
const CONV_ARCH: &str = "1x28x28-c6k5p2-m2-c8k3s2p1-m2-32-10";

fn conv_config(epochs: usize) -> TrainConfig {
    let mut cfg = config(CONV_ARCH, epochs);
    cfg.optimizer = Optimizer::Adam;
    cfg.lr = 1e-2;
    cfg.batch = 50;
    cfg.init = train::Init::Pytorch;
    cfg
}

/// One run of `cfg` from `model` on the CPU engine and on every adapter: (device, history,
/// final engine), CPU first.
fn train_everywhere(
    cfg: &TrainConfig,
    model: &Model,
    data: &wgtrain::data::Mnist,
    with_test: bool,
    test: &str,
) -> Vec<(String, Vec<wgtrain::report::EpochMetrics>, Engine)> {
    let test_set = with_test.then_some(&data.test);
    let mut engines = vec![Engine::cpu(cfg, model, None, &data.train, test_set).unwrap()];
    for ctx in common::contexts(test) {
        engines.push(Engine::gpu(ctx, cfg, model, None, &data.train, test_set).unwrap());
    }
    engines
        .into_iter()
        .map(|mut e| {
            let h = train::run(&mut e, Position::default(), &mut Quiet).unwrap();
            (e.device(), h, e)
        })
        .collect()
}

#[test]
fn short_conv_net_training_learns_on_both_engines_and_they_agree() {
    // 3 epochs of Adam (lr 0.01, batch 50) on the 2,000-image sample, 120 steps: the CPU
    // engine reaches 82.5% test accuracy; 70% is far above chance (10%) and leaves room for
    // the run-to-run noise of a short run.
    let data = sample();
    let cfg = conv_config(3);
    let model = cfg.init_model();
    let mut runs = train_everywhere(&cfg, &model, &data, true, "conv_train");
    let (_, hc, cpu) = &mut runs[0];
    assert!(
        common::max_diff(&cpu.model().unwrap(), &model) > 1e-3,
        "the weights moved"
    );
    let hc = hc.clone();
    for (name, h, _) in &runs {
        eprintln!("{name}: test accuracy {:.2}%", 100.0 * h[2].test_acc);
        assert!(h[2].test_acc >= 0.70, "{name}: {}", h[2].test_acc);
        // Weights are not compared here: Adam's first updates are ±lr for any gradient that
        // is nonzero, so a gradient that is 0 on one engine and a rounding residue on another
        // moves a weight by lr at once (seen on llvmpipe GL: 0.22 after 120 steps, 5e-6 on
        // lavapipe). The SGD test below compares weights; this one the learning.
        assert!((hc[2].train_loss - h[2].train_loss).abs() < 0.05, "{name}");
        assert!((hc[2].test_acc - h[2].test_acc).abs() <= 0.03, "{name}");
    }
}

#[test]
fn conv_net_sgd_steps_agree_across_engines_within_rounding() {
    let data = sample();
    let mut cfg = config(CONV_ARCH, 1);
    cfg.init = train::Init::Pytorch;
    cfg.max_steps = Some(20);
    let model = cfg.init_model();
    let mut runs = train_everywhere(&cfg, &model, &data, false, "conv_sgd_agree");
    let mc = runs[0].2.model().unwrap();
    assert!(common::max_diff(&mc, &model) > 1e-3, "the weights moved");
    for (name, _, e) in runs.iter_mut().skip(1) {
        let d = common::max_diff(&mc, &e.model().unwrap());
        eprintln!("{name}: max |w_gpu − w_cpu| = {d:.3e}");
        // 20 SGD steps; the engines differ only in summation order. Per step a gradient
        // element carries a relative error of a few u·√n in practice (n ≤ 78,400 terms for the
        // first convolution's weight gradient, random-walk rounding), on gradients ≤ O(0.1),
        // times lr = 0.05 and the momentum sum (≤ 10): ≈ 1e-7 over 20 steps; measured 3e-8.
        // 1e-6 keeps a 30× margin and fails on any real disagreement.
        assert!(d < 1e-6, "{name}: weights differ by {d}");
    }
}

#[test]
fn adam_gpu_and_cpu_agree_on_an_mlp() {
    let data = sample();
    let mut cfg = config("784-32-10", 1);
    cfg.optimizer = Optimizer::Adam;
    cfg.lr = 1e-3;
    cfg.l2 = 1e-3;
    cfg.max_steps = Some(10);
    let model = cfg.init_model();
    let mut runs = train_everywhere(&cfg, &model, &data, false, "adam_agree");
    let mc = runs[0].2.model().unwrap();
    assert!(
        common::max_diff(&mc, &model) > 5e-3,
        "10 steps of lr 1e-3 moved the weights"
    );
    for (name, _, e) in runs.iter_mut() {
        assert_eq!(
            e.opt_state().unwrap().step,
            10,
            "{name}: Adam counted its updates"
        );
        let d = common::max_diff(&mc, &e.model().unwrap());
        eprintln!("{name}: max |w_gpu − w_cpu| = {d:.3e}");
        // 10 steps from the same start on an MLP (no pooling): Adam's ±lr amplification needs
        // a gradient at exactly 0 on one side, which dense layers with live inputs do not give.
        assert!(d < 1e-4, "{name}: weights differ by {d}");
    }
}

/// The fast CPU engine (gemm-crate products, threaded element-wise kernels) against the
/// reference backend that runs the simple twins, through whole training steps: an MLP with
/// SGD and the conv net (every layer type) with SGD and with Adam, 20 steps each on the
/// sample. The two differ only in summation order inside products and reductions, so the
/// weights drift apart by a few float32 roundings per step (measured ≤ 1e-6; bound 1e-5).
#[test]
fn fast_cpu_engine_matches_the_reference_twins_step_by_step() {
    use wgtrain::backend::{cpu::CpuBackend, reference::ReferenceBackend};
    let data = sample();
    let mut cases = vec![
        ("mlp sgd", config("784-32-16-10", 1)),
        ("conv adam", conv_config(1)),
    ];
    let mut conv_sgd = conv_config(1);
    conv_sgd.optimizer = Optimizer::Sgd;
    conv_sgd.lr = 0.05;
    cases.push(("conv sgd", conv_sgd));
    for (name, mut cfg) in cases {
        cfg.max_steps = Some(20);
        let model = cfg.init_model();
        let run = |be: Box<dyn wgtrain::backend::Backend>| {
            let t = std::time::Instant::now();
            let mut e = Engine::new(be, &cfg, &model, None, &data.train, Some(&data.test)).unwrap();
            let h = train::run(&mut e, Position::default(), &mut Quiet).unwrap();
            eprintln!(
                "{name} on {}: {:.3} s",
                e.device(),
                t.elapsed().as_secs_f64()
            );
            (h, e.model().unwrap())
        };
        let (hf, mf) = run(Box::new(
            CpuBackend::with_threads(
                2.min(std::thread::available_parallelism().map_or(1, |n| n.get())),
            )
            .unwrap(),
        ));
        let (hr, mr) = run(Box::new(ReferenceBackend::new()));
        let d = common::max_diff(&mf, &mr);
        eprintln!("{name}: max |w_fast − w_reference| = {d:.3e}");
        assert!(
            common::max_diff(&mf, &model) > 1e-3,
            "{name}: the weights moved"
        );
        assert!(d < 1e-5, "{name}: weights differ by {d}");
        assert!((hf[0].train_loss - hr[0].train_loss).abs() < 1e-5, "{name}");
        assert!((hf[0].test_acc - hr[0].test_acc).abs() <= 0.001, "{name}");
    }
}

/// How the hand-computed SGD steps below treat L2.
#[derive(Clone, Copy, Debug, PartialEq)]
enum L2Rule {
    /// torch.optim.SGD with weight_decay λ on the weights' parameter group, 0 on the biases'.
    Pytorch,
    /// No decay at all.
    None,
    /// Weight decay on the biases too.
    BiasesToo,
    /// Decoupled decay (w ← w − αv − αλw), outside the momentum buffer.
    Decoupled,
}

/// The whole run of `e` (built without a test set) from the start; the weights it ends with.
fn train_without_test_set(e: &mut Engine) -> Model {
    train::run(e, Position::default(), &mut Quiet).unwrap();
    e.model().unwrap()
}

/// The reference twins' gradients of the mean loss of `model` on minibatch `s` of `data` in
/// file order (no L2).
fn twin_gradients(
    cfg: &TrainConfig,
    model: &Model,
    data: &wgtrain::data::Dataset,
    s: usize,
) -> Vec<wgtrain::model::Param> {
    use wgtrain::backend::reference::ReferenceBackend;
    let (b, px) = (cfg.batch, data.sample_len());
    let x: Vec<f32> = data.features[s * b * px..(s + 1) * b * px]
        .iter()
        .map(|&p| p as f32 / 255.0)
        .collect();
    let y: Vec<u32> = data.labels[s * b..(s + 1) * b].to_vec();
    let mut e = Engine::new(
        Box::new(ReferenceBackend::new()),
        cfg,
        model,
        None,
        data,
        None,
    )
    .unwrap();
    e.gradients(&x, &y).unwrap()
}

/// `steps` SGD steps from `model` over the training set in file order, applied by hand in f32
/// to gradients from the reference twins (`Engine::gradients`: the mean loss's gradient, no
/// L2), with PyTorch's order of operations: d ← g + λw; v ← μv + d (v = d at the first
/// step, which μ·0 + d is); w ← w − αv.
fn sgd_by_hand(
    cfg: &TrainConfig,
    model: &Model,
    data: &wgtrain::data::Dataset,
    steps: usize,
    rule: L2Rule,
) -> Model {
    let (lr, mu, l2) = (cfg.lr, cfg.momentum, cfg.l2);
    let mut m = model.clone();
    let mut v: Vec<(Vec<f32>, Vec<f32>)> = m
        .params
        .iter()
        .map(|p| (vec![0.0; p.weight.len()], vec![0.0; p.bias.len()]))
        .collect();
    for s in 0..steps {
        let g = twin_gradients(cfg, &m, data, s);
        let (l2_w, l2_b) = match rule {
            L2Rule::Pytorch => (l2, 0.0),
            L2Rule::None | L2Rule::Decoupled => (0.0, 0.0),
            L2Rule::BiasesToo => (l2, l2),
        };
        let decoupled = if rule == L2Rule::Decoupled { l2 } else { 0.0 };
        for ((p, g), (vw, vb)) in m.params.iter_mut().zip(&g).zip(&mut v) {
            let step = |w: &mut f32, g: f32, v: &mut f32, l2: f32| {
                let w0 = *w;
                let d = g + l2 * w0;
                *v = mu * *v + d;
                *w = w0 - lr * *v;
                if decoupled > 0.0 {
                    *w -= lr * decoupled * w0;
                }
            };
            for ((w, &g), v) in p.weight.iter_mut().zip(g.weight.iter()).zip(vw) {
                step(w, g, v, l2_w);
            }
            for ((w, &g), v) in p.bias.iter_mut().zip(g.bias.iter()).zip(vb) {
                step(w, g, v, l2_b);
            }
        }
    }
    m
}

/// `--l2` end to end: 5 SGD steps (α 0.05, μ 0.9, λ 0.01, batch 100, file order) through
/// `train::run` on the reference twins, the fast CPU engine and every adapter land on the
/// weights of PyTorch's rule applied by hand ([`sgd_by_hand`]; checked once against
/// torch.optim.SGD with `scripts/torch_reference.py`'s parameter groups on the same init and
/// data: 1.5e-8 apart, float32 rounding). `tests/torch_fixture.rs` checks λ on a conv net
/// against a committed PyTorch run.
#[test]
fn sgd_with_l2_decays_the_weights_not_the_biases_as_pytorch_does_on_every_engine() {
    use wgtrain::backend::{cpu::CpuBackend, reference::ReferenceBackend};
    let data = sample();
    let mut cfg = config("784-32-10", 1);
    cfg.init = train::Init::Pytorch; // biases start non-zero, so decaying them would show
    cfg.l2 = 0.01;
    cfg.shuffle = false;
    const STEPS: usize = 5;
    cfg.max_steps = Some(STEPS);
    let model = cfg.init_model();
    let want = sgd_by_hand(&cfg, &model, &data.train, STEPS, L2Rule::Pytorch);
    // Tolerance: the engines differ from the hand update only in the summation order of the
    // gradients (the reference engine runs the same twins: measured 0). With the argument of
    // SGD_20_STEPS_TOL for 5 steps: α·Σ_(s≤5) Σ_(i<s) μ^i = 0.66 times a gradient difference
    // of ≲ 10u·G (G = 0.054): 2.1e-8, plus 5·2u·|w| with |w| ≤ 0.18: 1.05e-7; 1.5e-7 in all.
    // Measured 1.5e-8 on the fast CPU engine, lavapipe and llvmpipe GL.
    const TOL: f32 = 1.5e-7;
    // The rules a slip would implement instead are each far outside it (measured 7e-4 to
    // 1.2e-3 away), so matching PyTorch's rule cannot happen by accident.
    for rule in [L2Rule::None, L2Rule::BiasesToo, L2Rule::Decoupled] {
        let other = sgd_by_hand(&cfg, &model, &data.train, STEPS, rule);
        let d = common::max_diff(&other, &want);
        eprintln!("{rule:?}: {d:.3e} from PyTorch's rule");
        assert!(
            d > 1000.0 * TOL,
            "{rule:?} is only {d:e} from PyTorch's rule"
        );
    }
    let mut engines = vec![
        Engine::new(
            Box::new(ReferenceBackend::new()),
            &cfg,
            &model,
            None,
            &data.train,
            None,
        )
        .unwrap(),
        Engine::new(
            Box::new(CpuBackend::new()),
            &cfg,
            &model,
            None,
            &data.train,
            None,
        )
        .unwrap(),
    ];
    for ctx in common::contexts("sgd_l2") {
        engines.push(Engine::gpu(ctx, &cfg, &model, None, &data.train, None).unwrap());
    }
    for mut e in engines {
        let got = train_without_test_set(&mut e);
        let d = common::max_diff(&got, &want);
        eprintln!("{}: {d:.3e} from PyTorch's rule", e.device());
        assert_every_layer_moved(&e.device(), &model, &got, 1e-3);
        assert!(d <= TOL, "{}: {d:e} from PyTorch's rule", e.device());
    }
}

#[test]
fn chunked_progress_stops_at_each_epoch_end_and_max_steps_and_trains_as_the_epoch_loop() {
    // 3 epochs of 20 steps cut by max_steps at 47 (in the third epoch); the browser's driver
    // goes 7 steps at a time, the CLI's loop 50 (CHUNK): the same steps in the same order.
    let data = sample();
    let mut cfg = config("784-16-10", 3);
    cfg.max_steps = Some(47);
    let model = cfg.init_model();
    let mut looped = Engine::cpu(&cfg, &model, None, &data.train, None).unwrap();
    let hist = train::run(&mut looped, Position::default(), &mut Quiet).unwrap();
    assert_eq!(hist.len(), 3, "the cut third epoch is recorded");

    let mut chunked = Engine::cpu(&cfg, &model, None, &data.train, None).unwrap();
    let mut p = train::Progress::new(&cfg, data.train.n, Position::default());
    let mut seen = Vec::new();
    while !p.finished() {
        let c = p.advance(&mut chunked, 7).unwrap();
        assert!(c.done <= c.of && c.epoch_end == (c.done == c.of), "{c:?}");
        seen.push((c.epoch, c.done, c.of, c.epoch_end));
    }
    let ends: Vec<_> = seen.iter().filter(|c| c.3).map(|c| (c.0, c.1)).collect();
    assert_eq!(ends, [(0, 20), (1, 20), (2, 7)], "chunks: {seen:?}");
    assert_eq!(p.steps(), (47, 47));
    // Cut inside the third epoch, the run stands inside it (a checkpoint there resumes the
    // rest of that epoch), as `end` says it would.
    assert_eq!(p.position(), Position { epoch: 2, step: 7 });
    assert_eq!(p.end(), p.position());
    assert_eq!(chunked.model().unwrap(), looped.model().unwrap());

    // Resumed mid-epoch (epoch 1, step 5): the books pick up where they stand.
    let mut r = train::Progress::new(&cfg, data.train.n, Position { epoch: 1, step: 5 });
    assert_eq!(r.steps(), (25, 47));
    let c = r.advance(&mut chunked, 100).unwrap();
    assert_eq!((c.epoch, c.done, c.of, c.epoch_end), (1, 20, 20, true));
}

/// Evaluating the training set mid-epoch overwrites the order buffer the step reads (the
/// evaluation walks the file in order); the next `train_steps` of that epoch must upload the
/// epoch's order again, so the run ends bit-for-bit where an uninterrupted one does.
#[test]
fn evaluating_mid_epoch_then_training_on_continues_the_epochs_own_order() {
    let data = sample();
    let cfg = config("784-32-10", 1);
    let model = cfg.init_model();
    // Not file order, so training on the evaluation's order would take other images.
    let order: Vec<u32> = (0..data.train.n as u32).rev().collect();
    let steps = 4;
    let run = |evaluate_between: bool| {
        let mut e = Engine::cpu(&cfg, &model, None, &data.train, Some(&data.test)).unwrap();
        e.train_steps(&order, 0, steps).unwrap();
        if evaluate_between {
            let m = e.evaluate(Which::Train).unwrap();
            assert_eq!(m.seen as usize, data.train.n, "the evaluation ran");
        }
        e.train_steps(&order, steps, steps).unwrap();
        e.model().unwrap()
    };
    let straight = run(false);
    let interrupted = run(true);
    assert!(
        common::max_diff(&straight, &model) > 1e-3,
        "the weights moved"
    );
    assert_eq!(
        common::max_diff(&straight, &interrupted),
        0.0,
        "an evaluation between two chunks of an epoch changed what the second chunk trained on"
    );
}

/// Adam with the cosine schedule, by hand in the test: PyTorch's update (m̂ and v̂ through the
/// bias corrections, step size α_t/(1 − β1ᵗ), denominator √v/√(1 − β2ᵗ) + ε) with
/// CosineAnnealingLR's rate α_t = α·(1 + cos(π(t − 1)/T))/2 over T = the configured epochs'
/// steps, on gradients from the reference twins (file order).
fn adam_cosine_by_hand(cfg: &TrainConfig, model: &Model, data: &wgtrain::data::Dataset) -> Model {
    let b = cfg.batch;
    let per_epoch = data.n / b;
    let span = (cfg.epochs * per_epoch) as f64;
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f32);
    let mut m = model.clone();
    let zeros = |m: &Model| -> Vec<(Vec<f32>, Vec<f32>)> {
        m.params
            .iter()
            .map(|p| (vec![0.0; p.weight.len()], vec![0.0; p.bias.len()]))
            .collect()
    };
    let (mut mom, mut vel) = (zeros(&m), zeros(&m));
    for t in 1..=cfg.max_steps.unwrap() {
        let s = (t - 1) % per_epoch;
        let g = twin_gradients(cfg, &m, data, s);
        let lr = cfg.lr as f64 * 0.5 * (1.0 + (std::f64::consts::PI * (t - 1) as f64 / span).cos());
        let step_size = (lr / (1.0 - b1.powi(t as i32))) as f32;
        let bc2_sqrt = (1.0 - b2.powi(t as i32)).sqrt() as f32;
        let step = |w: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
            *m = 0.9 * *m + 0.1 * g;
            *v = 0.999 * *v + 0.001 * g * g;
            *w -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        };
        for (((p, g), (mw, mb)), (vw, vb)) in
            m.params.iter_mut().zip(&g).zip(&mut mom).zip(&mut vel)
        {
            for (((w, &g), m), v) in p.weight.iter_mut().zip(g.weight.iter()).zip(mw).zip(vw) {
                step(w, g, m, v);
            }
            for (((w, &g), m), v) in p.bias.iter_mut().zip(g.bias.iter()).zip(mb).zip(vb) {
                step(w, g, m, v);
            }
        }
    }
    m
}

/// `--optimizer adam --lr-schedule cosine`, cut by `--max-steps` in the second of 2 epochs:
/// the schedule spans both epochs whatever --max-steps stops at, as PyTorch's
/// CosineAnnealingLR with T_max = the run's steps does ([`adam_cosine_by_hand`]).
#[test]
fn adam_with_the_cosine_schedule_spans_the_configured_epochs_as_pytorch_does() {
    let data = sample();
    let mut cfg = config("784-16-10", 2);
    cfg.optimizer = Optimizer::Adam;
    cfg.lr_schedule = train::LrSchedule::Cosine;
    cfg.lr = 0.01;
    cfg.l2 = 0.0;
    cfg.shuffle = false;
    cfg.max_steps = Some(35); // of 40
    let model = cfg.init_model();
    let want = adam_cosine_by_hand(&cfg, &model, &data.train);
    let mut e = Engine::new(
        Box::new(wgtrain::backend::reference::ReferenceBackend::new()),
        &cfg,
        &model,
        None,
        &data.train,
        None,
    )
    .unwrap();
    let got = train_without_test_set(&mut e);
    let d = common::max_diff(&got, &want);
    // Tolerance: the same gradients (the reference twins) and the same update, up to the
    // kernel's order of roundings (a few u of each step, |step| ≤ α_t·|m̂/√v̂|) fed back through
    // 35 steps; measured 2.2e-7. A schedule over 20 or 22 steps instead of 40 (a wrong span)
    // changes α_t by ~0.4α = 4e-3 from step 22 on, 400 times the tolerance.
    let moved = common::max_diff(&got, &model);
    eprintln!("adam cosine: {d:.3e} from the hand update; weights moved {moved:.3e}");
    assert!(moved > 0.01, "the weights moved");
    assert!(d < 1e-5, "{d:e} from PyTorch's Adam with CosineAnnealingLR");
}
