"""The settings of one run: the same for every network it trains."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    experiment: str
    dim: int = 32
    depth: int = 8
    steps: int = 1500
    batch: int = 256
    lr: float = 3e-3
    seeds: int = 3
    n_train: int = 2048
    n_test: int = 2048
    data_seed: int = 1234
    rings: int = 4
    parity_bits: int = 6
    tent_compositions: int = 4


def settings_for(name: str, quick: bool, seeds: int | None) -> Settings:
    base = Settings(name)
    if name == "telgarsky":
        base = replace(base, n_train=1024, n_test=1000)
    if quick:
        base = replace(base, steps=150, seeds=1, n_train=512, n_test=512)
    if seeds is not None:
        base = replace(base, seeds=seeds)
    return base
