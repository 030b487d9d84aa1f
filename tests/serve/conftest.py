"""A tiny trained victim, shared by the serving tests."""

import pytest


@pytest.fixture(scope="session")
def victim_dir(tiny_root, tmp_path_factory):
    from divqat.configs import VictimConfig
    from divqat.pipeline import train

    out = tmp_path_factory.mktemp("serve") / "victim"
    train(VictimConfig(method="qat", epochs=1, fp_epochs=1, batch_size=128, seed=0), out, data_root=tiny_root)
    return out
