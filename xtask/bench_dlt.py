"""The dlt contender of `cargo xtask bench`: one PostgreSQL table into another database.

Run by xtask with the bench venv's Python:

    python bench_dlt.py SOURCE_URL TABLE DEST_URL DATASET PIPELINES_DIR replace|merge

`replace` reloads the whole table; `merge` upserts by `id` the rows whose `updated_at` is
past the value dlt stored after its previous run (dlt's own incremental state, kept in
PIPELINES_DIR and in the dataset).
"""

import sys

import dlt
import pyarrow as pa
from dlt.sources.sql_database import sql_table


def hex_binary(batch: pa.Table) -> pa.Table:
    """bytea values as `\\x<hex>` text, the workaround dlt's CSV writer asks for: it cannot
    write raw binary into the CSV it COPYs into PostgreSQL. The column stays bytea."""
    for i, field in enumerate(batch.schema):
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            values = [None if v is None else "\\x" + v.hex() for v in batch.column(i).to_pylist()]
            batch = batch.set_column(i, field.name, pa.array(values, pa.string()))
    return batch


def main() -> None:
    source_url, table, dest_url, dataset, pipelines_dir, mode = sys.argv[1:]
    if mode == "replace":
        resource = sql_table(credentials=source_url, table=table, backend="pyarrow")
        write_disposition = "replace"
    elif mode == "merge":
        resource = sql_table(
            credentials=source_url,
            table=table,
            backend="pyarrow",
            incremental=dlt.sources.incremental("updated_at"),
        )
        resource.apply_hints(primary_key="id")
        write_disposition = "merge"
    else:
        sys.exit(f"unknown mode {mode!r}: expected replace or merge")
    resource.add_map(hex_binary)

    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{table}",
        pipelines_dir=pipelines_dir,
        destination=dlt.destinations.postgres(credentials=dest_url),
        dataset_name=dataset,
    )
    info = pipeline.run(resource, write_disposition=write_disposition)
    info.raise_on_failed_jobs()
    print(info)


if __name__ == "__main__":
    main()
