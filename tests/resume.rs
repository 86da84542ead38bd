//! Interruption: kill -9 never leaves a corrupt checkpoint, Ctrl-C saves one, and resuming
//! either gives exactly the weights of an uninterrupted run with the same seed.
//!
//! A run that is to be interrupted is asked for [`ENDLESS`] epochs, so that it is certainly
//! still training when the signal arrives, however fast the machine; the test then proves the
//! interruption (the process died of the signal or reported it, and the checkpoint stands
//! before the end of the run). The resumed run and the uninterrupted reference both stop at a
//! step count chosen after the interrupt (`--max-steps`): with SGD's constant learning rate a
//! run's first steps do not depend on how long it was asked to be, so both must equal the
//! uninterrupted run stopped there. The tests wait for evidence (a checkpoint file, an epoch
//! line) rather than for a fixed time, so a slow machine only makes them slower.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wgtrain::model::io::Checkpoint;
use wgtrain::model::Model;

const ARCH: &str = "784-1000-1000-10";

/// Epochs for a run that must not finish before the test interrupts it: 2·10⁶ steps.
const ENDLESS: &str = "100000";

/// The 2,000 sample images in minibatches of 100 (the default batch size).
const STEPS_PER_EPOCH: usize = 20;

/// How long a slow machine may take to show that training is under way.
const PATIENCE: Duration = Duration::from_secs(300);

fn cmd(out: &Path, extra: &[&str]) -> Command {
    cmd_on("cpu", ARCH, out, extra)
}

/// `wgtrain train` of `arch` on `device` with the tests' environment, seed 7, no `--epochs`.
fn cmd_on(device: &str, arch: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = common::wgtrain_command();
    c.args([
        "train",
        "--arch",
        arch,
        "--data-dir",
        "assets/mnist-sample",
        "--device",
        device,
        "--seed",
        "7",
        "--quiet",
        "--out",
    ])
    .arg(out)
    .args(extra)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

fn ckpt(out: &Path) -> PathBuf {
    out.with_file_name("m.ckpt.safetensors")
}

/// The weights of a run asked for [`ENDLESS`] epochs that stops after `steps` steps.
fn uninterrupted(cmd: impl Fn(&Path, &[&str]) -> Command, dir: &Path, steps: usize) -> Model {
    let out = dir.join("ref").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let steps = steps.to_string();
    let o = cmd(&out, &["--epochs", ENDLESS, "--max-steps", &steps])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Model::load(&out).unwrap().0
}

/// Resume the checkpoint beside `out` and stop after `steps` steps in all.
fn resume(cmd: impl Fn(&Path, &[&str]) -> Command, out: &Path, steps: usize) -> Model {
    let steps = steps.to_string();
    let o = cmd(
        out,
        &[
            "--resume",
            ckpt(out).to_str().unwrap(),
            "--max-steps",
            &steps,
        ],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Model::load(out).unwrap().0
}

fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before {path:?} appeared"
        );
        assert!(t.elapsed() < PATIENCE, "no checkpoint after {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Steps the checkpoint's run had done, checked to lie strictly inside the [`ENDLESS`] run:
/// at least one epoch (the test waited for one), and short of the end.
fn steps_done(ck: &Checkpoint) -> usize {
    let at = &ck.run["position"];
    let (epoch, step) = (at["epoch"].as_u64(), at["step"].as_u64());
    let done = epoch.unwrap() as usize * STEPS_PER_EPOCH + step.unwrap() as usize;
    let total: usize = ENDLESS.parse::<usize>().unwrap() * STEPS_PER_EPOCH;
    eprintln!("interrupted at {at} ({done} of {total} steps)");
    assert!(
        (STEPS_PER_EPOCH..total).contains(&done),
        "checkpoint at {at}: not inside the run"
    );
    done
}

/// Send SIGINT (Ctrl-C) to `child`.
fn ctrl_c(child: &Child) {
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn kill_9_mid_training_then_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = cmd(&out, &["--epochs", ENDLESS]).spawn().unwrap();
    wait_for(&ckpt(&out), &mut child);
    // Let it get into the next epoch (and possibly into the next checkpoint write).
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended by itself before kill -9"
    );
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    }
    assert!(!status.success());
    // The checkpoint is whole (atomic rename), and no final model was written.
    let ck = Checkpoint::load(ckpt(&out)).expect("checkpoint intact after kill -9");
    assert!(!out.exists(), "no final model from a killed run");
    // Resume through one and a half more epochs: across an epoch boundary, ending mid-epoch.
    let stop = steps_done(&ck) + STEPS_PER_EPOCH * 3 / 2;
    assert_eq!(
        resume(cmd, &out, stop),
        uninterrupted(cmd, dir.path(), stop)
    );
}

