"""The ``carpool`` command line: thin wrappers that parse, call the library and print.

Errors in the user's input (:class:`carpool.errors.InputError`, a missing or unreadable
file) exit with status 2 and one line on stderr, never a traceback. Any other exception out
of the library is an internal error (a bug in carpool): one line naming a log file that
holds the traceback, exit status 1.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carpool.verdicts import RHAT_MAX, rhat_ok

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Pooled, unpooled and hierarchical Bayesian calibration of "
                       "car-following models (and other grouped data).")
console = Console()

#: The comparison file `carpool compare --out` writes beside the fits.
COMPARISON_FILE = "comparison.json"
err = Console(stderr=True)

EXIT_INPUT = 2
EXIT_INTERNAL = 1  # an internal error: a bug in carpool, never the user's input

PriorsOption = Annotated[str, typer.Option(
    help="Prior preset: default | treiber-kesting-2013 | zhang-sun-2023")]
SpeedLimitOption = Annotated[float | None, typer.Option(
    help="Speed limit, m/s: centres the prior of the desired speed v0 there")]
LikelihoodOption = Annotated[str, typer.Option(
    help="What each step scores: speed (the next speed) | joint (next speed and gap; "
         "i.i.d. residuals)")]
ResidualOption = Annotated[str, typer.Option(
    help="Residual process within each driver's series: iid | ar1 .. ar8 | gp")]
ArPoolingOption = Annotated[str, typer.Option(
    help="Who shares the AR coefficients: shared | class (needs --level) | driver")]
GpWindowOption = Annotated[float, typer.Option(
    help="GP residual: seconds of the past each step is conditioned on (sliding) or the "
         "window length (window)")]
GpMethodOption = Annotated[str, typer.Option(
    help="GP residual likelihood: sliding (nearest-neighbour, default) | window (reference)")]


def _use_all_cores(chains: int) -> None:
    """Give JAX one CPU device per chain (before JAX starts) so chains run in parallel."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        n = max(chains, os.cpu_count() or 1)
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


class _UserError(Exception):
    pass


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INPUT)


#: OSErrors about the user's paths (a missing input, an --out in an unwritable place): the
#: user's to fix, so one line and exit status 2 like any input error.
_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                FileExistsError)
_PATH_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG})


def _is_input_error(exc: BaseException, reading: bool) -> bool:
    """Whether ``exc`` is the user's to fix rather than a bug in carpool.

    :class:`~carpool.errors.InputError` (``DataError`` and ``FitFileError`` included), the
    CLI's own errors and OSErrors about the user's paths are; so is any OSError raised while
    ``reading`` the user's input file (a truncated or unreadable file). A plain
    ``ValueError``, ``KeyError``, ``TypeError``, ... is an internal error.
    """
    from carpool.errors import InputError

    if isinstance(exc, (InputError, _UserError)):
        return True
    if isinstance(exc, OSError):
        return reading or isinstance(exc, _PATH_ERRORS) or exc.errno in _PATH_ERRNOS
    return False


def _first_line(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return str(msg).splitlines()[0] if str(msg).strip() else type(exc).__name__


def _write_error_log(exc: BaseException) -> Path | None:
    """Write ``exc``'s traceback (and what ran) to a new file in the temporary folder.

    ``mkstemp`` reserves a unique name (so a failure never overwrites another run's log)
    and the text is written atomically onto it. ``None`` when nothing could be written.
    """
    from carpool import __version__
    from carpool.io import atomic_write_text

    text = "".join([
        f"carpool {__version__}, Python {platform.python_version()}, {platform.platform()}\n",
        f"command: {' '.join(sys.argv)}\n\n",
        *traceback.format_exception(type(exc), exc, exc.__traceback__),
    ])
    name = None
    try:
        fd, name = tempfile.mkstemp(prefix="carpool-error-", suffix=".log",
                                    dir=tempfile.gettempdir())
        os.close(fd)
        return atomic_write_text(name, text)
    except OSError:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
        return None


def _internal_error(exc: BaseException) -> typer.Exit:
    """One line on stderr naming the log with the traceback; exit status 1."""
    log = _write_error_log(exc)
    where = (f"in {log}" if log is not None else "below (no log file could be written)")
    err.print(f"[bold red]internal error[/] (a bug in carpool; please report it with the "
              f"traceback {escape(where)}): {escape(type(exc).__name__)}: "
              f"{escape(_first_line(exc))}", highlight=False, soft_wrap=True)
    if log is None:
        err.print(escape("".join(traceback.format_exception(type(exc), exc,
                                                            exc.__traceback__))),
                  highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_INTERNAL)


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          reading: bool) -> Any:
    import click

    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException,
            click.Abort):
        raise  # the command line's own exits
    except Exception as exc:  # noqa: BLE001 - sorted into input and internal errors
        if _is_input_error(exc, reading):
            raise _fail(_first_line(exc)) from None
        raise _internal_error(exc) from None


def _run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call library code: an input error becomes one clear line and exit status 2, any
    other exception an internal error (one line, the traceback in a log file, status 1)."""
    return _call(fn, args, kwargs, reading=False)


def _run_reading(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """:func:`_run` for a call that reads the user's input file: an OSError while reading
    it (a truncated or unreadable file) is the user's input error too."""
    return _call(fn, args, kwargs, reading=True)


#: Set by :func:`main` (a real ``carpool`` process, not a test runner): after an
#: interruption the process ends with ``os._exit``, because an interrupt that unwound out of
#: running JAX code can leave XLA threads that crash the interpreter's shutdown (a
#: segmentation fault was measured in 3 of 8 signalled fits).
_HARD_EXIT = {"on": False}


@contextlib.contextmanager
def _interrupt_exits(out: Path) -> Iterator[Callable[[], None]]:
    """Ctrl-C (SIGINT) or SIGTERM: one error line, exit 128 + signal number.

    Both signals raise the KeyboardInterrupt of Ctrl-C for the duration, so both unwind the
    same way: an atomic write in progress deletes its temporary file and ``out`` keeps its
    old content, or stays absent. (Python runs signal handlers between bytecodes: a signal
    that arrives while compiled JAX code samples takes effect when that call returns.) An
    interruption Python drops because it was raised in a finaliser or a garbage-collector
    callback is sent again 50 ms later (see :func:`_resend_dropped_interrupts`).

    Yields ``check``: call it before writing ``out``; it raises the interruption if a
    signal was recorded but its exception lost (e.g. in an object's finaliser).
    """
    received: dict[str, signal.Signals | None] = {"signal": None}

    def on_signal(signum: int, frame: Any) -> None:
        received["signal"] = signal.Signals(signum)
        _signal_as_interrupt(signum, frame)

    def check() -> None:
        if received["signal"] is not None:
            _RECEIVED["dropped"] = False  # this raise replaces the pending resend
            raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = ({s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
                if in_main else {})
    try:
        with _resend_dropped_interrupts():
            yield check
    except KeyboardInterrupt:
        sig = received["signal"] or signal.SIGINT
        state = "kept as it was" if out.exists() else "not written"
        err.print(f"[bold red]error:[/] interrupted by {sig.name} before the fit was saved; "
                  f"{escape(str(out))} {state}", highlight=False, soft_wrap=True)
        if _HARD_EXIT["on"]:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + int(sig))
        raise typer.Exit(128 + int(sig)) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _model_options(priors: str, residual: str, ar_pooling: str,
                   gp_window_s: float, gp_method: str = "sliding",
                   speed_limit: float | None = None, likelihood: str = "speed"
                   ) -> dict[str, Any]:
    """The car-following spec options, residual choices checked before any data is read."""
    from carpool.residuals import AR_POOLING, GP_METHODS, parse_residual

    if ar_pooling not in AR_POOLING:
        raise _fail(f"unknown ar_pooling {ar_pooling!r}; choose one of {list(AR_POOLING)}")
    if gp_method not in GP_METHODS:
        raise _fail(f"unknown gp_method {gp_method!r}; choose one of {list(GP_METHODS)}")
    if not gp_window_s > 0:  # also NaN
        raise _fail(f"gp_window_s must be positive seconds, got {gp_window_s:g}")
    process = _run(parse_residual, residual, ar_pooling=ar_pooling, gp_window_s=gp_window_s,
                   gp_method=gp_method)
    if speed_limit is not None and not speed_limit > 0:
        raise _fail(f"--speed-limit must be a positive speed in m/s, got {speed_limit:g}")
    from carpool.models.carfollowing import LIKELIHOODS

    if likelihood not in LIKELIHOODS:
        raise _fail(f"unknown --likelihood {likelihood!r}; choose one of {list(LIKELIHOODS)}")
    if likelihood == "joint" and process.is_dynamic:
        raise _fail(f"--likelihood joint is defined with i.i.d. residuals; got --residual "
                    f"{process.name}")
    options = {"priors": priors, "residual": process.name, "ar_pooling": ar_pooling,
               "gp_window_s": gp_window_s, "gp_method": gp_method}
    if speed_limit is not None:
        options["speed_limit"] = speed_limit
    if likelihood != "speed":
        options["likelihood"] = likelihood
    return options


