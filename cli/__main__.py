"""`python -m cli ...` is `unpaired ...` (handy under torchrun: `torchrun -m cli train ...`)."""

from cli.main import app

app(prog_name="unpaired")
