"""``python -m bagpipe``: the roles and tools this package offers."""

import sys

USAGE = """bagpipe: run a role or a tool with python -m bagpipe.<name> --help
  oracle_cacher     reads the batches ahead, decides prefetch / eviction / sync per trainer
  embedding_server  holds a shard of every table on CPU
  trainer           trains DLRM, Wide&Deep, DCN or DeepFM through its cache
  model_parallel    baseline trainer: table-wise model-parallel embeddings (all-to-all)
  torchrec_dmp      baseline trainer: TorchRec's DistributedModelParallel (table-wise)
  launch            starts a whole run on this host
  quickstart        bagpipe vs the no-cache parameter server on CPU
  figure9           per-iteration time vs the baselines (GPU)"""


def main() -> int:
    print(USAGE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
