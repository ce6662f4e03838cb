"""golfpack: quantize, pack, entropy-code and account a Parameter Golf artifact.

The base layer of golf: imports neither golfeval nor trainer. Importing this package is
cheap (no torch); submodules import heavy libraries themselves.
"""

__version__ = "0.1.0"
