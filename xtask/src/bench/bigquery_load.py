"""The limit of the PostgreSQL -> BigQuery benchmark (xtask/src/bench/bigquery.rs), run by
the Python of the BigQuery emulator's venv (which has pyarrow: bqemulator depends on it).

  parquet COLUMNS CSV PARQUET
      PostgreSQL's CSV of the source table (`COPY ... TO STDOUT (FORMAT csv)`) as a Parquet
      file of the Arrow types dpone loads the same columns as (`arrow_type` in
      host/src/model.rs), written as dpone writes its load file: uncompressed, row groups
      of 65,536 rows, every field nullable. Untimed.
  load ENDPOINT PROJECT DATASET TABLE COLUMNS PARQUET
      Creates TABLE with the BigQuery types dpone gives the same columns, uploads PARQUET
      in one resumable upload into a load job and waits until the job is done. The
      standard library only (run it with -S). Timed.

COLUMNS is a JSON list of [name, PostgreSQL type] pairs, e.g. [["id", "bigint NOT NULL"]].
"""

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
import uuid

# dpone's ROW_GROUP_ROWS (host/src/connectors/bigquery/client.rs): 8 * 8192.
ROW_GROUP_ROWS = 65536
JOB_TIMEOUT_SECONDS = 3600
# The emulator is on 127.0.0.1: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def parse_columns(text):
    """[(name, base type, required)] from COLUMNS."""
    columns = []
    for name, sql_type in json.loads(text):
        base = sql_type.strip().lower()
        required = base.endswith(" not null")
        if required:
            base = base[: -len(" not null")].strip()
        columns.append((name, base, required))
    return columns


def decimal_spec(base):
    """(precision, scale) of numeric(p,s) / decimal(p,s), else None."""
    m = re.fullmatch(r"(?:numeric|decimal)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", base)
    return (int(m.group(1)), int(m.group(2))) if m else None


def is_text(base):
    return base == "text" or re.fullmatch(r"(varchar|character varying|char|character)(\(\d+\))?", base)


def bigquery_field(name, base, required):
    """The field dpone's CREATE TABLE gives a column (`native_type` in
    host/src/connectors/bigquery/types.rs)."""
    simple = {
        "smallint": "INT64",
        "integer": "INT64",
        "bigint": "INT64",
        "boolean": "BOOL",
        "real": "FLOAT64",
        "double precision": "FLOAT64",
        "date": "DATE",
        "timestamp": "DATETIME",
        "timestamptz": "TIMESTAMP",
    }
    field = {"name": name, "mode": "REQUIRED" if required else "NULLABLE"}
    spec = decimal_spec(base)
    if base in simple:
        field["type"] = simple[base]
    elif is_text(base):
        field["type"] = "STRING"
    elif spec and spec[1] <= 9 and spec[0] - spec[1] <= 29:
        field.update(type="NUMERIC", precision=str(spec[0]), scale=str(spec[1]))
    else:
        sys.exit(f"column {name}: no BigQuery type for PostgreSQL {base}")
    return field


