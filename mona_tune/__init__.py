"""mona-tune: hyperparameter search for MoNA two-stage cross-modal fine-tuning."""

__version__ = "0.1.0"
