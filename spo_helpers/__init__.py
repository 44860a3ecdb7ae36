"""SPO reproduction kit: Single-stream Policy Optimization on top of verl.

The math lives in small pure modules (``tracker``, ``sampler``, ``advantages``);
I/O, the verl glue and plotting live beside them. Importing the package is cheap:
nothing heavy (torch, verl, matplotlib) is imported here.
"""

__version__ = "0.1.0"
