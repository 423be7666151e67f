"""The ``ray`` engine: ingest, embed and tag as Ray Data ``map_batches`` stages, writing the local engine's parts.

Pipeline (one Ray Data dataset, streamed)::

    units (one row per input file/shard, see partplan.py)
      -> map_batches(ingest_units)     tasks: read the unit's batches, hash-match them, one row per part (Arrow IPC)
      -> map_batches(TagActor)   actor pool (GPU actors when the cluster has GPUs): embed + tag + write the part
      -> driver                   counts rows, progress bar, raises the first per-part InputError

Part ``i`` holds exactly the rows, columns and values of the local engine's part ``i`` (same batches from the
same reader code, same :func:`analyzer.tagging.batch.tag_batch`, same :meth:`RunStore.write_part`), so catalog,
risk and report run unchanged. Parts whose marker exists are skipped (resume).

``engine_options`` (``analyzer.scan(..., engine="ray", engine_options={...})``; CLI ``--ray-address`` and
``--ray-option KEY=VALUE``; checked in ray_options.py):

- ``address``: an existing cluster (else ``$RAY_ADDRESS``; else a local Ray is started and shut down after)
- ``concurrency``: tag actors (int, or ``[min, max]`` to autoscale); default one per GPU, else one per CPU
- ``num_cpus`` / ``num_gpus``: per tag actor; ``num_gpus`` defaults to 1 when the cluster has GPUs, else 0
- ``ingest_num_cpus`` / ``ingest_concurrency``: per ingest task / at most this many ingest tasks at once
- ``local_num_cpus``: CPUs of the local Ray started when no address is given (default 2)
- ``runtime_env``: passed to ``ray.init`` (e.g. ``{"pip": [...]}`` on a cluster without the package)
- ``ray_progress``: show Ray Data's own progress bars (default off; the analyzer's bar is shown unless quiet)

The run directory and the inputs must be reachable under the same paths from every node (shared filesystem).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import warnings

import pyarrow as pa

from analyzer.errors import InputError
from analyzer.engines.partplan import batch_from_bytes, batch_to_bytes, iter_unit_batches, plan_units
from analyzer.engines.ray_options import OPTIONS, check_options, resolve_resources

log = logging.getLogger("analyzer")

LAST_RUN: dict = {}  # figures of the latest run_parts_ray in this process (benchmarks/bench_ray.py reads them)
_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

PART_MSG = pa.schema([("part", pa.int64()), ("rows", pa.int64()), ("skipped", pa.bool_()),
                      ("error", pa.string()), ("data", pa.large_binary())])
DONE_MSG = pa.schema([("part", pa.int64()), ("rows", pa.int64()), ("skipped", pa.bool_()), ("error", pa.string())])


# ---- Ray session ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(opts: dict, *, quiet: bool = True):
    """Use a running Ray, connect to ``address``/``$RAY_ADDRESS``, or start a small local one.

    Yields ``(ray, local)``: ``local`` is True when this call started a local Ray. Ray is shut down on exit
    only when this call started or connected it (a Ray the caller initialised is left running).
    """
    try:
        import ray
    except ImportError:
        raise InputError("expected Ray Data for --engine ray, got no ray installed; "
                         "run `pip install 'dataset-risk-analyzer[ray]'` (ray[data])") from None
    started, address = False, None
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=not quiet,
                  logging_level=logging.ERROR if quiet else logging.WARNING,
                  configure_logging=True)
        if opts.get("runtime_env"):
            kw["runtime_env"] = opts["runtime_env"]
        address = opts.get("address") or os.environ.get("RAY_ADDRESS")
        try:
            if address:
                ray.init(address=address, **kw)
            else:
                _start_local(ray, int(opts.get("local_num_cpus") or 2), kw)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise InputError(f"expected a reachable Ray cluster at {address!r}, got {type(exc).__name__}: "
                             f"{str(exc)[:160]}; check --ray-address (or unset RAY_ADDRESS for a local Ray)"
                             if address else f"expected a local Ray to start, got {type(exc).__name__}: "
                             f"{str(exc)[:160]}") from None
        started = True
    try:
        yield ray, started and not address
    finally:
        if started:
            ray.shutdown()


def _start_local(ray, num_cpus: int, kw: dict, attempts: int = 3) -> None:
    """Start a local Ray, retrying when its node does not come up in time.

    Ray's raylet aborts when the dashboard agent it spawns has not written its port file within a fixed
    15 s (not configurable in Ray 2.5x/2.60); on a machine whose CPUs are saturated the agent's Python start-up
    can take longer. A retry usually succeeds; on such machines start a cluster yourself and pass its address.
    """
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=num_cpus, **kw)
            return
        except Exception as exc:  # Ray raises a bare Exception when the node does not come up in time
            if attempt == attempts or "timed out during startup" not in str(exc):
                raise
            log.warning("local Ray did not start in time (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()


@contextlib.contextmanager
def _data_context(*, show_progress: bool):
    """Ray Data settings for this scan, restored after it.

    ``target_max_block_size`` is set tiny so that every part message is a block of its own: Ray Data hands
    blocks to actors, and parts merged into one block would be tagged one after another by one actor.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    saved = {}
    wanted = {"target_max_block_size": 1, "enable_progress_bars": show_progress,
              "enable_operator_progress_bars": show_progress, "print_on_execution_start": show_progress}
    for attr, value in wanted.items():
        if hasattr(ctx, attr):
            saved[attr] = getattr(ctx, attr)
            setattr(ctx, attr, value)
    loggers = {name: logging.getLogger(name) for name in ("ray.data", "ray")}
    levels = {name: lg.level for name, lg in loggers.items()}
    for lg in loggers.values():
        lg.setLevel(logging.INFO if show_progress else logging.ERROR)
    try:
        yield ctx
    finally:
        for attr, value in saved.items():
            setattr(ctx, attr, value)
        for name, lg in loggers.items():
            lg.setLevel(levels[name])


