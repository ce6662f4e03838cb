"""trainer: the reference Parameter Golf QAT trainer (torchrun/DDP). May import golfpack
and golfeval."""

__version__ = "0.1.0"
