"""xlgen: generative extreme multi-label text classification with active learning."""

__version__ = "0.1.0"
