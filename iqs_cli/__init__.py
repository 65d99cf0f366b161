"""iqs: photo culling with a neural image-quality model and XMP labels."""

__version__ = "0.1.0"
