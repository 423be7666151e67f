"""Options and resources of the Ray engine (``engine_options``), checked before Ray starts."""
from __future__ import annotations

from numbers import Real

from analyzer.errors import InputError

OPTIONS = ("address", "concurrency", "num_cpus", "num_gpus", "ingest_num_cpus", "ingest_concurrency",
           "local_num_cpus", "runtime_env", "ray_progress")


def check_options(opts: dict | None) -> dict:
    """Validate ``engine_options`` before anything starts (InputError with the fix)."""
    opts = dict(opts or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise InputError(f"expected Ray engine options among {', '.join(OPTIONS)}, got {', '.join(unknown)}; "
                         "see docs/scaling.md (Ray engine)")
    for key in ("num_cpus", "num_gpus", "ingest_num_cpus"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, Real) or v < 0):
            raise InputError(f"expected engine option {key} to be a number >= 0, got {v!r}")
    for key in ("ingest_concurrency", "local_num_cpus"):
        v = opts.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise InputError(f"expected engine option {key} to be an integer >= 1, got {v!r}")
    c = opts.get("concurrency")
    if c is not None:
        ok = (isinstance(c, int) and not isinstance(c, bool) and c >= 1) or (
            isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(x, int) and x >= 1 for x in c)
            and c[0] <= c[1])
        if not ok:
            raise InputError(f"expected engine option concurrency to be an integer >= 1 or [min, max], got {c!r}")
        if isinstance(c, list):
            opts["concurrency"] = tuple(c)
    if opts.get("address") is not None and not isinstance(opts["address"], str):
        raise InputError(f"expected a Ray address string (e.g. ray://head:10001 or auto), got {opts['address']!r}")
    return opts


def resolve_resources(opts: dict, cluster: dict, parts: int | None = None) -> dict:
    """Actor and ingest-task resources for a cluster's ``ray.cluster_resources()``.

    GPUs present: one actor per GPU (``num_gpus=1``, 1 CPU each); ingest tasks take 1 CPU each, as many as
    the CPUs the actors leave. CPU only: one 1-CPU actor per CPU; ingest tasks (reading parquet is cheap next
    to embedding) are not given a CPU of their own and run at most one per four CPUs. When fewer ``parts``
    than actors are left, there are only as many actors, sharing the CPUs (torch threads follow num_cpus).
    """
    cpus = max(1.0, float(cluster.get("CPU", 1)))
    gpus = float(cluster.get("GPU", 0))
    num_gpus = float(opts["num_gpus"]) if opts.get("num_gpus") is not None else (1.0 if gpus >= 1 else 0.0)
    if num_gpus > 0 and gpus < num_gpus:
        raise InputError(f"expected a cluster with GPUs for num_gpus={num_gpus}, got {gpus:g} GPUs; "
                         "set engine option num_gpus to 0")
    num_cpus = float(opts["num_cpus"]) if opts.get("num_cpus") is not None else 1.0
    if num_gpus > 0:
        default_actors = max(1, int(gpus // num_gpus))
    else:
        default_actors = max(1, int(cpus // num_cpus)) if num_cpus > 0 else max(1, int(cpus))
    concurrency = opts.get("concurrency")
    if concurrency is None:
        concurrency = default_actors if not parts else min(default_actors, parts)
        if num_gpus == 0 and opts.get("num_cpus") is None and concurrency < default_actors:
            num_cpus = float(max(1, int(cpus // concurrency)))
    n_act = concurrency if isinstance(concurrency, int) else concurrency[1]
    if num_gpus > 0:
        ingest_cpus = float(opts["ingest_num_cpus"]) if opts.get("ingest_num_cpus") is not None else 1.0
        left = cpus - n_act * num_cpus
        ingest_conc = opts.get("ingest_concurrency") or max(1, int(left // max(ingest_cpus, 1.0)))
    else:
        ingest_cpus = float(opts["ingest_num_cpus"]) if opts.get("ingest_num_cpus") is not None else 0.0
        ingest_conc = opts.get("ingest_concurrency") or max(1, int(cpus // 4))
    return {"num_gpus": num_gpus, "num_cpus": num_cpus, "concurrency": concurrency,
            "ingest_num_cpus": ingest_cpus, "ingest_concurrency": int(ingest_conc)}


def cli_engine_options(address: str | None, items: list[str] | None) -> dict | None:
    """``--ray-address`` and ``--ray-option KEY=VALUE`` (values parsed as YAML: 4, 0.5, [1, 4], true)."""
    import yaml

    opts: dict = {"address": address} if address else {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"expected --ray-option KEY=VALUE (e.g. concurrency=4), got {item!r}")
        try:
            opts[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise InputError(f"expected a number, list or word as the value of --ray-option {key.strip()}, "
                             f"got {value!r}") from None
    return check_options(opts) if opts else None


__all__ = ["OPTIONS", "check_options", "resolve_resources", "cli_engine_options"]