def _compute(data_mod, size, *, actors: bool) -> dict:
    """A ``compute=`` strategy (``concurrency=`` is deprecated since Ray 2.51), else ``concurrency=`` where the
    strategy takes no ``size`` (older Ray)."""
    strategy = getattr(data_mod, "ActorPoolStrategy" if actors else "TaskPoolStrategy", None)
    if strategy is not None:
        try:
            if actors:
                return {"compute": strategy(size=size) if isinstance(size, int) else
                        strategy(min_size=size[0], max_size=size[1])}
            return {"compute": strategy(size=size)}
        except TypeError:
            pass
    return {"concurrency": size}


def _model_arg(model, store):
    """The sha256 of RUN/model.json when it holds this model (actors read it), else the model dict itself."""
    text = json.dumps(model.to_dict())
    path = store.root / "model.json"
    if path.is_file() and path.read_text() == text:
        return hashlib.sha256(text.encode()).hexdigest()
    return model.to_dict()


# ---- stages ----------------------------------------------------------------------------------------------
def _msg(part: int, rows: int, *, data: bytes | None = None, skipped: bool = False,
         error: str | None = None) -> pa.Table:
    return pa.table({"part": [part], "rows": [rows], "skipped": [skipped], "error": [error], "data": [data]},
                    schema=PART_MSG)


def ingest_units(batch: pa.Table, *, units, batch_size: int, root: str, hashes=None):
    """Read the units named in ``batch`` and yield one message per part (skipped parts carry no data)."""
    from analyzer.engines.local import write_hash_part
    from analyzer.store.rundir import RunStore

    store = RunStore(root)
    matcher = None
    for k in batch.column("unit").to_pylist():
        unit = units[k]
        try:
            for i, b in iter_unit_batches(unit, batch_size):
                if store.part_done(i):
                    yield _msg(i, b.num_rows, skipped=True)
                    continue
                if hashes is not None:
                    if matcher is None:
                        matcher = _fresh_matcher(hashes)
                    write_hash_part(matcher, b, store.root / "parts" / "hash_matches", i)
                yield _msg(i, b.num_rows, data=batch_to_bytes(b))
        except InputError as exc:
            yield _msg(unit.first_part, 0, error=str(exc))
            return


