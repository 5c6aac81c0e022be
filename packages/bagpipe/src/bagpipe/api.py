"""``bagpipe.init_cache``: the reference's trainer API over this package's roles.

A training script calls ``init_cache(...)`` once; it joins the run started by
``python -m bagpipe.oracle_cacher`` and ``python -m bagpipe.embedding_server`` (RPC rank
``worker_id`` = 1 + servers + ``training_worker_id``), checks its settings against the
oracle's, joins the trainers' collective group and returns a :class:`~bagpipe.bagcache.BagCache`::

    bag = bagpipe.init_cache(lookahead_value=200, emb_size=48, ln_emb=sizes, cache_size=10**6,
                             worker_id=3, world_size=4, training_worker_id=1, trainer_world_size=2)
    while (batch := bag.next_batch()) is not None:
        ly = bag.get_emb(batch["sparse_vector"])     # one [B, 48] tensor per table
        loss = model(batch["dense_x"], ly, batch["target"]); loss.backward(); ...
    bagpipe.shutdown()
"""

from __future__ import annotations

import torch

from bagpipe import config as cfg
from bagpipe import runtime as rt
from bagpipe.bagcache import BagCache
from bagpipe.errors import BagpipeError
from bagpipe.optim import optimizer_name, row_optimizer
from bagpipe.transport import DistCollective


def init_cache(lookahead_value: int = 200, emb_size: int = 48, ln_emb=None, cache_size=None,
               cleanup_batch_proportion: float = 0.25, emb_optim=torch.optim.SGD,
               emb_optim_params: dict | None = None, device="cpu", worker_id: int = 0,
               world_size: int = 1, training_worker_id: int = 0, trainer_world_size: int = 1,
               extra_columns: int = 0, master_ip: str = "127.0.0.1", master_port: int = 18000,
               master_port_ccom: int = 9988, dist_backend: str = "auto",
               startup_timeout: float = 120.0, logger=None) -> BagCache:  # fmt: skip
    """Join a Bagpipe run as trainer ``training_worker_id``; see the module docstring."""
    n, t = int(trainer_world_size), int(training_worker_id)
    m = int(world_size) - 1 - n
    if m < 1:
        raise BagpipeError(f"world_size {world_size}: expected oracle + >= 1 server + "
                           f"{n} trainers = at least {n + 2} ranks")  # fmt: skip
    if not 0 <= t < n:
        raise BagpipeError(f"training_worker_id {t}: expected 0..{n - 1}")
    if worker_id != 1 + m + t:
        raise BagpipeError(f"worker_id {worker_id}: trainer {t} has RPC rank {1 + m + t} "
                           f"(oracle 0, servers 1..{m}, trainers {m + 1}..{m + n})")  # fmt: skip
    if not 0.0 < cleanup_batch_proportion <= 1.0:
        raise BagpipeError(f"cleanup_batch_proportion {cleanup_batch_proportion}: expected a "
                           "fraction in (0, 1]")  # fmt: skip
    params = dict(emb_optim_params or {})
    row_optimizer(emb_optim, params)  # validates early
    s = cfg.settings(table_sizes=ln_emb, dim=emb_size, row_width=emb_size + extra_columns,
                     lookahead=lookahead_value, cleanup_proportion=cleanup_batch_proportion,
                     num_trainers=n, num_servers=m, cache_size=cache_size,
                     emb_optim=optimizer_name(emb_optim), emb_optim_params=params)  # fmt: skip
    from bagpipe.trainer import StagedCollective, pick_backend

    dev = torch.device(device)
    names = rt.role_names(m, n)
    rt.S.names = names
    rt.init_world(f"trainer_{t}", worker_id, world_size, master_ip, master_port, startup_timeout)
    merged = rt.handshake(s)
    rt.start_watchdog(names)
    backend = pick_backend(dist_backend, dev, n)
    rt.init_trainer_group(backend, master_ip, master_port_ccom, t, n)
    coll = StagedCollective(dev) if backend == "gloo" and dev.type == "cuda" else DistCollective()
    opt = row_optimizer(merged["emb_optim"], merged["emb_optim_params"])
    links = rt.RpcLinks(t, m, merged["row_width"], merged["row_width"] * opt.state_width_factor)
    return BagCache(links, coll, trainer_id=t, num_trainers=n, emb_size=emb_size,
                    extra_columns=extra_columns, cache_size=merged["cache_size"],
                    emb_optim=merged["emb_optim"], emb_optim_params=merged["emb_optim_params"],
                    device=dev)  # fmt: skip


def shutdown() -> None:
    """Leave the run once every role is done (call after the last ``next_batch``)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    rt.finish()
