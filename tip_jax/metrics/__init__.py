"""The paper's image metrics as pure, batched, jittable functions and Flax networks.

Images enter as float arrays in [0, 1], NHWC; each metric converts to its reference
convention itself (PSNR/SSIM on [0, 255], LPIPS on [-1, 1], Inception and CLIP with
their own resizing and normalisation) and says so in its docstring.
"""