def _print_warnings(caught: list[warnings.WarningMessage]) -> None:
    from carpool.inference.diagnostics import ConvergenceWarning, WeakIdentificationWarning
    from carpool.inference.plausibility import PlausibilityWarning

    for w in caught:
        if issubclass(w.category, (ConvergenceWarning, WeakIdentificationWarning,
                                   PlausibilityWarning)):
            err.print(f"[bold yellow]warning:[/] {escape(str(w.message))}", highlight=False,
                      soft_wrap=True)


def _population_table(fit: Any) -> Table:
    s = fit.summary()
    hdi = [c for c in s.columns if c.startswith("hdi_")]
    residual = fit.spec.residual
    title = f"{fit.spec.name} - {fit.pooling}"
    if residual.is_dynamic:
        title += f" - residual {residual.label}"
    table = Table(title=title)
    for col in ["kind", "group", "parameter", "unit", "mean", "sd", *hdi, "r_hat"]:
        table.add_column(col, justify="right" if col not in ("kind", "group", "parameter")
                         else "left")
    if len(s) > 40:  # per-driver rows (parameters, AR coefficients) only for small fits
        per_driver = s.kind == "group"
        if residual.per_group:
            per_driver |= (s.kind == "residual") & s.group.notna()
        shown = s[~per_driver]
    else:
        shown = s
    for _, r in shown.iterrows():
        table.add_row(str(r["kind"]), "" if r["group"] is None or r["group"] != r["group"]
                      else escape(str(r["group"])), escape(str(r["parameter"])),
                      escape(str(r["unit"])),
                      *(f"{r[c]:.4g}" for c in ["mean", "sd", *hdi, "r_hat"]))
    return table


FormulaOption = Annotated[str | None, typer.Option(
    help="A regression formula instead of a car-following model, e.g. "
         "'y ~ x + (1 + x | group)' (DATA is then any CSV / Parquet table)")]
FamilyOption = Annotated[str, typer.Option(
    help="Formula family: gaussian | student_t | bernoulli | binomial | poisson | "
         "negative_binomial")]
PriorOption = Annotated[list[str] | None, typer.Option(
    "--prior", help="Formula prior override TERM=PRIOR, e.g. 'x=Normal(0, 1)', "
                    "'x|g=HalfNormal(0.5)', 'sigma=Exponential(1)' (repeatable)")]
KnownSigmaOption = Annotated[str | None, typer.Option(
    help="Formula, gaussian: column of known standard errors (eight schools)")]


def _parse_prior(text: str) -> Any:
    """``"Normal(0, 5)"`` -> the :mod:`carpool.priors` prior."""
    import re

    from carpool import priors
    from carpool.errors import InputError

    m = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", text)
    names = [n for n in priors.__all__ if n != "Prior"]
    if m is None or m.group(1) not in names:
        raise InputError(f"prior {text!r}: write Family(numbers), Family one of {names}")
    try:
        args = [float(a) for a in m.group(2).split(",") if a.strip()]
    except ValueError:
        raise InputError(f"prior {text!r}: its arguments must be numbers") from None
    try:
        return getattr(priors, m.group(1))(*args)
    except TypeError:
        raise InputError(f"prior {text!r}: wrong number of arguments") from None


def _formula_priors(items: list[str] | None) -> dict[str, Any] | None:
    """``["x=Normal(0, 1)", ...]`` -> ``{"x": Normal(0, 1), ...}``."""
    from carpool.errors import InputError

    if not items:
        return None
    out = {}
    for item in items:
        term, sep, prior = item.partition("=")
        if not sep or not term.strip():
            raise InputError(f"--prior {item!r}: write TERM=PRIOR, e.g. 'x=Normal(0, 1)'")
        out[term.strip()] = _parse_prior(prior)
    return out


def _read_table(path: Path) -> Any:
    """A CSV or Parquet table for a formula, with a one-line error."""
    import pandas as pd

    from carpool.errors import InputError

    def read() -> Any:
        if not path.exists():
            raise InputError(f"no such file: {path}")
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path)

    with err.status(f"reading {path}"):
        table = _run_reading(read)
    err.print(f"{len(table)} rows, columns {', '.join(map(str, table.columns))} from "
              f"{escape(str(path))}")
    return table


@app.command()
def priors(
    formula: Annotated[str, typer.Argument(help="The formula, e.g. 'y ~ x + (x | g)'")],
    data: Annotated[Path, typer.Argument(help="The table (CSV / Parquet)")],
    family: FamilyOption = "gaussian",
    prior: PriorOption = None,
    known_sigma: KnownSigmaOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
    = False,
) -> None:
    """Print the priors a formula fit would use on DATA (scaled to the data; override any
    with --prior TERM=PRIOR)."""
    from carpool.models.formula import formula_priors

    table = _read_table(data)
    frame = _run(formula_priors, table, formula, family=family,
                 priors=_run(_formula_priors, prior), known_sigma=known_sigma)
    if as_json:
        print(json.dumps(frame.to_dict(orient="records"), indent=2))
        return
    out = Table(title=f"priors of {escape(formula)} ({family})")
    for col in frame.columns:
        out.add_column(col)
    for row in frame.itertuples(index=False):
        out.add_row(*(escape(str(v)) for v in row))
    console.print(out)


