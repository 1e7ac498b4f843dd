"""Training: stage-1 objectives (mona, emb, orca), the source probe, the resumable Trainer.

Depends on ``mona_tune.tasks`` and ``mona_tune.models``; never on Ray or MLflow.
"""
