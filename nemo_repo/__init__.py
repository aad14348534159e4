"""nemo-repo: RE-PO (Robust Enhanced Policy Optimization) preference alignment on Megatron-Core."""

__version__ = "0.1.0"
