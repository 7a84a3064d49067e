import os

# tiny models and numpy kernels: one BLAS/torch thread is faster here and keeps runs repeatable
os.environ.setdefault("OMP_NUM_THREADS", "1")
