"""Training data: record sources, the Grain input pipeline and `tip-prepare`.

    sources.py   record sources by spec: "demo", "arrayrecord:GLOB", "tfds:NAME:SPLIT[:DIR]"
    pipeline.py  DataConfig, make_iterator (Grain), degrade_params
    images.py    decoding and cropping that survive bad files
    prepare.py   the tip-prepare CLI; inputs.py what it reads
    demo.py      scikit-image's bundled photographs with the project's captions

Nothing is imported here, so `tip-prepare` starts without loading Grain or JAX.
"""