@app.command()
def fit(
    data: Annotated[Path, typer.Argument(help="Trajectory file (CSV / Parquet / highD / "
                                              "NGSIM / OpenACC / USDOT), or with --formula "
                                              "any table (CSV / Parquet)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the fit (.nc)")],
    model: Annotated[str, typer.Option(help="Car-following model: idm, gipps, ovm, fvdm, "
                                            "linear_acc")] = "idm",
    pooling: Annotated[str, typer.Option(help="pooled | unpooled | hierarchical")]
    = "hierarchical",
    level: Annotated[str | None, typer.Option(help="Column of a level above drivers "
                                                   "(e.g. class)")] = None,
    priors: PriorsOption = "default",
    residual: ResidualOption = "iid",
    ar_pooling: ArPoolingOption = "shared",
    gp_window_s: GpWindowOption = 10.0,
    gp_method: GpMethodOption = "sliding",
    speed_limit: SpeedLimitOption = None,
    likelihood: LikelihoodOption = "speed",
    draws: Annotated[int, typer.Option(help="Draws per chain")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains (>= 4 recommended)")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    target_accept: Annotated[float | None, typer.Option(
        help="NUTS target acceptance (default 0.95 hierarchical, 0.8 otherwise)")] = None,
    param: Annotated[str, typer.Option(help="centred | noncentred | auto")] = "auto",
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show the sampler's progress bar")] = True,
    method: Annotated[str, typer.Option(
        help="nuts (MCMC, default) | svi (variational: approximate, for many drivers)")]
    = "nuts",
    steps: Annotated[int | None, typer.Option(help="SVI: optimisation steps")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="SVI: Adam's step size")]
    = None,
    batch_size: Annotated[int | None, typer.Option(
        help="SVI: drivers per minibatch (default all)")] = None,
    guide: Annotated[str | None, typer.Option(help="SVI: structured | meanfield")] = None,
    formula: FormulaOption = None,
    family: FamilyOption = "gaussian",
    prior: PriorOption = None,
    known_sigma: KnownSigmaOption = None,
) -> None:
    """Calibrate a car-following model per driver (or fit a regression --formula) and save
    the posterior as netCDF."""
    _use_all_cores(chains)
    import carpool

    if out.suffix != ".nc":
        raise _fail(f"--out must end in .nc (netCDF), got {out}")
    if out.parent.exists() and not out.parent.is_dir():
        raise _fail(f"--out folder {out.parent} is a file, not a folder")
    if out.is_dir():
        raise _fail(f"--out {out} is a folder; give a file name ending in .nc")
    sampler = _run(_sampler, method, chains=chains, warmup=warmup, draws=draws, seed=seed,
                   target_accept=target_accept, steps=steps, learning_rate=learning_rate,
                   batch_size=batch_size, guide=guide)
    config = _run(carpool.PoolingConfig, pooling=pooling, param=param)
    formula_args: dict[str, Any] = {}
    if formula is not None:
        table = _read_table(data)
        model = formula
        model_options = {"known_sigma": known_sigma} if known_sigma else {}
        formula_args = {"family": family, "priors": _run(_formula_priors, prior)}
    else:
        model_options = _model_options(priors, residual, ar_pooling, gp_window_s, gp_method,
                                       speed_limit, likelihood)
        with console.status(f"reading {data}"):
            table = _run_reading(carpool.read_trajectories, data, format=data_format)
        console.print(f"{table['driver'].nunique()} drivers, {len(table)} rows from {data}")
    with _interrupt_exits(out) as check_interrupted:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = _run(carpool.fit, table, model, pooling=config, level=level,
                          sampler=sampler, model_options=model_options,
                          progress_bar=progress, **formula_args)
        from carpool.inference.nuts import InterruptedWarning

        if not any(issubclass(w.category, InterruptedWarning) for w in caught):
            check_interrupted()  # (a partial fit of the finished chains is saved instead)
        _run(result.save, out)
    console.print(_population_table(result))
    t = result.timing
    work = (f"optimisation {t['optimise_s']:.1f} s ({t['step_ms']:.1f} ms/step)"
            if result.is_approximate else f"sampling {t['sampling_s']:.1f} s")
    console.print(f"centring {t.get('centring_s', 0):.1f} s, compile {t['compile_s']:.1f} s, "
                  f"{work}; parameterisation {result.centring.choice}; saved {out}")
    if result.is_approximate:
        console.print(f"{result.diagnostics['note']} (method {result.method})")
    _print_warnings(caught)


