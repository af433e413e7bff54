"""steerlib: RL-trained steering vectors, a reproducible study of arXiv 2509.06608."""

__version__ = "0.1.0"
