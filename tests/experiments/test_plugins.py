"""A user's own dataset, defense and attack, registered from a plugin file with the hooks
`divqat.api` exports, run through `divqat run` in worker processes and reported."""

import json
import subprocess
import sys
import textwrap

import yaml

PLUGIN = '''
"""A user's plugin: a dataset, a defense and an attack of their own, registered by name."""
from dataclasses import dataclass

import torch

from divqat import api
from divqat.data import ImageSet


@api.register_dataset(name="bars", num_classes=3, channels=1, size=16, files=())
def bars(directory):
    """Generated, so no files: class c is a bright band at rows 5c..5c+4."""
    g = torch.Generator().manual_seed(0)

    def make(n):
        labels = torch.arange(n) % 3
        images = 0.3 * torch.rand(n, 1, 16, 16, generator=g)
        for c in range(3):
            images[labels == c, :, 5 * c : 5 * c + 5] += 0.6
        return ImageSet(images.clamp(0, 1), labels)

    return make(360), make(90)


@api.register_defense("coarse")
@dataclass
class Coarse(api.Defense):
    """Every probability rounded to a multiple of `step`, then renormalised."""

    step: float = 0.1

    def perturb(self, probs, images):
        rounded = (probs / self.step).round() * self.step + 1e-6
        return rounded / rounded.sum(-1, keepdim=True)


@api.register_attack("first-n")
@dataclass(frozen=True)
class FirstN(api.Attack):
    """Asks the first `n` pool images once each."""

    n: int = 100

    def steal(self, victim, thief):
        images = thief.pool[: min(self.n, victim.remaining)]
        return thief.train_surrogate(images, victim.query(images))
'''


def test_a_plugins_dataset_defense_and_attack_run_through_divqat_run(tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    config = {
        "name": "plugin", "seeds": [0], "baseline": "qat", "plugins": [str(plugin)],
        "victim": {"dataset": "bars", "model": "lenet5", "fp_epochs": 4, "epochs": 1, "batch_size": 32},
        "victims": [{"name": "qat", "method": "qat"}],
        "attack": {"attack": "first-n", "pool": "in", "budget": 60, "epochs": 10, "params": {"n": 50}},
        "attacks": [{"labels": "soft"}],
        "defenses": {"victims": ["qat"], "attack": {"labels": "soft"},
                     "sweeps": [{"name": "coarse", "values": {"step": [0.25]}}]},
    }  # fmt: skip
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "results"
    run = [sys.executable, "-m", "divqat.cli"]
    for command in (["run", str(path), "--out", str(out), "--jobs", "2", "--quiet"], ["report", str(out)]):
        proc = subprocess.run([*run, *command], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        # A new user's screen shows divqat's own output: the spawned workers of --jobs 2 keep
        # torch.export's FutureWarnings to themselves, as the main process does.
        assert "Warning" not in proc.stderr and "Warning" not in proc.stdout, proc.stderr

    victim = json.loads(next(out.glob("jobs/victim-*/metrics.json")).read_text())
    assert victim["dataset"] == "bars" and victim["int8_accuracy"] > 0.6  # chance is a third
    results = [json.loads(p.read_text()) for p in out.glob("jobs/attack-*/result.json")]
    assert sorted(d["name"] for r in results for d in r["defenses"]) == ["coarse"]
    for r in results:  # the attack's own parameter reached it in the workers: 50 of the 60 queries
        assert r["attack"] == "first-n" and r["params"] == {"n": 50} and r["queries"] == 50
    (defended,) = (r for r in results if r["defenses"])
    assert defended["defenses"] == [{"name": "coarse", "step": 0.25}] and defended["defense_l1"] > 0
    assert "coarse" in (out / "report.md").read_text()