@app.command()
def summary(
    fit_path: Annotated[Path, typer.Argument(help="A fit written by `carpool fit` (.nc)")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
    = False,
) -> None:
    """Summarise a saved fit: population, per-driver and noise parameters, diagnostics."""
    import carpool
    from carpool.inference.summary import summary_dict

    result = _run_reading(carpool.load, fit_path)
    if as_json:
        sys.stdout.write(json.dumps(summary_dict(result), indent=2) + "\n")
        return
    console.print(_population_table(result))
    d = result.diagnostics
    if d.get("approximate"):
        console.print(f"{d['note']} (method {d['method']}, final loss "
                      f"{d.get('final_loss', float('nan')):.6g})")
        return
    console.print(f"max R-hat {d['max_rhat']:.4f}, min bulk ESS {d['min_ess_bulk']:.0f}, "
                  f"divergences {d['divergences']}")
    from carpool.inference.plausibility import implausible_message

    message = implausible_message(result)
    if message is not None:
        console.print(escape(message), soft_wrap=True)


def _sampler(method: str = "nuts", *, chains: int, warmup: int, draws: int, seed: int,
             target_accept: float | None = None, steps: int | None = None,
             learning_rate: float | None = None, batch_size: int | None = None,
             guide: str | None = None) -> Any:
    """The sampler settings the options ask for: NUTS, or SVI with ``--method svi``."""
    from carpool.errors import InputError
    from carpool.inference.nuts import NutsSettings

    svi = {k: v for k, v in {"num_steps": steps, "learning_rate": learning_rate,
                             "batch_size": batch_size, "guide": guide}.items()
           if v is not None}
    if method == "svi":
        from carpool.inference.svi import SviSettings

        return SviSettings(draws=draws, seed=seed, **svi)
    if method != "nuts":
        raise InputError(f"unknown method {method!r}; choose nuts or svi")
    if svi:
        given = {"num_steps": "--steps", "learning_rate": "--learning-rate",
                 "batch_size": "--batch-size", "guide": "--guide"}
        raise InputError(f"{', '.join(given[k] for k in svi)} apply to --method svi only")
    return NutsSettings(chains=chains, warmup=warmup, draws=draws, seed=seed,
                        target_accept=target_accept)


def _job_options(model: str, model_options: dict[str, Any], level: str | None, chains: int,
                 warmup: int, draws: int, seed: int, *, family: str | None = None,
                 priors: dict[str, Any] | None = None) -> Any:
    from carpool.pipeline import FitOptions

    sampler = _run(_sampler, chains=chains, warmup=warmup, draws=draws, seed=seed)
    return FitOptions(model=model, sampler=sampler, level=level, model_options=model_options,
                      family=family, priors=priors)


def _formula_job(formula: str, family: str, prior: list[str] | None,
                 known_sigma: str | None, level: str | None, chains: int, warmup: int,
                 draws: int, seed: int) -> Any:
    """The job options of a ``--formula`` run of compare / sweep / report (the three
    modes of the formula; family, priors and known standard errors as for `carpool fit`)."""
    model_options = {"known_sigma": known_sigma} if known_sigma else {}
    return _job_options(formula, model_options, level, chains, warmup, draws, seed,
                        family=family, priors=_run(_formula_priors, prior))


def _read(path: Path, data_format: str) -> Any:
    import carpool

    with err.status(f"reading {path}"):
        table = _run_reading(carpool.read_trajectories, path, format=data_format)
    err.print(f"{table['driver'].nunique()} drivers, {len(table)} rows from {escape(str(path))}")
    return table


def _comparison_table(comparison: Any, words: Any = None) -> Table:
    """The comparison in 80 columns: elpd rounded to whole nats, RMSE to 3 decimals.
    ``words``: the fits' :class:`carpool.compare.words.Words` (a formula's name the
    response and its groups; ``None``: car-following's)."""
    frame = comparison.table.sort_values("rank")
    formula = words is not None and words.formula
    what = (f"rmse of {words.response}" if formula else
            "rmse of y, for car-following the next speed in m/s")
    table = Table(title=f"pooling modes compared (elpd: higher is better; {what})")
    for head in ("mode", "elpd_loo", "lfo elpd", "lfo rmse", "ldo elpd", "ldo rmse"):
        table.add_column(head, justify="left" if head == "mode" else "right")

    def num(value: float, fmt: str) -> str:
        return "-" if value != value else format(value, fmt)

    for mode, r in frame.iterrows():
        style = "bold green" if mode == comparison.recommendation["mode"] else None
        table.add_row(str(mode), f"{r['elpd_loo']:.0f}\u00b1{r['se']:.0f}",
                      num(r["lfo_elpd"], ".0f"), num(r["lfo_rmse_speed"], ".3f"),
                      num(r["ldo_elpd"], ".0f"), num(r["ldo_rmse_speed"], ".3f"),
                      style=style)
    held = (f"lfo ({words.lfo}): {words.lfo_said()} held out; ldo: {words.groups} held out "
            f"('-' for unpooled: no population to predict a new {words.group} from)"
            if formula else "lfo: last 20% of each series held out; ldo: groups held out ('-' "
            "for unpooled: no population to predict a new group from)")
    table.caption = (f"{held}; max Pareto k "
                     + ", ".join(f"{m} {k:.2f}" for m, k in frame["max_pareto_k"].items()))
    return table


def _parse_grid(grid: str | None) -> tuple[float, ...] | None:
    if grid is None:
        return None
    try:
        values = tuple(float(v) for v in grid.split(",") if v.strip())
    except ValueError:
        raise _fail(f"--grid must be comma-separated numbers, got {grid!r}") from None
    if not values or min(values) <= 0:
        raise _fail(f"--grid values must be positive, got {grid!r}")
    return values


@app.command()
def compare(
    inputs: Annotated[list[Path], typer.Argument(
        help="One trajectory file (the three modes are fitted), or saved fits (.nc)")],
    model: Annotated[str, typer.Option(help="Car-following model")] = "idm",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
    = False,
    lfo: Annotated[bool, typer.Option(help="Leave-future-out: refit on the first 80% of "
                                           "each series, score the rest")] = True,
    ldo: Annotated[bool, typer.Option(help="Leave-drivers-out: refit without folds of "
                                           "drivers, predict them as new drivers")] = True,
    folds: Annotated[int, typer.Option(help="Driver folds for leave-drivers-out")] = 5,
    warm_start: Annotated[bool, typer.Option(
        help="Held-out refits start from the full fits (one compiled sampler per fit); "
             "--no-warm-start refits every fold from scratch")] = True,
    purpose: Annotated[str, typer.Option(
        help="What the fit is for, which picks the deciding score: describe (PSIS-LOO) | "
             "forecast (leave-future-out) | new-groups (new drivers: leave-drivers-out)")]
    = "describe",
    level: Annotated[str | None, typer.Option(help="Column of a level above drivers")] = None,
    priors: PriorsOption = "default",
    residual: ResidualOption = "iid",
    ar_pooling: ArPoolingOption = "shared",
    gp_window_s: GpWindowOption = 10.0,
    gp_method: GpMethodOption = "sliding",
    speed_limit: SpeedLimitOption = None,
    likelihood: LikelihoodOption = "speed",
    draws: Annotated[int, typer.Option(help="Draws per chain")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Folder to write the fits (<mode>.nc) and the comparison "
                            "(comparison.json) to, for `carpool report --from`")] = None,
    formula: FormulaOption = None,
    family: FamilyOption = "gaussian",
    prior: PriorOption = None,
    known_sigma: KnownSigmaOption = None,
) -> None:
    """Compare pooled, unpooled and hierarchical fits: PSIS-LOO, held-out scores, advice.

    With --formula the input is one table (CSV / Parquet) and the three modes of the
    formula are fitted and compared."""
    _use_all_cores(chains)
    import carpool
    from carpool.compare.words import words_for
    from carpool.pipeline import fit_modes

    log = err.print
    if formula is None:
        model_options = _model_options(priors, residual, ar_pooling, gp_window_s, gp_method,
                                       speed_limit, likelihood)
    if out is not None and out.exists() and not out.is_dir():
        raise _fail(f"--out {out} is a file; give a folder")
    saved = [p for p in inputs if p.suffix == ".nc"]
    if saved and formula is not None:
        raise _fail("--formula fits a table; saved fits (.nc) carry their own formula")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if saved:
            if len(saved) != len(inputs):
                raise _fail("give either one data file or saved fits (.nc), not both")
            fits = [_run_reading(carpool.load, p) for p in saved]
        else:
            if len(inputs) != 1:
                raise _fail(f"give one data file to fit, got {len(inputs)}")
            if formula is not None:
                table = _read_table(inputs[0])
                options = _formula_job(formula, family, prior, known_sigma, level, chains,
                                       warmup, draws, seed)
            else:
                table = _read(inputs[0], data_format)
                options = _job_options(model, model_options, level, chains, warmup, draws,
                                       seed)
            fits = list(_run(fit_modes, table, options, log=log).values())
        result = _run(carpool.compare, fits, lfo=lfo, ldo=ldo, ldo_folds=folds, purpose=purpose,
                      warm_start=warm_start, seed=seed, log_fn=log)
    _print_warnings(caught)
    for w in result.warnings:
        err.print(f"[bold yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if out is not None:
        written = [_run(f.save, out / f"{f.pooling}.nc") for f in fits]
        written.append(_run(result.save, out / COMPARISON_FILE))
        err.print(f"wrote {', '.join(str(p) for p in written)}", soft_wrap=True)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    console.print(_comparison_table(result, words_for(fits[0].spec)))
    if result.refits:
        console.print(escape(result.refits), soft_wrap=True, highlight=False)
    console.print(f"[bold]recommendation:[/] {escape(result.recommendation['reason'])}",
                  soft_wrap=True)


@app.command()
def sweep(
    data: Annotated[Path, typer.Argument(help="Trajectory file, or with --formula any "
                                              "table (CSV / Parquet)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder")],
    model: Annotated[str, typer.Option(help="Car-following model")] = "idm",
    grid: Annotated[str | None, typer.Option(
        help="Comma-separated fixed tau values (latent scale); default "
             "0.01,0.03,0.1,0.3,1,3")] = None,
    level: Annotated[str | None, typer.Option(help="Column of a level above drivers")] = None,
    priors: PriorsOption = "default",
    residual: ResidualOption = "iid",
    ar_pooling: ArPoolingOption = "shared",
    gp_window_s: GpWindowOption = 10.0,
    gp_method: GpMethodOption = "sliding",
    speed_limit: SpeedLimitOption = None,
    likelihood: LikelihoodOption = "speed",
    draws: Annotated[int, typer.Option(help="Draws per chain")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    formula: FormulaOption = None,
    family: FamilyOption = "gaussian",
    prior: PriorOption = None,
    known_sigma: KnownSigmaOption = None,
) -> None:
    """The pooling dial: fit with tau fixed on a grid, from pooled to unpooled.

    Writes sweep.csv (estimates per tau, driver (or group) and parameter),
    sweep_scores.csv (PSIS-LOO per tau) and sweep.png / sweep.svg. With --formula the
    dial fixes the tau of the terms varying by the formula's first grouping factor.
    """
    _use_all_cores(chains)
    from carpool.compare.sweep import DEFAULT_GRID
    from carpool.compare.sweep import sweep as run_sweep
    from carpool.io import atomic_write_text
    from carpool.pipeline import fit_modes
    from carpool.plots.sweep import plot_sweep

    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} is a file; give a folder")
    values = _parse_grid(grid) or DEFAULT_GRID
    if formula is not None:
        options = _formula_job(formula, family, prior, known_sigma, level, chains, warmup,
                               draws, seed)
        table = _read_table(data)
    else:
        model_options = _model_options(priors, residual, ar_pooling, gp_window_s, gp_method,
                                       speed_limit, likelihood)
        options = _job_options(model, model_options, level, chains, warmup, draws, seed)
        table = _read(data, data_format)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits = _run(fit_modes, table, options, log=err.print)
        result = _run(run_sweep, fits["hierarchical"].data, fits["hierarchical"].spec, values,
                      fits=fits, pooling=fits["hierarchical"].config,
                      sampler=fits["hierarchical"].sampler, log_fn=err.print)
    _print_warnings(caught)
    tables = {"sweep.csv": result.estimates, "sweep_scores.csv": result.scores}
    files = [_run(atomic_write_text, out / name, frame.to_csv(index=False))
             for name, frame in tables.items()]
    _run(plot_sweep, result, out / "sweep")
    files += [out / "sweep.png", out / "sweep.svg"]
    t = Table(title="pooling dial: PSIS-LOO along the tau grid")
    for col in ("tau", "elpd_loo", "se", "max_pareto_k"):
        t.add_column(col, justify="right")
    for _, r in result.scores.iterrows():
        t.add_row(f"{r['tau']:g}", f"{r['elpd_loo']:.1f}", f"{r['se']:.1f}",
                  f"{r['max_pareto_k']:.2f}")
    console.print(t)
    console.print(f"wrote {', '.join(str(p) for p in files)}")


@app.command()
def report(
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="One trajectory file (the three modes are fitted), or saved fits (.nc) of the "
             "three modes")] = None,
    source: Annotated[Path | None, typer.Option(
        "--from", help="A folder written by `carpool compare --out`: its fits and "
                       "comparison are reported as they are (no refit; the sweep only with "
                       "--grid)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML report to write")]
    = Path("report.html"),
    model: Annotated[str, typer.Option(help="Car-following model")] = "idm",
    grid: Annotated[str | None, typer.Option(help="Comma-separated tau grid of the sweep")]
    = None,
    sweep_fits: Annotated[bool, typer.Option("--sweep/--no-sweep",
                                             help="Include the pooling-dial sweep")] = True,
    lfo: Annotated[bool, typer.Option(help="Leave-future-out scores")] = True,
    ldo: Annotated[bool, typer.Option(help="Leave-drivers-out scores")] = True,
    folds: Annotated[int, typer.Option(help="Driver folds for leave-drivers-out")] = 5,
    sensitivity: Annotated[bool, typer.Option(
        help="Refit with weak and informative hyperpriors (prior sensitivity)")] = False,
    level: Annotated[str | None, typer.Option(help="Column of a level above drivers")] = None,
    priors: PriorsOption = "default",
    residual: ResidualOption = "iid",
    ar_pooling: ArPoolingOption = "shared",
    gp_window_s: GpWindowOption = 10.0,
    gp_method: GpMethodOption = "sliding",
    speed_limit: SpeedLimitOption = None,
    likelihood: LikelihoodOption = "speed",
    draws: Annotated[int, typer.Option(help="Draws per chain")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    formula: FormulaOption = None,
    family: FamilyOption = "gaussian",
    prior: PriorOption = None,
    known_sigma: KnownSigmaOption = None,
) -> None:
    """Fit the three modes, compare them, sweep the dial: one self-contained HTML page.

    With --formula the input is one table (CSV / Parquet) and the formula's three modes
    are reported."""
    _use_all_cores(chains)
    import carpool
    from carpool.compare.comparison import as_mode_dict
    from carpool.compare.words import words_for
    from carpool.pipeline import build_report

    if out.suffix.lower() not in (".html", ".htm"):
        raise _fail(f"--out must end in .html, got {out}")
    values = _parse_grid(grid) if sweep_fits else ()
    if formula is not None:
        options = _formula_job(formula, family, prior, known_sigma, level, chains, warmup,
                               draws, seed)
    else:
        model_options = _model_options(priors, residual, ar_pooling, gp_window_s, gp_method,
                                       speed_limit, likelihood)
        options = _job_options(model, model_options, level, chains, warmup, draws, seed)
    fits, table, comparison = None, None, None
    if source is not None:
        if inputs:
            raise _fail("give either --from FOLDER or input files, not both")
        if not source.is_dir():
            raise _fail(f"--from {source}: no such folder")
        inputs = [source / f"{m}.nc" for m in ("pooled", "unpooled", "hierarchical")
                  if (source / f"{m}.nc").exists()]
        if not inputs:
            raise _fail(f"--from {source}: no fits (pooled.nc, unpooled.nc, "
                        "hierarchical.nc) in the folder")
        if (source / COMPARISON_FILE).exists():
            from carpool.compare.results import Comparison

            comparison = _run_reading(Comparison.load, source / COMPARISON_FILE)
        if grid is None:
            values = ()
    elif not inputs:
        raise _fail("give a trajectory file, saved fits (.nc) or --from FOLDER")
    if any(p.suffix == ".nc" for p in inputs):
        if not all(p.suffix == ".nc" for p in inputs):
            raise _fail("give either one data file or saved fits (.nc), not both")
        if formula is not None:
            raise _fail("--formula fits a table; saved fits (.nc) carry their own formula")
        fits = _run(as_mode_dict, [_run_reading(carpool.load, p) for p in inputs])
        missing = [m for m in ("pooled", "unpooled", "hierarchical") if m not in fits]
        if missing:
            raise _fail(f"the report needs fits in all three pooling modes; missing "
                        f"{', '.join(missing)}")
        options = replace(options, sampler=fits["hierarchical"].sampler)
    elif len(inputs) != 1:
        raise _fail(f"give one data file to fit, got {len(inputs)}")
    elif formula is not None:
        table = _read_table(inputs[0])
    else:
        table = _read(inputs[0], data_format)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run(build_report, table, out, options, fits=fits, comparison=comparison,
                      grid=values, lfo=lfo, ldo=ldo, ldo_folds=folds, sensitivity=sensitivity,
                      log=err.print)
    _print_warnings(caught)
    console.print(_comparison_table(result.comparison,
                                    words_for(result.fits["hierarchical"].spec)))
    console.print(f"[bold]recommendation:[/] "
                  f"{escape(result.comparison.recommendation['reason'])}", soft_wrap=True)
    console.print(f"wrote {out}")


