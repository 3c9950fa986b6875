"""The degradation estimator: reads a photo, writes the restoration prompt TIP understands.

    network.py       the conv encoder (`DegradationEstimator`) and its shape (`NetworkConfig`)
    heads.py         what its outputs mean; training targets from `DegradeParams`
    jpeg_quality.py  a JPEG file's IJG quality, exactly, from its quantisation tables
    estimator.py     `Estimator` (crops, thresholds -> `Estimate` -> prompt), `load`/`save`

Training is a task of the shared trainer (`config.task` estimator, configs/estimator.py;
its loss is `tip_jax.experiment.estimator`).
"""

from tip_jax.estimate.estimator import DEFAULT_PATH, Estimate, Estimator, load

__all__ = ["DEFAULT_PATH", "Estimate", "Estimator", "load"]