def _fresh_matcher(hashes):
    """An unprepared copy of the driver's matcher (same lists and settings; indexes rebuilt here)."""
    m = object.__new__(type(hashes))
    m.__dict__.update({k: v for k, v in vars(hashes).items() if not k.endswith("_")})
    return m


class TagActor:
    """Holds the encoder and concept model; embeds, tags and writes one part per input row."""

    def __init__(self, encoder_name: str, encoder_fingerprint: str, model_state, root: str,
                 embedding_modality: str, keep_embeddings: bool, media: dict | None = None):
        for k, v in _ENV.items():
            os.environ.setdefault(k, v)
        from analyzer.concepts.model import ConceptModel
        from analyzer.encoders import get_encoder
        from analyzer.store.rundir import RunStore

        self.error = None
        self.store = RunStore(root)
        from analyzer.tagging.media import media_options

        self.embedding_modality, self.keep_embeddings = embedding_modality, keep_embeddings
        self.media = media_options(media)
        try:
            self.encoder = get_encoder(encoder_name)
            if self.encoder.fingerprint != encoder_fingerprint:
                raise InputError(f"expected the encoder weights of the driver ({encoder_fingerprint[:12]}) on every "
                                 f"Ray node, got {self.encoder.fingerprint[:12]} for {encoder_name}; install the "
                                 "same model files on every node")
            if isinstance(model_state, str):  # sha256 of RUN/model.json (the JSON the driver wrote)
                text = (self.store.root / "model.json").read_text()
                if hashlib.sha256(text.encode()).hexdigest() != model_state:
                    raise InputError(f"expected {self.store.root / 'model.json'} as written by the driver, got "
                                     "another file; the run directory must be one shared path on every node")
                model_state = json.loads(text)
            self.model = ConceptModel.from_dict(model_state, self.encoder)
        except InputError as exc:
            self.error = str(exc)
        except OSError as exc:
            self.error = (f"expected the run directory {root} readable on every Ray node, got {type(exc).__name__}: "
                          f"{exc}; put --out on a filesystem shared by the nodes")

    def __call__(self, batch: pa.Table) -> pa.Table:
        from analyzer.engines.local import hash_matched_ids
        from analyzer.tagging.batch import tag_batch

        out = {"part": [], "rows": [], "skipped": [], "error": []}
        for rec in batch.to_pylist():
            err = rec["error"]
            if err is None and self.error is not None and not rec["skipped"]:
                err = self.error
            if err is None and not rec["skipped"]:
                try:
                    b = batch_from_bytes(rec["data"])
                    matched = hash_matched_ids(self.store.root / "parts" / "hash_matches", rec["part"])
                    items, emb = tag_batch(b, self.encoder, self.model, embedding_modality=self.embedding_modality,
                                           keep_embeddings=self.keep_embeddings, hash_matched=matched,
                                           media=self.media)
                    self.store.write_part(rec["part"], items, emb)
                except InputError as exc:
                    err = str(exc)
            for k, v in (("part", rec["part"]), ("rows", rec["rows"]), ("skipped", rec["skipped"]), ("error", err)):
                out[k].append(v)
        return pa.table(out, schema=DONE_MSG)