@app.command()
def models() -> None:
    """List the car-following models and their parameters."""
    from carpool.carfollowing import get_model, list_models

    table = Table(title="car-following models")
    for col in ("model", "parameters", "description"):
        table.add_column(col)
    for name in list_models():
        m = get_model(name)
        table.add_row(name, escape(", ".join(f"{p.name} [{p.unit}]" for p in m.parameters)),
                      escape(m.description.split(".")[0][:80]))
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder")]
    = Path("demo-output"),
    data: Annotated[str, typer.Option(help="Bundled data: ngsim-i80 (human drivers, IDM) or "
                                           "usdot-platoon (automated cars, linear ACC)")]
    = "ngsim-i80",
    model: Annotated[str | None, typer.Option(help="Car-following model (default: the "
                                                   "data set's)")] = None,
    drivers: Annotated[int | None, typer.Option(help="Drivers fitted (default: the data "
                                                     "set's choice)")] = None,
    duration_s: Annotated[float | None, typer.Option(help="Seconds of each record")] = None,
    draws: Annotated[int | None, typer.Option(help="Draws per chain")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up iterations per chain")] = None,
    chains: Annotated[int, typer.Option(help="Chains")] = 4,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    speed_limit: SpeedLimitOption = None,
    report: Annotated[bool, typer.Option(help="Compare, sweep, simulate and write "
                                              "report.html")] = True,
) -> None:
    """Fit the three pooling modes to bundled real data, compare and simulate them."""
    _use_all_cores(chains)
    from carpool.demo import DEMO_DATA, run_demo

    if data not in DEMO_DATA:
        raise _fail(f"unknown --data {data!r}; choose one of {', '.join(DEMO_DATA)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run(run_demo, out, data=data, model=model, num_drivers=drivers,
                      duration_s=duration_s, draws=draws, warmup=warmup, chains=chains, seed=seed,
                      speed_limit=speed_limit, report=report, log=console.print)
    console.print(result.table)
    if result.comparison is not None:
        console.print(_comparison_table(result.comparison))
        console.print(f"[bold]recommendation:[/] "
                      f"{escape(result.comparison.recommendation['reason'])}", soft_wrap=True)
    if result.multistep is not None:
        console.print(_multistep_table(result.multistep))
    if result.ring is not None:
        from carpool.demo import ring_text

        text = ring_text(result.ring.summary.iloc[0], result.fits["pooled"].spec.name)
        console.print(f"[bold]ring road:[/] {escape(text)}", soft_wrap=True)
    _print_warnings(caught)
    console.print(f"wrote {len(result.files)} files to {out}"
                  + (f"; open {out / 'report.html'}" if report else ""))


