import os

# Several test processes share two cores: one intra-op thread each keeps them from thrashing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