# ---- driver ----------------------------------------------------------------------------------------------
def run_parts_ray(cfg, reader, encoder, model, store, hashes=None) -> int:
    """Write every part of the scan with Ray Data; returns the number of input rows (as the local engine)."""
    from analyzer.progress import progress

    opts = check_options(cfg.engine_options)
    units = plan_units(reader, cfg.batch_size)
    if hashes is None and cfg.hash_lists:
        from analyzer.hashes.matching import HashMatcher, load_hash_lists

        hashes = HashMatcher(load_hash_lists(cfg.hash_lists))
    rows = 0
    pending = []
    todo: int | None = 0  # parts left to write, when every unit is planned
    for k, u in enumerate(units):
        left = None if u.sizes is None else sum(not store.part_done(u.first_part + j) for j in range(len(u.sizes)))
        if left == 0:
            rows += u.rows  # every part of this unit is done: not even read (resume)
            continue
        pending.append(k)
        todo = None if left is None or todo is None else todo + left
    total = sum(u.rows for u in units) if all(u.sizes is not None for u in units) else reader.count_rows()
    bar = progress(total, "embed+tag (ray)", quiet=cfg.quiet)
    bar.update(rows)
    written = 0
    t0, first, resumed_rows = time.perf_counter(), None, rows
    LAST_RUN.clear()
    if pending:
        with contextlib.ExitStack() as stack:
            ray, _ = stack.enter_context(ray_session(opts, quiet=cfg.quiet))
            import ray.data

            stack.enter_context(_data_context(show_progress=bool(opts.get("ray_progress")) and not cfg.quiet))
            res = resolve_resources(opts, ray.cluster_resources(), parts=todo)
            log.info("ray engine: %d units, tag actors %s (num_cpus=%g, num_gpus=%g), ingest tasks <= %d",
                     len(pending), res["concurrency"], res["num_cpus"], res["num_gpus"], res["ingest_concurrency"])
            hashes_arg = _fresh_matcher(hashes) if hashes is not None else None
            ds = ray.data.from_items([{"unit": k} for k in pending], override_num_blocks=len(pending))
            ds = ds.map_batches(
                ingest_units, batch_size=1, batch_format="pyarrow", num_cpus=res["ingest_num_cpus"],
                **_compute(ray.data, min(res["ingest_concurrency"], len(pending)), actors=False),
                fn_kwargs=dict(units=units, batch_size=cfg.batch_size, root=str(store.root), hashes=hashes_arg),
            )
            ds = ds.map_batches(
                TagActor, batch_size=1, batch_format="pyarrow", num_cpus=res["num_cpus"],
                num_gpus=res["num_gpus"] or None, **_compute(ray.data, res["concurrency"], actors=True),
                fn_constructor_args=(encoder.name, encoder.fingerprint, _model_arg(model, store), str(store.root),
                                     cfg.embedding_modality, cfg.keep_embeddings, cfg.media_options),
            )
            stack.enter_context(warnings.catch_warnings())
            # Ray Data counts the single input block of a one-file scan, not the parts it streams out
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            for out in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for rec in out.to_pylist():
                    if rec["error"]:
                        bar.close()
                        raise InputError(rec["error"])
                    rows += rec["rows"]
                    written += not rec["skipped"]
                    bar.update(rec["rows"])
                    if first is None:
                        first = (time.perf_counter() - t0, rows - resumed_rows)
            LAST_RUN.update(resources=res, units=len(pending))
    bar.close()
    total_s = time.perf_counter() - t0
    LAST_RUN.update(parts_written=written, rows=rows, seconds=total_s, first_part_s=first and first[0],
                    steady_rows_per_s=(rows - resumed_rows - first[1]) / (total_s - first[0])
                    if first and total_s > first[0] and rows - resumed_rows > first[1] else None)
    log.info("ray engine: %d parts written, %d rows in %.1fs", written, rows, total_s)
    return rows


class RayEngine:
    """The parts stage on Ray Data (``engine_options``: see the module docstring and ray_options.py)."""

    name = "ray"

    def __init__(self, options: dict):
        self.options = check_options(options)

    def run_parts(self, cfg, reader, encoder, model, store, hashes=None) -> int:
        cfg.engine_options = self.options
        return run_parts_ray(cfg, reader, encoder, model, store, hashes)


__all__ = ["RayEngine", "run_parts_ray", "check_options", "resolve_resources", "ray_session", "OPTIONS"]
