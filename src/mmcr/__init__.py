"""mmcr: Maximum Manifold Capacity Representations (Yerxa et al., NeurIPS 2023).

Library pieces stand alone: take the objectives, the augmentation or the geometry into your own
code without the trainer.
"""

__version__ = "0.1.0"
