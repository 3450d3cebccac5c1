"""SpliCER: Split Component Embedding Registration.

One configurable model (a primary encoder registered to K paired branches) covers the four methods of the
paper (Baseline, Σ-JE, TriDeNT, SpliCER); see :mod:`splicer.methods`.
"""

__version__ = "0.1.0"
