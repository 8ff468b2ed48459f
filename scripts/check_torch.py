"""Exit non-zero with one sentence and the fix when the venv's torch is not the one tch needs."""
import sys

want = sys.argv[1]
try:
    import torch
except ImportError:
    sys.exit(f"torch is not installed in .venv; run `make venv` (installs torch=={want}).")
have = torch.__version__.split("+")[0]
if have != want:
    sys.exit(
        f"tch needs torch {want} but .venv has {have}; run "
        f"`.venv/bin/pip install torch=={want}` (or `rm -rf .venv && make venv`)."
    )