#[test]
fn ctrl_c_saves_a_checkpoint_of_the_running_run_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    // No periodic checkpoints: the one on disk afterwards is the interrupt's.
    let mut child = cmd(&out, &["--epochs", ENDLESS, "--checkpoint-every", "0"])
        .spawn()
        .unwrap();
    // The first epoch's line on stderr: the Ctrl-C handler is installed (before training
    // starts) and the run is under way.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut err = Vec::new();
    let t = Instant::now();
    while !err.iter().any(|l: &String| l.starts_with("epoch")) {
        match rx.recv_timeout(PATIENCE.saturating_sub(t.elapsed())) {
            Ok(line) => err.push(line),
            Err(e) => panic!("no epoch line after {:?} ({e}): {err:?}", t.elapsed()),
        }
    }
    ctrl_c(&child);
    let status = child.wait().unwrap();
    err.extend(rx.iter());
    let err = err.join("\n");
    assert!(
        !status.success(),
        "the run was not interrupted ({status:?}): {err}"
    );
    assert!(
        err.contains("interrupted") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "no final model from an interrupted run");
    // Epochs of 20 steps are shorter than the 50-step chunks between interrupt checks, so
    // this checkpoint is at an epoch boundary; the resume from mid-epoch positions is checked
    // bit for bit in process by the Adam test below.
    let ck = Checkpoint::load(ckpt(&out)).unwrap();
    let stop = steps_done(&ck) + STEPS_PER_EPOCH * 3 / 2;
    assert_eq!(
        resume(cmd, &out, stop),
        uninterrupted(cmd, dir.path(), stop)
    );
}

#[test]
fn gpu_run_interrupted_and_resumed_matches_the_uninterrupted_gpu_run() {
    if common::contexts("gpu_resume").is_empty() {
        return;
    }
    let gpu = |out: &Path, extra: &[&str]| {
        let mut c = cmd_on("gpu", "784-256-10", out, &["--backend", "vulkan"]);
        // The three runs must launch the same variants: a cold run tunes between steps and
        // switches mid-run, while a run after it starts on the cached choices. Every product
        // on the adapter's default, untuned, makes them the same.
        c.env("WGTRAIN_AUTOTUNE", "0");
        c.args(extra);
        c
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = gpu(&out, &["--epochs", ENDLESS]).spawn().unwrap();
    wait_for(&ckpt(&out), &mut child);
    ctrl_c(&child);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the run was not interrupted ({}): {err}",
        o.status
    );
    assert!(err.contains("interrupted"), "{err}");
    let stop = steps_done(&Checkpoint::load(ckpt(&out)).unwrap()) + STEPS_PER_EPOCH * 3 / 2;
    // Same adapter, same dispatches, no atomics: bitwise identical.
    assert_eq!(
        resume(gpu, &out, stop),
        uninterrupted(gpu, dir.path(), stop)
    );
}

