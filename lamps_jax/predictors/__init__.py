"""A learned output-length predictor on the serving model's own hidden states.

The runner returns the final-norm hidden state a segment starts from (the prompt's last token, the last
token before each API call); a small flax head (``head.py``) maps it to the segment's predicted length
(50 bins of 10 tokens, or a log-length regression). ``collect.py`` records (hidden state, length) pairs
from the serving model, ``train.py`` fits the head with optax, ``checkpoint.py`` saves it with orbax
beside the identity of the model it was trained for, and ``serving.py`` runs it in the engine and posts
its predictions to the scheduler's ``PostedLengthPredictor`` (the scheduler itself stays JAX-free).
"""