def _multistep_table(frame: Any) -> Table:
    table = Table(title="held-out prediction, last 30% of each record (rmse; 90% coverage)")
    heads = {"horizon": "horizon", "residual": "residual", "rmse_speed_m_s": "speed m/s",
             "rmse_gap_m": "gap m", "coverage_speed_90": "cov speed",
             "coverage_gap_90": "cov gap"}
    for col, head in heads.items():
        table.add_column(head, justify="left" if col in ("horizon", "residual") else "right")
    for _, r in frame.iterrows():
        table.add_row(str(r["horizon"]), str(r["residual"]),
                      *(f"{r[c]:.3f}" if "rmse" in c else f"{r[c]:.0%}"
                        for c in list(heads)[2:]))
    return table


# -- carpool simulate ---------------------------------------------------------------------
simulate_app = typer.Typer(no_args_is_help=True,
                           help="Simulate traffic from a fit: a ring road of heterogeneous "
                                "drivers, or one driver behind its recorded leader.")
app.add_typer(simulate_app, name="simulate")


def _sim_check_csv_out(out: Path) -> None:
    if out.suffix.lower() != ".csv":
        raise _fail(f"--out must end in .csv, got {out}")
    if out.is_dir():
        raise _fail(f"--out {out} is a folder; give a file name ending in .csv")
    if out.parent.exists() and not out.parent.is_dir():
        raise _fail(f"--out folder {out.parent} is a file, not a folder")


def _sim_cell(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value  # numpy scalars
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return "-" if value != value else f"{value:.3g}"


@simulate_app.command("ring")
def simulate_ring_command(
    fit_path: Annotated[Path, typer.Argument(help="A car-following fit from `carpool fit` "
                                                  "(.nc)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The CSV to write (vehicle, time, "
                                                          "position, speed, gap); the "
                                                          "time-space figure goes next to it "
                                                          "(.png, .svg)")],
    num_vehicles: Annotated[int, typer.Option(help="Vehicles on the ring")] = 22,
    length_m: Annotated[float, typer.Option(help="Ring length (m)")] = 230.0,
    duration_s: Annotated[float, typer.Option(help="Simulated time (s)")] = 300.0,
    dt: Annotated[float, typer.Option(help="Time step (s)")] = 0.1,
    drivers: Annotated[str, typer.Option(help="population (new drivers) | observed "
                                              "(resampled fitted drivers)")] = "population",
    num_draws: Annotated[int, typer.Option(help="Independent rings (posterior draws)")] = 1,
    vehicle_length_m: Annotated[float, typer.Option(help="Vehicle length (m)")] = 5.0,
    perturbation_m: Annotated[float, typer.Option(
        help="Vehicle 0 starts this far behind its even slot (m)")] = 1.0,
    noise: Annotated[bool | None, typer.Option(
        help="Add the fitted acceleration noise (default: on for the JAX engine; SUMO's "
             "IDM has none)")] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    engine: Annotated[str, typer.Option(
        help="jax (carpool's simulator) | sumo (Eclipse SUMO's IDM; pip install "
             "\"carpool[sumo]\")")] = "jax",
) -> None:
    """Ring road (Sugiyama-style): do stop-and-go waves emerge among the fitted drivers?"""
    import carpool
    from carpool.io import atomic_write_text
    from carpool.plots.simulation import plot_time_space

    _sim_check_csv_out(out)
    if engine == "jax":
        from carpool.simulate import ring
    elif engine == "sumo":
        from carpool.simulate.sumo import sumo_ring as ring
    else:
        raise _fail(f"unknown engine {engine!r}; choose jax or sumo")
    result = _run(ring, _run_reading(carpool.load, fit_path), num_vehicles=num_vehicles,
                  length_m=length_m, duration_s=duration_s, dt=dt, drivers=drivers,
                  num_draws=num_draws, vehicle_length_m=vehicle_length_m,
                  perturbation_m=perturbation_m,
                  noise=(engine == "jax") if noise is None else noise, seed=seed)
    _run(atomic_write_text, out, result.table.to_csv(index=False, float_format="%.6g"))
    _run(plot_time_space, result, out.with_suffix(""))
    table = Table(title=f"ring ({engine}): {num_vehicles} vehicles on {length_m:g} m, "
                        f"{drivers} drivers (statistics after "
                        f"{result.settings['warmup_s']:g} s)")
    columns = {"mean_speed_m_s": "mean v", "speed_std_m_s": "std v",
               "share_stopped": "stop", "wave_speed_km_h": "wave km/h",
               "spread_growth": "growth", "median_is_string_stable": "stable",
               "collisions": "coll", "hard_collisions": "hard"}
    table.add_column("draw", justify="right")
    for head in columns.values():
        table.add_column(head, justify="right")
    for draw, row in result.summary.iterrows():
        table.add_row(str(draw), *(_sim_cell(row[c]) for c in columns))
    table.caption = ("v: speed (m/s); stop: share of vehicle-time below 0.1 m/s; growth: "
                     "speed spread across vehicles, last / first tenth of the time; stable: "
                     "linear string stability of the median driver; coll: collision events "
                     "(floored gaps); hard: those closing at 1 m/s or faster")
    console.print(table)
    console.print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.svg')}")


@simulate_app.command("follow")
def simulate_follow_command(
    fit_path: Annotated[Path, typer.Argument(help="A car-following fit from `carpool fit` "
                                                  "(.nc)")],
    data: Annotated[Path, typer.Argument(help="Trajectory file with the driver's record")],
    driver: Annotated[str, typer.Option(help="The driver to simulate")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The CSV of bands to write; the "
                                                          "figure goes next to it (.png, "
                                                          ".svg)")],
    num_draws: Annotated[int, typer.Option(help="Posterior draws simulated")] = 200,
    horizon: Annotated[float | None, typer.Option(
        help="Restart from the record every HORIZON s (default: the whole record)")] = None,
    noise: Annotated[bool | None, typer.Option(
        help="Add the fitted acceleration noise (default: on for the JAX engine; SUMO's "
             "IDM has none)")] = None,
    parameter_uncertainty: Annotated[bool, typer.Option(
        help="Vary the parameters over draws (else the posterior median)")] = True,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    engine: Annotated[str, typer.Option(
        help="jax (carpool's simulator) | sumo (Eclipse SUMO's IDM; pip install "
             "\"carpool[sumo]\")")] = "jax",
) -> None:
    """Simulate one driver behind the recorded leader; scores against the record."""
    import carpool
    from carpool.io import atomic_write_text
    from carpool.plots.simulation import plot_follow_bands
    from carpool.simulate import follow

    _sim_check_csv_out(out)
    fit_result = _run_reading(carpool.load, fit_path)
    table = _read(data, data_format)
    result = _run(follow, fit_result, table, driver, num_draws=num_draws, horizon=horizon,
                  noise=(engine == "jax") if noise is None else noise,
                  parameter_uncertainty=parameter_uncertainty, seed=seed, engine=engine)
    _run(atomic_write_text, out, result.bands().to_csv(index=False, float_format="%.6g"))
    _run(plot_follow_bands, result, out.with_suffix(""))
    metrics = Table(title=f"driver {escape(result.driver)} behind the recorded leader "
                          f"({result.settings['num_draws']} draws, parameters from "
                          f"{result.settings['params_from']})")
    columns = {"rmse_speed_m_s": "RMSE v",
               "rmse_gap_m": "RMSE s", "crps_speed_m_s": "CRPS v", "crps_gap_m": "CRPS s",
               "coverage_speed_90": "90% v", "coverage_gap_90": "90% s",
               "collisions": "crash"}
    metrics.add_column("horizon")
    for head in columns.values():
        metrics.add_column(head, justify="right")
    for scope, row in result.metrics.iterrows():
        label = f"whole {row['horizon_s']:.0f} s" if scope == "whole" else str(scope)
        metrics.add_row(label, *(_sim_cell(row[c]) for c in columns))
    metrics.caption = ("v: speed (m/s), s: gap (m); 90%: share of the record inside the "
                       "simulated 90% band; windows restart from the recorded state; "
                       "crash: simulations with a floored gap; the record's own gap "
                       f"inconsistency is {result.record_gap_error_m:.3g} m (RMSE)")
    console.print(metrics)
    console.print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.svg')}")


