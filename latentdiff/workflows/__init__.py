"""Workflows that start from an image or go past the first image, all on `sampling.denoise`:
img2img and inpainting (a start step and a per-step blend or mask channels), outpainting (a grown
canvas and its mask), hires fix (a second, img2img pass). The upscaler cascade is `upscale.py`."""
