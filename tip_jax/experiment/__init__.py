"""What the trainer, the evaluator and the restorer share.

    config.py       load_config("configs/tip.py:tiny", overrides)
    components.py   the models and frozen backbone a config describes
    sharding.py     meshes, logical-axis rules, placing arrays on a mesh
    distributed.py  multi-process start-up; processes agreeing on a flag
    state.py        TrainState, the optimizer, state shardings
    checkpoint.py   per-role checkpoint items, inference loading, the new-checkpoint iterator
    checkpoint_files.py  what is wrong with a checkpoint's files, in one line
    loss.py         device_batch and loss_fn (pure)
    pretrain.py     the backbone's own losses (VAE, text-to-image UNet), for pretraining it
    tasks.py        what config.task trains (tip | vae | unet): module, init, frozen, loss
    setup.py        setup(config, workdir) -> Experiment
"""
