"""``bagpipe.init_cache`` from a user's own training script, beside the oracle and a server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from bagpipe.launch import free_ports

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F, bagpipe
    t, port, ccom = (int(x) for x in sys.argv[1:4])
    bag = bagpipe.init_cache(lookahead_value=5, emb_size=8, cache_size=100000,
                             cleanup_batch_proportion=0.3, emb_optim=torch.optim.SGD,
                             emb_optim_params={"lr": 0.1}, worker_id=2 + t, world_size=4,
                             training_worker_id=t, trainer_world_size=2, master_port=port,
                             master_port_ccom=ccom)
    steps = 0
    while (batch := bag.next_batch()) is not None:
        ly = bag.get_emb(batch["sparse_vector"])          # one [B, 8] tensor per table
        logits = torch.stack(ly, 1).sum(dim=(1, 2))
        F.binary_cross_entropy_with_logits(logits, batch["target"]).backward()
        steps += 1
    s = bag.summary()
    print(f"trainer {t}: {steps} steps, {len(ly)} tables, misses {s['misses']}", flush=True)
    bagpipe.shutdown()
""")


def test_init_cache_from_a_user_script(criteo_dir, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    port, ccom = free_ports(2)
    env = dict(os.environ, OMP_NUM_THREADS="1", TP_SOCKET_IFNAME="lo", GLOO_SOCKET_IFNAME="lo")
    common = ["--master-port", str(port), "--world-size-trainers", "2", "--num-servers", "1",
              "--lookahead-value", "5", "--cleanup-batch-proportion", "0.3", "--emb-size", "8",
              "--emb-lr", "0.1", "--startup-timeout", "90"]  # fmt: skip
    cmds = [
        [sys.executable, "-m", "bagpipe.oracle_cacher", "--data", str(criteo_dir),
         "--mini-batch-size", "128", "--stop-iter", "20", "--cache-size", "100000", *common],
        [sys.executable, "-m", "bagpipe.embedding_server", "--server-id", "0", *common],
        [sys.executable, str(script), "0", str(port), str(ccom)],
        [sys.executable, str(script), "1", str(port), str(ccom)],
    ]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for c in cmds]  # fmt: skip
    try:
        outs = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    assert "trainer 0: 20 steps, 26 tables, misses 0" in outs[2], outs[2]
    assert "trainer 1: 20 steps, 26 tables, misses 0" in outs[3], outs[3]
