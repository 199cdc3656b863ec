"""A chunked generation in its own process, for ``test_zarr.py``'s kill test: ``python generation_worker.py STORE``.
Prints ``done <chunks written> <of>`` after each chunk (the first line counts the chunks found already written)
and ``computed <n>`` at the end. Not collected by pytest."""

import sys

import jax

jax.config.update("jax_enable_x64", True)

from nemic.core import RK4  # noqa: E402
from nemic.data.zarr_store import generate_ensemble  # noqa: E402
from nemic.models.lorenz96 import Lorenz96, Lorenz96State  # noqa: E402

MODEL = Lorenz96(F=8.0, K=16)
X0 = 8.0 + 0.5 * jax.random.normal(jax.random.key(0), (16, 16))
RUN = dict(dt=0.01, n_steps=200, save_every=10, chunk_members=2)


def main(store: str) -> None:
    seen = []

    def report(done, total):
        seen.append(done)
        print(f"done {done} {total}", flush=True)

    generate_ensemble(store, MODEL, RK4(), Lorenz96State(x=X0), progress=report, **RUN)
    print(f"computed {seen[-1] - seen[0]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