def arrow_type(pa, name, base):
    """The Arrow type dpone reads a column of PostgreSQL type `base` as."""
    simple = {
        "smallint": pa.int16(),
        "integer": pa.int32(),
        "bigint": pa.int64(),
        "boolean": pa.bool_(),
        "real": pa.float32(),
        "double precision": pa.float64(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us"),
        # psql runs with PGTZ=UTC: `2020-01-01 00:00:00+00`.
        "timestamptz": pa.timestamp("us", tz="UTC"),
    }
    spec = decimal_spec(base)
    if base in simple:
        return simple[base]
    if is_text(base):
        return pa.string()
    if spec:
        return pa.decimal128(*spec)
    sys.exit(f"column {name}: no Arrow type for PostgreSQL {base} read from CSV")


def parquet(columns_json, csv_path, parquet_path):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns = parse_columns(columns_json)
    schema = pa.schema([pa.field(n, arrow_type(pa, n, b), nullable=True) for n, b, _ in columns])
    table = pacsv.read_csv(
        csv_path,
        read_options=pacsv.ReadOptions(column_names=[n for n, _, _ in columns]),
        # A quoted value may hold a line break.
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        # PostgreSQL's CSV: NULL is an unquoted empty field, an empty string is "".
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    table = table.cast(schema)
    pq.write_table(table, parquet_path, row_group_size=ROW_GROUP_ROWS, compression="NONE")
    print(f"{table.num_rows} rows")


def request(method, url, body=None, headers=None, data=None):
    """(status, headers, parsed JSON or None); fails on an HTTP error with the API's message."""
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with OPENER.open(req, timeout=JOB_TIMEOUT_SECONDS) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {url}: HTTP {e.code}: {e.read().decode(errors='replace')[:1000]}")


def job_failed(job):
    error = (job.get("status") or {}).get("errorResult")
    if error:
        job_id = (job.get("jobReference") or {}).get("jobId", "?")
        sys.exit(f"load job {job_id} failed: {error.get('message', error)}")


def load(endpoint, project, dataset, table, columns_json, parquet_path):
    api = f"{endpoint.rstrip('/')}/bigquery/v2/projects/{project}"
    fields = [bigquery_field(*c) for c in parse_columns(columns_json)]
    request("POST", f"{api}/datasets/{dataset}/tables", {
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
        "schema": {"fields": fields},
    })
    job_id = f"bench_load_{uuid.uuid4().hex}"
    _, headers, _ = request(
        "POST",
        f"{endpoint.rstrip('/')}/upload/bigquery/v2/projects/{project}/jobs?uploadType=resumable",
        {
            "jobReference": {"projectId": project, "jobId": job_id},
            "configuration": {"load": {
                "destinationTable": {"projectId": project, "datasetId": dataset, "tableId": table},
                "sourceFormat": "PARQUET",
                "writeDisposition": "WRITE_APPEND",
                "createDisposition": "CREATE_NEVER",
                # As dpone's load jobs: the file's decimals into NUMERIC (or BIGNUMERIC).
                "decimalTargetTypes": ["NUMERIC", "BIGNUMERIC"],
            }},
        },
    )
    upload = headers.get("Location")
    if not upload:
        sys.exit("the resumable upload answered without a Location")
    size = os.path.getsize(parquet_path)
    with open(parquet_path, "rb") as f:
        # A file body is streamed in blocks: memory stays flat whatever the file's size.
        _, _, job = request("PUT", upload, data=f, headers={
            "Content-Length": str(size),
            "Content-Range": f"bytes 0-{size - 1}/{size}",
        })
    if not job:
        sys.exit(f"load job {job_id}: no job in the answer to the upload")
    # The emulator names the job itself, whatever the request's jobReference said.
    job_id = job.get("jobReference", {}).get("jobId", job_id)
    started = time.monotonic()
    pause = 0.1
    while True:
        job_failed(job)
        if job.get("status", {}).get("state") == "DONE":
            break
        if time.monotonic() - started > JOB_TIMEOUT_SECONDS:
            sys.exit(f"load job {job_id} not done after {JOB_TIMEOUT_SECONDS} s")
        time.sleep(pause)
        pause = min(pause * 2, 5)
        _, _, job = request("GET", f"{api}/jobs/{job_id}")
    rows = job.get("statistics", {}).get("load", {}).get("outputRows")
    print(f"load job {job_id}: {rows} rows")


if __name__ == "__main__":
    commands = {"parquet": (parquet, 3), "load": (load, 6)}
    if len(sys.argv) < 2 or sys.argv[1] not in commands or len(sys.argv) != commands[sys.argv[1]][1] + 2:
        sys.exit(f"usage: {sys.argv[0]} parquet COLUMNS CSV PARQUET | load ENDPOINT PROJECT DATASET TABLE COLUMNS PARQUET")
    command, _ = commands[sys.argv[1]]
    command(*sys.argv[2:])
