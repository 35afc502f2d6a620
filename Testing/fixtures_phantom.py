"""Phantom fixtures (owned by the phantom work): generated once per test session.

* ``phantom_dir``: default phantom (term_3t, seed 0) written to a temporary folder.
* ``phantom``: the in-memory :class:`Phantom` of the same.
* ``injured_phantom_dir``: term_3t seed 0, bilirubin injury, strength 1, T1 files only
  (t1, labels, brain_mask, labels.csv, subject.json); same anatomy and grid as ``phantom_dir``.
* ``phantom_t1_only``: in-memory T1-only phantom of term_3t seed 0 (same T1 as ``phantom``).
* ``phantom_cohort_factory(n, center="A", seed=0, modalities=("t1",), injury="bilirubin")``:
  path of ``cohort.csv`` of a small cohort, cached per argument set for the session.
"""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def phantom():
    from NeonatalBrainLib.phantom import generate_phantom

    return generate_phantom(seed=0, preset="term_3t")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory, phantom):
    from NeonatalBrainLib.phantom import save_phantom

    return save_phantom(phantom, tmp_path_factory.mktemp("phantom") / "term_3t_seed0")


@pytest.fixture(scope="session")
def injured_phantom_dir(tmp_path_factory):
    from NeonatalBrainLib.phantom import InjurySpec, write_phantom

    return write_phantom(tmp_path_factory.mktemp("phantom_injured") / "bilirubin", seed=0, preset="term_3t",
                         injury=InjurySpec("bilirubin", strength=1.0), modalities=("t1",))


@pytest.fixture(scope="session")
def phantom_t1_only():
    """term_3t seed 0 with the T1 only (fast): same anatomy and T1 as ``phantom``."""
    from NeonatalBrainLib.phantom import generate_phantom

    return generate_phantom(seed=0, preset="term_3t", modalities=("t1",))


@pytest.fixture(scope="session")
def phantom_cohort_factory(tmp_path_factory):
    from NeonatalBrainLib.phantom import write_cohort

    cache = {}

    def make(n: int = 12, center: str = "A", seed: int = 0, modalities=("t1",), injury: str = "bilirubin"):
        key = (int(n), center, int(seed), tuple(modalities), injury)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"cohort_{center}_{seed}") / "cohort"
            cache[key] = write_cohort(out, n, center=center, seed=seed, modalities=modalities, injury=injury)
        return cache[key]

    return make
