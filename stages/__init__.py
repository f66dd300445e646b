"""The pipeline's stages: one module per DVC stage, plus shared components in ``stages.lib``."""
