"""Per-epoch training time of the same run through `wgtrain train` and through the Python
package, side by side (issue 21: the binding must add no cost per step).

    python scripts/python_vs_cli.py --cli target/release/wgtrain [--preset seed-large]
        [--epochs 2] [--rounds 2] [--device cpu]

Alternates CLI and Python runs `--rounds` times on MNIST (MNIST_DIR or the cache) and prints
each epoch's seconds (the engine's own figure, `seconds` in both) and the medians. Needs the
package installed (`pip install ./python`) and a release CLI.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

import wgtrain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", required=True)
    ap.add_argument("--preset", default="seed-large")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    train, test = wgtrain.Dataset.mnist("train"), wgtrain.Dataset.mnist("test")
    cli_s, py_s = [], []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            out = subprocess.run(
                [a.cli, "train", "--preset", a.preset, "--device", a.device,
                 "--epochs", str(a.epochs), "--json", "--checkpoint-every", "0",
                 "--out", os.path.join(d, "m.safetensors")],
                check=True, capture_output=True, text=True,
            )
            s = json.loads(out.stdout)
            cli = [e["seconds"] for e in s["epochs"]]
            t = wgtrain.Trainer(a.preset, device=a.device, epochs=a.epochs)
            py = [h["seconds"] for h in t.fit(train, test)]
            print(f"round {r + 1}: CLI {['%.3f' % x for x in cli]}  Python {['%.3f' % x for x in py]}"
                  f"  ({s['device']})")
            cli_s += cli
            py_s += py
    mc, mp = statistics.median(cli_s), statistics.median(py_s)
    print(f"median s/epoch: CLI {mc:.3f}, Python {mp:.3f}, Python / CLI {mp / mc:.3f}")


if __name__ == "__main__":
    main()
