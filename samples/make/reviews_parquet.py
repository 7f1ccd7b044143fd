"""Writes samples/reviews.parquet from samples/reviews.csv with pyarrow, the way a data team's
own tools would: typed columns (an integer rating, a date, a nullable float, a list of tags, a
struct of metadata), snappy-compressed, two row groups.

    python3 -m venv /tmp/pa && /tmp/pa/bin/pip install pyarrow==26.0.1
    /tmp/pa/bin/python samples/make/reviews_parquet.py
"""
import csv
import datetime
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

here = pathlib.Path(__file__).resolve().parent.parent
rows = list(csv.DictReader(open(here / "reviews.csv", newline="", encoding="utf-8")))
n = len(rows)
table = pa.table({
    "id": [r["id"] for r in rows],
    "product": [r["product"] for r in rows],
    "rating": pa.array([int(r["rating"]) for r in rows], pa.int32()),
    "text": [r["text"] for r in rows],
    "reviewed_on": [datetime.date(2026, 11, 1 + i % 28) for i in range(n)],
    "helpful": pa.array([None if i % 4 == 0 else round(0.25 * (i % 5), 2) for i in range(n)], pa.float64()),
    "tags": [[r["product"].split()[0].lower(), "rating-" + r["rating"]] for r in rows],
    "metadata": [{"source": "store", "batch": i // 10} for i in range(n)],
})
pq.write_table(table, here / "reviews.parquet", compression="snappy", row_group_size=(n + 1) // 2)
print(f"wrote {here / 'reviews.parquet'}: {n} rows, {table.num_columns} columns")
