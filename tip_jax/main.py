"""`python -m tip_jax.main --config configs/tip.py:tiny --workdir DIR`: the same job as
`tip-train` (see `tip_jax.cli.train`), for launchers that start a module."""

from tip_jax.cli.train import run

if __name__ == "__main__":
  run()