/// Adam on a conv net, in process: k steps, checkpoint, a fresh engine resumed from the file,
/// the rest of the run; the weights, both moment buffers and Adam's step count equal those of
/// the uninterrupted run bit for bit, on the CPU and on every adapter.
#[test]
fn adam_conv_net_resumed_from_a_checkpoint_matches_the_uninterrupted_run_bitwise() {
    use wgtrain::train::{
        self, session, Engine, OptState, Optimizer, Position, Quiet, TrainConfig,
    };
    let data = wgtrain::data::load_dir(Path::new("assets/mnist-sample")).unwrap();
    let train_set = data.train.subset(500);
    let mut cfg = TrainConfig::preset(wgtrain::model::Preset::Lenet5);
    cfg.arch = wgtrain::model::Arch::parse("1x28x28-c4k5p2-m2-c6k5-m2-24-10").unwrap();
    cfg.epochs = 2;
    cfg.batch = 50;
    assert_eq!(cfg.optimizer, Optimizer::Adam);
    let model = cfg.init_model();
    let dir = tempfile::tempdir().unwrap();
    type Make = Box<dyn Fn(&TrainConfig, &Model, Option<&OptState>) -> Engine>;
    let t = train_set.clone();
    let mut engines: Vec<Make> = vec![Box::new(move |c, m, s| {
        Engine::cpu(c, m, s, &t, None).unwrap()
    })];
    for (i, _) in common::contexts("adam_resume").into_iter().enumerate() {
        let t = train_set.clone();
        engines.push(Box::new(move |c, m, s| {
            let ctx = common::contexts("adam_resume").swap_remove(i);
            Engine::gpu(ctx, c, m, s, &t, None).unwrap()
        }));
    }
    for make in &engines {
        let mut whole = make(&cfg, &model, None);
        let n = train_set.n;
        train::run(&mut whole, Position::default(), &mut Quiet).unwrap();
        let want = (whole.model().unwrap(), whole.opt_state().unwrap());

        // Interrupted after epoch 1 plus 3 steps of epoch 2.
        let mut part = cfg.clone();
        part.max_steps = Some(n / cfg.batch + 3);
        let mut first = make(&part, &model, None);
        train::run(&mut first, Position::default(), &mut Quiet).unwrap();
        let path = dir.path().join("c.ckpt.safetensors");
        let at = Position { epoch: 1, step: 3 };
        session::save_checkpoint(&mut first, &cfg, &path, at).unwrap();

        let start = session::start(
            TrainConfig::preset(wgtrain::model::Preset::SeedLarge),
            &session::Overrides::default(),
            None,
            Some(&path),
        )
        .unwrap();
        assert_eq!(start.cfg, cfg, "the checkpoint carries the run's settings");
        assert_eq!(start.position, at);
        let mut second = make(&start.cfg, &start.model, start.state.as_ref());
        train::run(&mut second, start.position, &mut Quiet).unwrap();
        let got = (second.model().unwrap(), second.opt_state().unwrap());
        assert_eq!(got.1.step, (2 * n / cfg.batch) as u64);
        assert_eq!(got, want, "{}", second.device());
    }
}

