"""Exact scoring: window plans (windows), the float64 scorer (core), rank set-up
(distributed), the model/tokenizer loader shared by score and audit (modelio), and the
whole evaluation behind `golfeval score` (evaluate).

`from golfeval.score import score_tokens` works without importing torch until it is used.
"""

_LAZY = {"score_tokens": "core", "score_windows": "core", "ScoreResult": "core",
         "make_plan": "core"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"golfeval.score.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'golfeval.score' has no attribute {name!r}")
