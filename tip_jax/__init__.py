"""tip_jax: text-driven image restoration (TIP) in JAX/Flax.

Layers, top to bottom; a module imports only from layers below its own (siblings on
one line do not import each other). `.importlinter` states the same contract and
`tests/test_layers.py` fails on any upward import.

    main                      `python -m tip_jax.main` (= tip-train)
    cli                       every console script, flags defined once
    train | eval | demo       the training step and loop (TIP, or pretraining a backbone),
                              sample grids, backbone export | the evaluator job,
                              benchmark sets, scoring folders of images | the web
                              demo's page (gradio) around a restorer
    restore                   pure batched sampling programs + TIPRestorer
    experiment                shared by trainer, evaluator and restorer: config loading,
                              components, tasks, sharding, state, checkpoints, losses, setup
    convert | data            weight files <-> params | the Grain input pipeline
    metrics | estimate        PSNR, SSIM, LPIPS, FID (Inception), CLIP-I/-T: pure,
                              batched; also what pretraining losses reuse (LPIPS) |
                              the degradation estimator: photo -> restoration prompt
    models                    Flax models and the frozen Backbone
    degrade | diffusion       on-device degradations | schedules, samplers, tiling
    image_io | unpickle       image files in and out | weight pickles without code
    errors                    TipError and its kinds

This file imports nothing, so that any layer may read `tip_jax.__version__`.
"""

__version__ = "0.1.0"
