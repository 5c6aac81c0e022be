"""The preprocessing plans of the RAP artifact, as scripts: ``plan0`` .. ``plan3``.

* ``plan0`` / ``plan1`` (Criteo Kaggle / Terabyte table sizes, identical shape): 13 dense
  columns ``fill_null -> logit(1e-5)``; 26 sparse columns ``fill_null -> sigrid_hash(0, table
  size) -> firstx(1)``; one derived sparse feature ``bucketize(int_0, [0.5, 1.0, 1.5])``
  (27 tables). The artifact's ops exactly; its bucketize table has 65,536 rows, ours the 4
  ids bucketize can emit.
* ``plan2`` / ``plan3`` (26 dense + 52 sparse, 52 dense + 104 sparse, every table 65,536
  rows): the artifact ships only fragments of these, so this is a **reconstruction** with its
  op mix (logit, boxcox, onehot + firstx, sigrid_hash(65536), clamp(0, 16), firstx,
  onehot(0, 16, 8) -> ngram(4) -> firstx), Criteo columns repeated.
"""

from __future__ import annotations

from rap_share.constants import KAGGLE_PLAN_TABLES, PLAN_BUCKET_TABLE, TERABYTE_PLAN_TABLES

PLANS = ("plan0", "plan1", "plan2", "plan3")


def plan_script(name: str) -> str:
    """Script text of a named plan."""
    if name in ("plan0", "plan1"):
        sizes = KAGGLE_PLAN_TABLES if name == "plan0" else TERABYTE_PLAN_TABLES
        lines = [f"# RAP {name}: Criteo {'Kaggle' if name == 'plan0' else 'Terabyte'} table sizes"]
        for i in range(13):
            lines.append(f'df["int_{i}"] = df["int_{i}"].fill_null(0)')
        lines.append('df["bucketize_int_0"] = functional.bucketize(df["int_0"], [0.5, 1.0, 1.5])')
        for i in range(13):
            lines.append(f'df["int_{i}"] = functional.logit(df["int_{i}"], 1e-5)')
        for i, n in enumerate(sizes):
            lines.append(f'df["cat_{i}"] = df["cat_{i}"].fill_null(0)')
            lines.append(f'df["cat_{i}"] = functional.sigrid_hash(df["cat_{i}"], 0, {n})')
            lines.append(f'df["cat_{i}"] = functional.firstx(df["cat_{i}"], 1)')
        return "\n".join(lines) + "\n"
    if name in ("plan2", "plan3"):
        n_dense, n_sparse = (26, 52) if name == "plan2" else (52, 104)
        t = PLAN_BUCKET_TABLE
        lines = [
            f"# RAP {name} (reconstructed): {n_dense} dense, {n_sparse} sparse, tables of {t} rows"
        ]
        for j in range(n_dense):
            src = f"int_{j % 13}"
            lines.append(f'df["dense_{j}"] = df["{src}"].fill_null(0)')
            if j % 2 == 0:
                lines.append(f'df["dense_{j}"] = functional.logit(df["dense_{j}"], 1e-5)')
            else:
                lines.append(f'df["dense_{j}"] = functional.boxcox(df["dense_{j}"], 0.0)')
        for k in range(n_sparse):
            out = f"sparse_{k}"
            kind = k % 4
            if kind in (0, 1):  # categorical: hash, clamp length
                lines.append(f'df["{out}"] = df["cat_{k % 26}"].fill_null(0)')
                lines.append(f'df["{out}"] = functional.sigrid_hash(df["{out}"], {k}, {t})')
                lines.append(f'df["{out}"] = functional.firstx(df["{out}"], 1)')
            elif kind == 2:  # dense count -> one-hot bucket list -> ids
                lines.append(f'df["{out}"] = df["int_{k % 13}"].fill_null(0)')
                lines.append(f'df["{out}"] = functional.clamp(df["{out}"], 0, 16)')
                lines.append(f'df["{out}"] = functional.onehot(df["{out}"], 0, 16, 5)')
                lines.append(f'df["{out}"] = functional.firstx(df["{out}"], 5)')
                lines.append(f'df["{out}"] = functional.sigrid_hash(df["{out}"], {k}, {t})')
            else:  # one-hot -> 4-grams -> first 20
                lines.append(f'df["{out}"] = df["int_{k % 13}"].fill_null(0)')
                lines.append(f'df["{out}"] = functional.onehot(df["{out}"], 0, 16, 8)')
                lines.append(f'df["{out}"] = functional.ngram(df["{out}"], 4)')
                lines.append(f'df["{out}"] = functional.firstx(df["{out}"], 20)')
                lines.append(f'df["{out}"] = functional.sigrid_hash(df["{out}"], {k}, {t})')
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown plan {name!r}; expected one of {', '.join(PLANS)} or a script file")


def plan_placement(name: str, n_gpus: int) -> list[int] | None:
    """The artifact's hard-coded table placement where it has one, else None (balance)."""
    from rap_share.constants import ARTIFACT_PLACEMENT

    return ARTIFACT_PLACEMENT.get((name, n_gpus))
