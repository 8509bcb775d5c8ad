"""Random, readable run names for runs created without one, as MLflow gives them."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "amber", "brave", "bright", "calm", "clever", "crisp", "daring", "eager", "fancy", "gentle",
    "glossy", "golden", "honest", "humble", "jolly", "keen", "lively", "lucky", "mellow",
    "merry", "nimble", "polite", "proud", "quick", "quiet", "rapid", "rustic", "serene", "shy",
    "silent", "sleek", "smooth", "spry", "steady", "sunny", "swift", "tidy", "vivid", "witty",
    "zesty",
)
_NOUNS = (
    "badger", "bear", "bee", "crane", "deer", "dolphin", "eagle", "falcon", "finch", "fox",
    "gecko", "hare", "hawk", "heron", "ibis", "koala", "lark", "lemur", "lynx", "mole", "moose",
    "newt", "otter", "owl", "panda", "quail", "raven", "robin", "seal", "shrew", "sparrow",
    "stork", "swan", "tiger", "toad", "trout", "vole", "whale", "wolf", "wren",
)


def random_run_name(max_length: int = 20) -> str:
    for _ in range(10):
        name = (
            f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(1000)}"
        )
        if len(name) <= max_length:
            return name
    return name[:max_length]
