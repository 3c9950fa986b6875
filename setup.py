"""tip_jax: text-driven image restoration (TIP) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="tip_jax",
    version="0.1.0",
    description="TIP: text-driven image restoration with a modulated ControlNet on a frozen "
                "latent diffusion model, in JAX/Flax.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tip_jax", "tip_jax.*"]),
    # CLIP's BPE table (MIT), for the tiny config's tokenizer: see third_party/clip_bpe.
    data_files=[("share/tip_jax/clip_bpe", ["third_party/clip_bpe/bpe_simple_vocab_16e6.txt.gz",
                                           "third_party/clip_bpe/LICENSE"])],
    install_requires=[
        "absl-py",
        "array_record>=0.8",
        "clu==0.0.12",  # metric writers, periodic actions
        "etils[epath]",
        "flax>=0.12,<0.13",
        "grain>=0.2.18,<0.3",
        "jax>=0.10,<0.11",
        "ml_collections",
        "ml_dtypes",
        "msgpack",
        "numpy",
        "optax",
        "orbax-checkpoint>=0.12,<0.13",  # also registers Grain's iterator checkpoint args
        "Pillow",
        "safetensors",
        "scikit-image",  # the demo data source: photographs bundled in the package
        "tensorboard",
        "tensorflow-cpu",  # clu.metric_writers imports tensorflow for its summary writer
        "tqdm",
        "transformers>=5",  # the CLIP tokenizer only; there are no Flax models in it
    ],
    extras_require={
        "test": [
            "pytest",
            "torch==2.13.0",   # a CPU wheel of this version is on the build machines' disk
            "diffusers>=0.40",
            "transformers>=5",
            "opencv-python-headless",  # BasicSR's degradation code imports cv2
            "scipy",
            "setuptools",  # builds BasicSR's sdist with --no-build-isolation (see .ci/run)
            "tensorflow-datasets",  # TFDS data sources (the tests also need tensorflow)
        ],
        "tpu": ["jax[tpu]>=0.10,<0.11"],
        "cuda": ["jax[cuda12]>=0.10,<0.11"],
    },
    entry_points={"console_scripts": [
        "tip-train=tip_jax.main:run",
        "tip-models=tip_jax.models.summary:run",
        "tip-degrade=tip_jax.degrade.cli:run",
        "tip-prepare=tip_jax.data.prepare:run",
        "tip-restore=tip_jax.cli.restore:run",
        "tip-walk=tip_jax.cli.walk:run",
    ]},
)