@simulate_app.command("lane-drop")
def simulate_lane_drop_command(
    fit_path: Annotated[Path, typer.Argument(help="A hierarchical (or unpooled, with "
                                                  "--drivers observed) IDM fit (.nc)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The CSV of per-draw results to "
                                                          "write; the figure goes next to it "
                                                          "(.png, .svg)")],
    lanes: Annotated[int, typer.Option(help="Lanes before the drop (one fewer after)")] = 2,
    length_m: Annotated[float, typer.Option(help="Road length (m)")] = 2000.0,
    drop_at_m: Annotated[float, typer.Option(help="Where the lane ends (m)")] = 1500.0,
    demand_veh_h: Annotated[float, typer.Option(help="Arrivals at the entry (veh/h)")]
    = 3000.0,
    duration_s: Annotated[float, typer.Option(help="Simulated time (s)")] = 600.0,
    warmup_s: Annotated[float, typer.Option(help="Not scored before this time (s)")] = 180.0,
    num_draws: Annotated[int, typer.Option(help="Posterior draws (one SUMO run each, per "
                                                "population)")] = 10,
    drivers: Annotated[str, typer.Option(help="population (new drivers) | observed "
                                              "(resampled fitted drivers)")] = "population",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
) -> None:
    """A multi-lane road losing a lane, in SUMO, fed by the fitted drivers: discharge flow
    and queues of the heterogeneous population against its median driver, per posterior
    draw."""
    import carpool
    from carpool.io import atomic_write_text
    from carpool.simulate.sumo import lane_drop, plot_lane_drop

    _sim_check_csv_out(out)
    result = _run(lane_drop, _run_reading(carpool.load, fit_path), lanes=lanes,
                  length_m=length_m, drop_at_m=drop_at_m, demand_veh_h=demand_veh_h,
                  duration_s=duration_s, warmup_s=warmup_s, num_draws=num_draws,
                  drivers=drivers, seed=seed)
    _run(atomic_write_text, out, result.summary.to_csv(index=False, float_format="%.6g"))
    _run(plot_lane_drop, result, out.with_suffix(""))
    comparison = result.comparison()
    table = Table(title=f"lane drop {lanes} -> {lanes - 1} at {drop_at_m:g} m, demand "
                        f"{demand_veh_h:g} veh/h, {num_draws} draws: discharge flow (veh/h)")
    table.add_column("population")
    for col in ("mean", "sd", "lo", "hi"):
        table.add_column(col if col in ("mean", "sd") else f"{col} (90%)", justify="right")
    for name, row in comparison.iterrows():
        table.add_row(str(name), *(_sim_cell(row[c]) for c in ("mean", "sd", "lo", "hi")))
    table.caption = ("heterogeneous: every vehicle its own driver; homogeneous: every vehicle "
                     "the population's median driver; difference: the same draw and arrivals")
    console.print(table)
    console.print(f"wrote {out}, {out.with_suffix('.png')}, {out.with_suffix('.svg')}")


export_app = typer.Typer(no_args_is_help=True,
                         help="Calibrated drivers out of carpool, into traffic simulators.")
app.add_typer(export_app, name="export")


@export_app.command("sumo")
def export_sumo_command(
    fit_path: Annotated[Path, typer.Argument(help="An IDM fit from `carpool fit` (.nc)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The SUMO additional file to "
                                                          "write (e.g. drivers.add.xml)")],
    vehicles: Annotated[int, typer.Option(help="vTypes in the distribution (drivers)")],
    source: Annotated[str, typer.Option(
        "--from", help="population (new drivers from a hierarchical fit's population) | "
                       "drivers (the fitted drivers at posterior draws)")] = "population",
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    vehicle_length_m: Annotated[float, typer.Option(help="Every vType's length (m)")] = 5.0,
) -> None:
    """A fitted IDM's drivers as a SUMO vTypeDistribution (carFollowModel="IDM"), one vType
    per driver drawn from the posterior."""
    import carpool
    from carpool.export import to_sumo

    fit_result = _run_reading(carpool.load, fit_path)
    _run(to_sumo, fit_result, vehicles=vehicles, source=source, seed=seed, path=out,
         vehicle_length_m=vehicle_length_m)
    console.print(f"wrote {vehicles} IDM vTypes ({source}) to {escape(str(out))}: load it "
                  "with `sumo -a` and give vehicles type=\"carpool\"")


batch_app = typer.Typer(no_args_is_help=True,
                        help="Batches of independent fits (one per driver, recording, site, "
                             "...) on local worker processes or a Dask cluster.")

app.add_typer(batch_app, name="batch")

EXIT_UNITS_FAILED = 1  # some units of a batch failed (2 stays bad input)
MAX_FAILURES_SHOWN = 10  # failed units named at the end; the manifest has them all


