"""The embedded default model: a tiny text-to-image latent diffusion model trained on procedural shapes.

Submodules:
- ``dataset``: seeded procedural scenes (a coloured shape on a coloured background) and captions.
- ``components``: model configurations and builders for the diffusers/transformers components.
- ``train``: the training script (``python -m tools.default_model.train``).
- ``analyze``: a deterministic numpy analyzer (foreground/background colour, shape class).
- ``evaluate``: the evaluator (``python -m tools.default_model.evaluate``).
"""
