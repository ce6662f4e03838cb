"""golfeval: exact bits-per-byte scoring, test-time training, causality audits,
training-log parsing, claim verification and significance tests.

May import golfpack, never trainer. Importing this package does not import torch.
"""

__version__ = "0.1.0"
