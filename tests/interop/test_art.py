"""ART on both sides: ART's KnockoffNets against a divqat victim (budget counted by divqat),
and ART's attacks as registered divqat attacks beside divqat's own."""

import numpy as np
import pytest
import torch

pytest.importorskip("art", reason="the [art] extra (scripts/setup.sh installs it)")

from art.attacks.extraction import KnockoffNets  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

from divqat import api  # noqa: E402
from divqat.configs import AttackConfig, VictimConfig  # noqa: E402
from divqat.defenses import create_defense  # noqa: E402
from divqat.extraction import steal  # noqa: E402
from divqat.interop import art as divqat_art  # noqa: E402
from divqat.models import create_model  # noqa: E402
from divqat.pipeline import train  # noqa: E402


@pytest.fixture(scope="module")
def victim(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("art") / "victim"
    train(VictimConfig(method="qat", epochs=2, fp_epochs=6, batch_size=64, seed=0), out, data_root=tiny_root)
    return api.load(out)


def art_thief(victim, tiny_splits, defenses):
    """As an ART user writes it: a BlackBoxClassifier (divqat's, behind `defenses`), a
    PyTorchClassifier thief, KnockoffNets.extract; returns (test accuracy, divqat's books)."""
    box, books = divqat_art.classifier(victim, budget=150, input_shape=(1, 28, 28), nb_classes=10, defenses=defenses)
    torch.manual_seed(0)
    np.random.seed(0)  # ART shuffles its training batches with numpy's global generator
    model = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    thief = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(),
                              1e-3), input_shape=(1, 28, 28), nb_classes=10, clip_values=(0.0, 1.0))  # fmt: skip
    attack = KnockoffNets(box, batch_size_fit=32, batch_size_query=64, nb_epochs=30, nb_stolen=150,
                          use_probability=True, verbose=False)  # fmt: skip
    stolen = attack.extract(tiny_splits.thief_pool.images.numpy(), thieved_classifier=thief)
    test = tiny_splits.test
    return (stolen.predict(test.images.numpy()).argmax(1) == test.labels.numpy()).mean(), books, box


def test_arts_knockoffnets_steals_a_divqat_victim_and_every_query_is_counted(victim, tiny_splits):
    plain, books, box = art_thief(victim, tiny_splits, [])
    guarded, guarded_books, _ = art_thief(victim, tiny_splits, [create_defense("reverse-sigmoid", {"beta": 0.3})])
    print(f"ART's KnockoffNets, 150 soft queries: {plain:.3f}; behind reverse sigmoid: {guarded:.3f}")
    for b in (books, guarded_books):
        assert b.queries == 150 and b.remaining == 0  # divqat's books, not ART's word
    assert plain > 0.3  # chance is 0.1
    with pytest.raises(Exception, match="budget exhausted"):  # the budget holds against ART too
        box.predict(tiny_splits.test.images[:1].numpy())
    fresh, _ = divqat_art.classifier(victim, budget=8, input_shape=(1, 28, 28), nb_classes=10)
    shielded, _ = divqat_art.classifier(victim, budget=8, input_shape=(1, 28, 28), nb_classes=10,
                                        defenses=[create_defense("reverse-sigmoid", {"beta": 0.3})])  # fmt: skip
    x = tiny_splits.test.images[:8].numpy()
    assert np.abs(fresh.predict(x) - shielded.predict(x)).sum() > 0.1  # the defense is what ART was told


@pytest.mark.parametrize("attack,labels", [("art-knockoff", "soft"), ("art-copycat", "hard")])
def test_arts_attacks_are_divqat_attacks(victim, tiny_splits, attack, labels):
    config = AttackConfig(attack=attack, pool="in", budget=256, labels=labels, surrogate="lenet5", epochs=10)
    surrogate, result = steal(victim.predict_proba, tiny_splits, config)
    assert result["queries"] == 256 and result["surrogate_accuracy"] > 0.2
    assert isinstance(surrogate, torch.nn.Module)


def test_divqat_defenses_are_art_postprocessors(victim, tiny_splits):
    """A divqat defense in ART's own postprocessing_defences: ART's classifier answers exactly what
    divqat's defense makes of the victim's answer; image-reading defenses are refused in one line."""
    from art.estimators.classification import BlackBoxClassifier

    from divqat.errors import DivqatError

    defense = api.defense("reverse-sigmoid", beta=0.3)
    predict = lambda x: victim.predict_proba(torch.from_numpy(x)).numpy()  # noqa: E731
    box = BlackBoxClassifier(predict, (1, 28, 28), 10, clip_values=(0.0, 1.0),
                             postprocessing_defences=[divqat_art.postprocessor(defense)])  # fmt: skip
    images = tiny_splits.test.images[:32]
    expected = defense(victim.predict_proba(images), images).numpy()
    assert np.array_equal(box.predict(images.numpy()), expected)
    assert not np.allclose(expected, predict(images.numpy()))
    with pytest.raises(DivqatError, match="looks at the queried images"):
        divqat_art.postprocessor(api.defense("mad"))