def _batch_progress_bar(total: int) -> tuple[Any, Any]:
    """A rich progress bar and the ``progress_fn`` that updates it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    bar = Progress(TextColumn("[bold]fits"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=err,
                   transient=False)
    task = bar.add_task("fits", total=total, state="")

    def update(p: Any) -> None:
        bar.update(task, completed=p.done + p.failed,
                   state=f"{p.done} done, {p.failed} failed, {p.running} running, "
                         f"{p.pending} waiting")

    return bar, update


@batch_app.command("fit")
def batch_fit_command(
    data: Annotated[list[Path], typer.Argument(help="Trajectory file(s) (CSV / Parquet / "
                                                    "highD / NGSIM / OpenACC / USDOT)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: fits/<unit>.nc "
                                                          "and manifest.json")],
    pooling: Annotated[str, typer.Option(help="pooled | unpooled | hierarchical (every "
                                              "unit's fit)")],
    by: Annotated[str, typer.Option(
        help="One fit per: driver | recording (an input file, or a 'recording' column) | "
             "any column of a carpool CSV / Parquet file")] = "driver",
    model: Annotated[str, typer.Option(help="Car-following model")] = "idm",
    scheduler: Annotated[str | None, typer.Option(
        help="Address (tcp://host:8786) or scheduler file (.json) of a running Dask "
             "scheduler")] = None,
    local_workers: Annotated[int | None, typer.Option(
        help="Local worker processes (one thread each); 0: all in this process; default "
             "one per CPU core")] = None,
    retries: Annotated[int, typer.Option(help="Re-runs of a failed unit before it is "
                                              "recorded as failed")] = 2,
    resume: Annotated[bool, typer.Option(help="Keep valid fits already in --out")] = True,
    level: Annotated[str | None, typer.Option(help="Column of a level above drivers")] = None,
    priors: PriorsOption = "default",
    residual: ResidualOption = "iid",
    ar_pooling: ArPoolingOption = "shared",
    gp_window_s: GpWindowOption = 10.0,
    gp_method: GpMethodOption = "sliding",
    speed_limit: SpeedLimitOption = None,
    likelihood: LikelihoodOption = "speed",
    draws: Annotated[int, typer.Option(help="Draws per chain")] = 1000,
    warmup: Annotated[int, typer.Option(help="Warm-up iterations per chain")] = 1000,
    chains: Annotated[int, typer.Option(help="Chains (run one after another in a worker)")]
    = 4,
    seed: Annotated[int, typer.Option(help="Random seed (the same for every unit)")] = 0,
    data_format: Annotated[str, typer.Option("--format", help="Input format")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = True,
    engine: Annotated[str, typer.Option(
        help="fit: carpool.fit per unit (any model); separate: one-driver units in groups "
             "through fit_separately, compiled once per worker (unpooled / pooled, iid "
             "residuals)")] = "fit",
    drivers_per_task: Annotated[int | None, typer.Option(
        help="engine separate: units per task (default: four tasks per worker, at most "
             "50 units each)")] = None,
) -> None:
    """Fit every unit (driver, recording, ...) as its own task; resumable, with a manifest.

    Writes OUT/fits/<unit>.nc as each fit finishes and OUT/manifest.json (each unit's
    status, error, attempts, timings). Exit status 1 when some units failed.
    """
    import time

    from carpool.batch import fit_batch, make_executor, read_units

    if out.exists() and not out.is_dir():
        raise _fail(f"--out {out} is a file; give a folder")
    if scheduler is not None and local_workers is not None:
        raise _fail("give either --scheduler or --local-workers, not both")
    if local_workers is not None and local_workers < 0:
        raise _fail(f"--local-workers must be >= 0, got {local_workers}")
    if retries < 0:
        raise _fail(f"--retries must be >= 0, got {retries}")
    if engine not in ("fit", "separate"):
        raise _fail(f"unknown --engine {engine!r}; choose fit or separate")
    if drivers_per_task is not None and (engine != "separate" or drivers_per_task < 1):
        raise _fail("--drivers-per-task needs --engine separate and a value >= 1")
    if engine == "separate" and level is not None:
        raise _fail("--level does not apply to --engine separate (each driver alone)")
    model_options = _model_options(priors, residual, ar_pooling, gp_window_s, gp_method,
                                   speed_limit, likelihood)
    units = _run_reading(read_units, data, by, data_format)
    err.print(f"{len(units)} units by {escape(by)} from {len(data)} file(s)")
    sampler = _run(_sampler, chains=chains, warmup=warmup, draws=draws, seed=seed)
    executor = _run(make_executor, scheduler, local_workers)
    err.print(f"running on {executor.num_workers} worker(s)"
              + (f" of {escape(scheduler)}" if scheduler else ""))
    t0 = time.perf_counter()
    bar, update = _batch_progress_bar(len(units)) if progress else (None, None)
    try:
        if bar is not None:
            bar.start()
        result = _run(fit_batch, units, model, out, pooling=pooling, by=by,
                      executor=executor, retries=retries, resume=resume, sampler=sampler,
                      level=level, model_options=model_options, progress_fn=update,
                      engine=engine,
                      drivers_per_task=drivers_per_task)
    finally:
        if bar is not None:
            bar.stop()
        executor.close()
    _print_batch_summary(result, time.perf_counter() - t0)
    if result.failed:
        raise typer.Exit(EXIT_UNITS_FAILED)


def _print_batch_summary(result: Any, wall_s: float) -> None:
    s = result.summary
    table = Table(title=f"batch: {s['total']} units in {wall_s:.1f} s")
    for col in ("fitted now", "reused", "failed", "not converged"):
        table.add_column(col, justify="right")
    records = result.manifest.units.values()
    shaky = sum(1 for r in records if r["status"] == "done"
                and (r.get("divergences", 0) > 0
                     or rhat_ok(float(r.get("max_rhat", math.nan))) is not True))
    table.add_row(str(s["done"] - s["reused"]), str(s["reused"]), str(s["failed"]),
                  str(shaky))
    table.caption = (f"not converged: max R-hat above {RHAT_MAX} (or not computable with one "
                     "chain) or divergences; see manifest.json")
    console.print(table)
    console.print(f"wrote {escape(str(result.manifest_path))}")
    failed = result.failed
    for name, error in list(failed.items())[:MAX_FAILURES_SHOWN]:
        err.print(f"[bold red]failed:[/] {escape(name)}: {escape(str(error))}",
                  highlight=False, soft_wrap=True)
    if len(failed) > MAX_FAILURES_SHOWN:
        err.print(f"... and {len(failed) - MAX_FAILURES_SHOWN} more failed units (see the "
                  "manifest)")
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} of {s['total']} units failed",
                  highlight=False)


#: The last SIGINT / SIGTERM the process received (see :func:`_signal_as_interrupt`), and
#: whether the KeyboardInterrupt it raised was dropped and is waiting to be sent again.
_RECEIVED: dict[str, Any] = {"signal": None, "dropped": False}

#: Seconds before a dropped interruption is sent again (time for the finaliser to return).
_RESEND_DELAY_S = 0.05


def _signal_as_interrupt(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM raise Ctrl-C's KeyboardInterrupt."""
    _RECEIVED["signal"] = signal.Signals(signum)
    _RECEIVED["dropped"] = False
    raise KeyboardInterrupt


def _resend_if_still_dropped(signum: int) -> None:
    if _RECEIVED["dropped"]:
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _resend_dropped_interrupts() -> Iterator[None]:
    """While active, a KeyboardInterrupt from our signal handler that Python drops is sent
    again instead of printed.

    A signal handler runs between any two bytecodes, so it can raise inside an object's
    finaliser (``__del__``, ``weakref.finalize``) or a garbage-collector callback (JAX
    registers one). Python cannot propagate an exception from there: it prints "Exception
    ignored in ..." with a traceback and the command runs on (measured: ``carpool compare``
    signalled 1 s in ran to exit 0). Every such drop goes through ``sys.unraisablehook``;
    this hook swallows our interruption and sends the signal again 50 ms later, when the
    finaliser has returned. Every other unraisable exception goes to the previous hook.
    """
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        signum = _RECEIVED["signal"]
        if signum is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
            previous(unraisable)
            return
        _RECEIVED["dropped"] = True
        resend = threading.Timer(_RESEND_DELAY_S, _resend_if_still_dropped, (signum,))
        resend.daemon = True  # never keeps a finished process alive
        resend.start()

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def main() -> None:
    # SIGINT and SIGTERM unwind like Ctrl-C in every command: atomic writes delete their
    # temporary files and typer exits 130 without a traceback (``carpool fit`` prints its
    # own line). An interrupted process then leaves by os._exit: JAX's threads made
    # interpreter shutdown segfault (exit -11) after a signal in 1 of 3 signalled runs.
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _signal_as_interrupt)
    _HARD_EXIT["on"] = True
    try:
        with _resend_dropped_interrupts():
            app()
    except SystemExit as stop:
        if _RECEIVED["signal"] is None:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.code if isinstance(stop.code, int) else 128 + signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    main()
