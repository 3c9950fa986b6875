"""tip_jax: text-driven image restoration (TIP) in JAX/Flax.

Layers, top to bottom; a module imports only from layers below its own (siblings on
one line do not import each other). `.importlinter` states the same contract and
`tests/test_layers.py` fails on any upward import.

    main                      `python -m tip_jax.main` (= tip-train)
    cli                       every console script, flags defined once
    train                     the training step and loop, sample grids
    restore                   pure batched sampling programs + TIPRestorer
    experiment                shared by trainer, evaluator and restorer: config loading,
                              components, sharding, state, checkpoints, loss, setup
    convert | data            diffusers folders -> params | the Grain input pipeline
    models                    Flax models and the frozen Backbone
    degrade | diffusion       on-device degradations | schedules, samplers, tiling
    image_io                  image files in and out
    errors                    TipError and its kinds

This file imports nothing, so that any layer may read `tip_jax.__version__`.
"""

__version__ = "0.1.0"
