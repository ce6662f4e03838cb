"""Files golf did not write: the challenge baseline's checkpoints and .ptz artifacts, the
records' banked models, and competitors' training scripts (named on the command line)."""
