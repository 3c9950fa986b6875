"""Launchers for TPU pods, kept outside the `tip_jax` package (as big_vision keeps its
own): they import only its config loading and CLI conventions, never JAX, so they run
from any machine with the checkout, absl and ml_collections (and xmanager to launch
with it). Run them from the checkout's root:

    python -m launch.tpu_vm    --help   the trainer on every worker of a TPU VM (gcloud)
    python -m launch.xm_launch --help   the same jobs as one xmanager experiment

    topology.py   TPU slice names -> chips, hosts, shape, gcloud's accelerator type
    plan.py       the jobs of a launch as commands; what --dry_run prints
    common.py     the flags both share, the checks and setup run before the jobs
"""
