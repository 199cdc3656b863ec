"""Recipe ``nemic atmos train --dagger``: the column network retrained on the states its own free runs visit.

A network fitted offline to the states SPEEDY visits is asked, in a free run of the hybrid, about states SPEEDY
never visits: its small errors move the run off the truth's attractor, where nothing it learned applies, and the
long runs drift. Data aggregation (DAgger; Ross, Gordon & Bagnell 2011, AISTATS, arXiv:1011.0686) closes that
gap with the truth model as the teacher. Each round:

1. a free run of the hybrid with the current network (:func:`~nemic.experiments.atmos_climate_run.run_climate`,
   physics coupled once per step as in jcm, instantaneous states every ``snapshot_days``);
2. SPEEDY's physics on those states (:func:`~nemic.experiments.atmos_perturbed.generate_perturbed` with zero
   amplitudes): what the true physics does where the hybrid goes, typically a strong restoring tendency;
3. offline training on the truth's columns plus every store gathered so far (and the stores named in
   ``perturbed``, e.g. perturbed truth states), each weighed by its own spread
   (:func:`~nemic.experiments.atmos_offline.train_offline`).

The network of the last round is the result: ``OUT/column_net.eqx``; every round's run, labelled states and
training stay under ``OUT/round<k>/`` and ``metrics.json`` lists them. A run that blows up still gives the states
saved before the blow-up (that is where the teacher is needed most); a round whose run saved no state stops the
recipe with a one-line error, before its training.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nemic.core.errors import BlowUpError, ConfigError
from nemic.data.atmosphere.perturbed import PerturbationConfig
from nemic.experiments.atmos_climate_run import COUPLINGS, ClimateRunConfig, run_climate
from nemic.experiments.atmos_offline import OfflineConfig, quick_offline_config, train_offline
from nemic.experiments.atmos_perturbed import generate_perturbed
from nemic.experiments.config import staged_run
from nemic.io.files import write_json
from nemic.io.runs import staging_dir

__all__ = ["DaggerConfig", "quick_dagger_config", "run_dagger"]


@dataclasses.dataclass(frozen=True)
class DaggerConfig(OfflineConfig):
    """Settings of the DAgger rounds; the offline-training settings of :class:`OfflineConfig` apply to every round
    (``perturbed_columns`` columns are drawn from each store: those named in ``perturbed`` and each round's).

    Attributes:
        rounds: number of run / label / retrain rounds.
        run_days: length of each round's free run [days]. snapshot_days: interval of its saved states [days].
        coupling, physics_every: how the runs couple the column physics (see ``ClimateRunConfig``).
        dt: time step of the runs [s].
    """

    perturbed_columns: int = 60_000
    rounds: int = 1
    run_days: float = 720.0
    snapshot_days: float = 2.0
    coupling: str = "split"
    physics_every: int = 1
    dt: float = 1800.0

    def __post_init__(self):
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.coupling not in COUPLINGS:
            raise ConfigError(f"coupling must be one of {', '.join(COUPLINGS)}, got {self.coupling!r}")
        if not (np.isfinite(self.run_days) and self.run_days >= self.snapshot_days > 0):
            raise ConfigError(f"need run_days >= snapshot_days > 0, got {self.run_days!r} and {self.snapshot_days!r}")
        if self.perturbed_columns < 1:
            raise ConfigError("perturbed_columns (columns drawn from each store) must be >= 1 for DAgger")
        # the training and run settings are checked now, not after the first round's run
        self.offline(self.perturbed_dirs + ["round1"])
        self.run_config("init.eqx")

    def run_config(self, weights: str) -> ClimateRunConfig:
        """The free run of a round with the network ``weights``."""
        return ClimateRunConfig(days=self.run_days, dt=self.dt, mean_days=min(30.0, self.run_days),
                                weights=weights, coupling=self.coupling, physics_every=self.physics_every,
                                snapshot_days=self.snapshot_days, flush_chunks=0)

    def offline(self, stores: list[str]) -> OfflineConfig:
        """The offline-training settings of a round that draws from ``stores``."""
        own = {f.name for f in dataclasses.fields(OfflineConfig)}
        kw = {k: v for k, v in dataclasses.asdict(self).items() if k in own}
        return OfflineConfig(**{**kw, "perturbed": ",".join(stores)})


def quick_dagger_config() -> DaggerConfig:
    """One round of a 2-day run (states every 12 h) and a tiny training: a smoke test, not a network."""
    q = dataclasses.asdict(quick_offline_config())
    return DaggerConfig(**{**q, "perturbed_columns": 2048}, rounds=1, run_days=2.0, snapshot_days=0.5)


def run_dagger(cfg: DaggerConfig, truth: str | Path, init: str | Path, out: str | Path, *, progress: bool = True,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run ``cfg.rounds`` DAgger rounds from the network ``init``; write ``out`` (module docs)."""
    t0 = time.perf_counter()
    truth, init = Path(truth), Path(init)
    if not truth.is_dir():
        raise ConfigError(f"truth directory '{truth}' does not exist (create it with 'nemic atmos generate')")
    if not init.exists():
        raise ConfigError(f"initial network '{init}' does not exist (train one with 'nemic atmos train --offline')")
    settings = {**dataclasses.asdict(cfg), "truth": str(truth.resolve()), "init": str(init.resolve())}
    zero = PerturbationConfig(t_amplitude=0.0, q_amplitude=0.0, wind_amplitude=0.0)
    stores = [str(Path(d).resolve()) for d in cfg.perturbed_dirs]
    given = list(stores)  # as recorded: the rounds' stores relative to ``out`` (they are staged while running)
    rounds = []
    with staged_run(out, "atmos train --dagger", settings) as stage:
        net = init.resolve()
        for r in range(1, cfg.rounds + 1):
            here = stage / f"round{r}"
            log(f"round {r}: {cfg.run_days:g}-day free run with {net.name} ({cfg.coupling} coupling)")
            blowup = None
            try:
                run = run_climate(cfg.run_config(str(net)), here / "run")
            except BlowUpError as e:
                blowup = str(e)
                run = None
            states = here / "run" / "states.nc"
            if blowup is not None:  # the states before the blow-up are in the run's staging directory
                states = staging_dir(here / "run") / "states.nc"
            if not states.exists():
                raise ConfigError(f"round {r}: the free run saved no state before it stopped ({blowup}); lower "
                                  "snapshot_days or start from a more stable network")
            log(f"round {r}: SPEEDY's physics on the run's states")
            lab = generate_perturbed(zero, truth, here / "states", states=states, progress=progress,
                                     log=lambda s: None)
            stores.append(str((here / "states").resolve()))
            given.append(f"round{r}/states")
            log(f"round {r}: offline training on the truth and {len(stores)} store(s)")
            m = train_offline(cfg.offline(stores), truth, here / "offline", progress=progress, log=log)
            net = (here / "offline" / "column_net.eqx").resolve()
            rounds.append({"round": r, "run_days": None if run is None else run["days"], "blowup": blowup,
                           "run_seconds_per_day": None if run is None else run["seconds_per_simulated_day"],
                           "states": lab["states"], "stores": list(given), "test_loss": m["test_loss"],
                           "r2_mean": m["r2_mean"]})
        shutil.copy2(net, stage / "column_net.eqx")
        metrics = {"config": settings, "rounds": rounds, "wall_seconds": time.perf_counter() - t0}
        write_json(metrics, stage / "metrics.json")
    log(f"{cfg.rounds} DAgger round(s); the last network: {Path(out) / 'column_net.eqx'}")
    return metrics
