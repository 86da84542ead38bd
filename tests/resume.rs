//! Interruption: kill -9 never leaves a corrupt checkpoint, Ctrl-C saves one mid-epoch, and
//! resuming either gives exactly the weights of an uninterrupted run with the same seed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wgtrain::model::Model;

const ARCH: &str = "784-1000-1000-10";

fn cmd(out: &Path, extra: &[&str]) -> Command {
    cmd_on("cpu", ARCH, out, extra)
}

fn cmd_on(device: &str, arch: &str, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgtrain"));
    c.args([
        "train",
        "--arch",
        arch,
        "--data-dir",
        "assets/mnist-sample",
        "--device",
        device,
        "--epochs",
        "4",
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

fn uninterrupted(dir: &Path) -> Model {
    let out = dir.join("ref").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let st = cmd(&out, &[]).status().unwrap();
    assert!(st.success());
    Model::load(&out).unwrap().0
}

fn wait_for(path: &Path, child: &mut Child) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before {path:?} appeared"
        );
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resume(out: &Path) -> Model {
    let o = cmd(out, &["--resume", ckpt(out).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Model::load(out).unwrap().0
}

#[test]
fn kill_9_mid_training_then_resume_gives_the_uninterrupted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let want = uninterrupted(dir.path());
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = cmd(&out, &[]).spawn().unwrap();
    wait_for(&ckpt(&out), &mut child);
    // Let it get into the next epoch (and possibly into the next checkpoint write).
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The checkpoint is whole (atomic rename), and no final model was written.
    wgtrain::model::io::Checkpoint::load(ckpt(&out)).expect("checkpoint intact after kill -9");
    assert!(!out.exists() || Model::load(&out).is_ok());
    assert_eq!(resume(&out), want);
}

#[test]
fn ctrl_c_saves_a_mid_epoch_checkpoint_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let want = uninterrupted(dir.path());
    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let child = cmd(&out, &["--checkpoint-every", "0"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        // It finished before the signal arrived: nothing to resume; the test is moot here.
        eprintln!("run finished before Ctrl-C; skipping the resume half");
        return;
    }
    assert!(
        err.contains("interrupted") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let ck = wgtrain::model::io::Checkpoint::load(ckpt(&out)).unwrap();
    eprintln!("interrupted at {}", ck.run["position"]);
    assert_eq!(resume(&out), want);
}

#[test]
fn gpu_run_interrupted_and_resumed_matches_the_uninterrupted_gpu_run() {
    if common::contexts("gpu_resume").is_empty() {
        return;
    }
    let arch = "784-256-10";
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref").join("m.safetensors");
    std::fs::create_dir_all(reference.parent().unwrap()).unwrap();
    let ok = cmd_on("gpu", arch, &reference, &["--backend", "vulkan"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let want = Model::load(&reference).unwrap().0;

    let out = dir.path().join("run").join("m.safetensors");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let mut child = cmd_on("gpu", arch, &out, &["--backend", "vulkan"])
        .spawn()
        .unwrap();
    wait_for(&ckpt(&out), &mut child);
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    if o.status.success() {
        eprintln!("run finished before Ctrl-C; skipping the resume half");
        return;
    }
    let resumed = cmd_on(
        "gpu",
        arch,
        &out,
        &[
            "--backend",
            "vulkan",
            "--resume",
            ckpt(&out).to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    // Same adapter, same dispatches, no atomics: bitwise identical.
    assert_eq!(Model::load(&out).unwrap().0, want);
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
    let mut cfg = TrainConfig::preset("lenet5").unwrap();
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
        train::run(&mut whole, &cfg, n, 0, Position::default(), &mut Quiet).unwrap();
        let want = (whole.model().unwrap(), whole.opt_state().unwrap());

        // Interrupted after epoch 1 plus 3 steps of epoch 2.
        let mut first = make(&cfg, &model, None);
        let mut part = cfg.clone();
        part.max_steps = Some(n / cfg.batch + 3);
        train::run(&mut first, &part, n, 0, Position::default(), &mut Quiet).unwrap();
        let path = dir.path().join("c.ckpt.safetensors");
        let at = Position { epoch: 1, step: 3 };
        session::save_checkpoint(&mut first, &cfg, &path, at).unwrap();

        let start = session::start(
            TrainConfig::preset("seed-large").unwrap(),
            &session::Overrides::default(),
            None,
            Some(&path),
        )
        .unwrap();
        assert_eq!(start.cfg, cfg, "the checkpoint carries the run's settings");
        assert_eq!(start.position, at);
        let mut second = make(&start.cfg, &start.model, start.state.as_ref());
        train::run(&mut second, &start.cfg, n, 0, start.position, &mut Quiet).unwrap();
        let got = (second.model().unwrap(), second.opt_state().unwrap());
        assert_eq!(got.1.step, (2 * n / cfg.batch) as u64);
        assert_eq!(got, want, "{}", second.device());
    }
}
