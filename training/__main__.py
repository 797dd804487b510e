"""`torchrun --nproc-per-node N -m training [train options]`: DDP training entry point.

The same as `unpaired train ...`; each process torchrun starts joins the process group.
"""

import sys

from cli.main import app

app(args=["train", *sys.argv[1:]], prog_name="python -m training")