/// A run that `--max-steps` stops inside an epoch checkpoints where it stands (that epoch,
/// that step), and resuming it gives the weights of the unbroken run bit for bit. (It used to
/// checkpoint "next epoch", so a resume skipped the rest of the epoch.)
#[test]
fn a_run_stopped_mid_epoch_by_max_steps_resumes_to_the_unbroken_weights() {
    let arch = "784-32-10";
    let plain = |out: &Path, extra: &[&str]| cmd_on("cpu", arch, out, extra);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let stop = STEPS_PER_EPOCH + 7;
    let o = plain(
        &out,
        &["--epochs", ENDLESS, "--max-steps", &stop.to_string()],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ck = Checkpoint::load(ckpt(&out)).unwrap();
    assert_eq!(
        (
            ck.run["position"]["epoch"].as_u64(),
            ck.run["position"]["step"].as_u64()
        ),
        (Some(1), Some(7)),
        "{:?}",
        ck.run
    );
    let end = 2 * STEPS_PER_EPOCH + 10;
    assert_eq!(
        resume(plain, &out, end),
        uninterrupted(plain, dir.path(), end)
    );
}

/// `--augment` travels in the checkpoint: a run stopped by `--max-steps` after two epochs and
/// resumed without the flag draws the crops and flips of the unbroken augmented run (same
/// weights bit for bit), not those of a run without augmentation.
#[test]
fn an_augmented_run_resumed_without_the_flag_matches_the_unbroken_augmented_run() {
    let arch = "784-32-10";
    let aug = |out: &Path, extra: &[&str]| {
        let mut c = cmd_on("cpu", arch, out, &["--augment", "crop:3,flip"]);
        c.args(extra);
        c
    };
    let plain = |out: &Path, extra: &[&str]| cmd_on("cpu", arch, out, extra);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let stop = (2 * STEPS_PER_EPOCH).to_string();
    let o = aug(&out, &["--epochs", ENDLESS, "--max-steps", &stop])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let end = 3 * STEPS_PER_EPOCH;
    let resumed = resume(plain, &out, end);
    assert_eq!(resumed, uninterrupted(aug, dir.path(), end));
    let other = tempfile::tempdir().unwrap();
    assert_ne!(resumed, uninterrupted(plain, other.path(), end));
}

/// The optimisers and schedules of issue 20 resume exactly: AdamW with one-cycle, warm-up,
/// decay on every parameter and label smoothing, and SGD with Nesterov momentum, L2, cosine and
/// warm-up, each split by a checkpoint mid-epoch (inside the warm-up's reach of the schedule
/// tables: the resumed update counter must pick up the right learning rate and decay factor),
/// give the unbroken run's weights and optimiser state bit for bit, on the CPU engine and every
/// GPU adapter; the checkpoint carries every setting.
#[test]
fn adamw_one_cycle_and_sgd_nesterov_cosine_runs_resume_to_the_unbroken_weights() {
    use wgtrain::train::{
        self, session, DecayScope, Engine, LrSchedule, OptState, Optimizer, Position, Quiet,
        TrainConfig,
    };
    let data = wgtrain::data::load_dir(Path::new("assets/mnist-sample")).unwrap();
    let train_set = data.train.subset(400);
    let mut adamw = TrainConfig::lecture(wgtrain::model::Arch::parse("784-24-10").unwrap());
    adamw.optimizer = Optimizer::AdamW;
    adamw.lr = 3e-3;
    adamw.weight_decay = 0.05;
    adamw.lr_schedule = LrSchedule::OneCycle;
    adamw.warmup = 5;
    adamw.decay_scope = DecayScope::All;
    adamw.label_smoothing = 0.1;
    adamw.epochs = 2;
    adamw.batch = 40;
    let mut nesterov = adamw.clone();
    nesterov.optimizer = Optimizer::Sgd;
    nesterov.weight_decay = 0.0;
    nesterov.lr = 0.05;
    nesterov.nesterov = true;
    nesterov.l2 = 1e-3;
    nesterov.decay_scope = DecayScope::Weights;
    nesterov.lr_schedule = LrSchedule::Cosine;
    nesterov.label_smoothing = 0.0;
    let dir = tempfile::tempdir().unwrap();
    type Make = Box<dyn Fn(&TrainConfig, &Model, Option<&OptState>) -> Engine>;
    let t = train_set.clone();
    let mut engines: Vec<Make> = vec![Box::new(move |c, m, s| {
        Engine::cpu(c, m, s, &t, None).unwrap()
    })];
    for (i, _) in common::contexts("optim_resume").into_iter().enumerate() {
        let t = train_set.clone();
        engines.push(Box::new(move |c, m, s| {
            let ctx = common::contexts("optim_resume").swap_remove(i);
            Engine::gpu(ctx, c, m, s, &t, None).unwrap()
        }));
    }
    for cfg in [adamw, nesterov] {
        cfg.validate().unwrap();
        let model = cfg.init_model();
        for make in &engines {
            let mut whole = make(&cfg, &model, None);
            let n = train_set.n;
            train::run(&mut whole, Position::default(), &mut Quiet).unwrap();
            let want = (whole.model().unwrap(), whole.opt_state().unwrap());

            // Interrupted 3 steps into the run (inside the warm-up), then resumed.
            let mut part = cfg.clone();
            part.max_steps = Some(3);
            let mut first = make(&part, &model, None);
            train::run(&mut first, Position::default(), &mut Quiet).unwrap();
            let path = dir.path().join("c.ckpt.safetensors");
            let at = Position { epoch: 0, step: 3 };
            session::save_checkpoint(&mut first, &cfg, &path, at).unwrap();

            let start = session::start(
                TrainConfig::preset(wgtrain::model::Preset::SeedLarge),
                &session::Overrides::default(),
                None,
                Some(&path),
            )
            .unwrap();
            assert_eq!(start.cfg, cfg, "the checkpoint carries the run's settings");
            assert_eq!(start.state.as_ref().unwrap().step, 3);
            let mut second = make(&start.cfg, &start.model, start.state.as_ref());
            train::run(&mut second, start.position, &mut Quiet).unwrap();
            let got = (second.model().unwrap(), second.opt_state().unwrap());
            assert_eq!(got.1.step, (2 * n / cfg.batch) as u64);
            assert_eq!(got, want, "{} {}", cfg.optimizer, second.device());
        }
    }
}

/// A constant-rate SGD checkpoint holds no update counter; resumed with a schedule added
/// (`--lr-schedule cosine`), the schedule continues from the run's position, as if the
/// checkpoint had counted its updates, rather than restarting at its first update.
#[test]
fn a_schedule_added_when_resuming_a_constant_sgd_checkpoint_starts_at_the_runs_position() {
    use wgtrain::train::{self, session, Engine, LrSchedule, Position, Quiet, TrainConfig};
    let data = wgtrain::data::load_dir(Path::new("assets/mnist-sample")).unwrap();
    let train_set = data.train.subset(400);
    let mut cfg = TrainConfig::lecture(wgtrain::model::Arch::parse("784-24-10").unwrap());
    cfg.epochs = 2;
    cfg.batch = 40;
    let model = cfg.init_model();
    let mut part = cfg.clone();
    part.max_steps = Some(13);
    let mut first = Engine::cpu(&part, &model, None, &train_set, None).unwrap();
    train::run(&mut first, Position::default(), &mut Quiet).unwrap();
    assert_eq!(
        first.opt_state().unwrap().step,
        0,
        "constant SGD counts nothing"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.ckpt.safetensors");
    let at = Position { epoch: 1, step: 3 };
    session::save_checkpoint(&mut first, &cfg, &path, at).unwrap();

    let ov = session::Overrides {
        lr_schedule: Some(LrSchedule::Cosine),
        ..Default::default()
    };
    let start = session::start(cfg.clone(), &ov, None, Some(&path)).unwrap();
    assert_eq!(start.cfg.lr_schedule, LrSchedule::Cosine);
    let mut resumed = Engine::cpu(
        &start.cfg,
        &start.model,
        start.state.as_ref(),
        &train_set,
        None,
    )
    .unwrap();
    train::run(&mut resumed, start.position, &mut Quiet).unwrap();
    let got = resumed.opt_state().unwrap();
    assert_eq!(
        got.step, 20,
        "the counter follows the run: 13 steps before, 7 after"
    );

    // The same weights with the counter given explicitly at the checkpoint's 13 updates.
    let mut state = start.state.clone().unwrap();
    state.step = 13;
    let mut explicit =
        Engine::cpu(&start.cfg, &start.model, Some(&state), &train_set, None).unwrap();
    train::run(&mut explicit, start.position, &mut Quiet).unwrap();
    assert_eq!(resumed.model().unwrap(), explicit.model().unwrap());
    // And not those of a schedule restarted at the checkpoint.
    let mut restarted = Engine::cpu(
        &start.cfg,
        &start.model,
        start.state.as_ref(),
        &train_set,
        None,
    )
    .unwrap();
    restarted
        .train_steps(&train::epoch_order(400, cfg.seed, 1, true), 3, 7)
        .unwrap();
    assert_ne!(resumed.model().unwrap(), restarted.model().unwrap());
}
