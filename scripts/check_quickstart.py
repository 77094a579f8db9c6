"""Reads the quickstart's lake with DuckDB (Hive partitioning) and checks every row.

    python3 scripts/check_quickstart.py LAKE_DIR
"""
import sys

import duckdb

lake = sys.argv[1]
con = duckdb.connect()


def rows(sql):
    return con.execute(sql).fetchall()


orders = f"read_parquet('{lake}/orders/**/*.parquet', hive_partitioning = true)"
customers = f"read_parquet('{lake}/customers/**/*.parquet', hive_partitioning = true)"

got = rows(f"""SELECT order_id, customer_id, product_name, quantity, price::VARCHAR, order_date::VARCHAR,
                      updated_at::VARCHAR, year, month, day FROM {orders} ORDER BY order_id, updated_at""")
want = [
    (1, 1, "Widget", 2, "9.99", "2025-07-22", "2025-07-22 08:00:00", 2025, 7, 22),
    (2, 2, "Gadget", 1, "24.5", "2025-07-22", "2025-07-22 09:30:00", 2025, 7, 22),
    (2, 2, "Gadget", 3, "24.5", "2025-07-22", "2025-07-24 06:00:00", 2025, 7, 22),
    (3, 3, "Gizmo", 5, "3.75", "2025-07-22", "2025-07-22 12:00:00", 2025, 7, 22),
    (4, 1, "Sprocket", 1, "12.0", "2025-07-23", "2025-07-23 07:45:00", 2025, 7, 23),
    (5, 4, "Widget", 3, "9.99", "2025-07-23", "2025-07-23 10:10:00", 2025, 7, 23),
    (6, 5, "Flux Capacitor", 1, "1210.0", "2025-07-23", "2025-07-23 13:00:00", 2025, 7, 23),
    (7, 2, "Cog", 10, "0.99", "2025-07-23", "2025-07-23 16:20:00", 2025, 7, 23),
    (8, 3, "Lever", 2, "4.25", "2025-07-23", "2025-07-23 23:59:59", 2025, 7, 23),
    (9, 6, "Gizmo", 1, "3.75", "2025-07-24", "2025-07-24 09:15:00", 2025, 7, 24),
    (10, 7, "Widget", 4, "9.99", "2025-07-24", "2025-07-24 10:30:00", 2025, 7, 24),
    (11, 1, "Doohickey", 2, "7.5", "2025-07-24", "2025-07-24 11:00:00", 2025, 7, 24),
    (12, 3, "Thingamajig", 2, "19.99", "2025-07-24", "2025-07-24 12:30:00", 2025, 7, 24),
]
assert got == want, f"orders:\n{got}\n!=\n{want}"

got = rows(f"""SELECT customer_id, email, updated_at::VARCHAR FROM {customers} ORDER BY customer_id, updated_at""")
want = [
    (1, "ada@example.com", "2025-07-01 09:00:00"),
    (2, "alan@example.com", "2025-07-02 10:30:00"),
    (3, "grace@example.com", "2025-07-03 11:15:00"),
    (3, "grace.hopper@example.com", "2025-07-24 08:00:00"),
    (4, "edsger@example.com", "2025-07-05 08:45:00"),
    (5, "barbara@example.com", "2025-07-10 14:20:00"),
    (6, "don@example.com", "2025-07-24 09:00:00"),
    (7, "frances@example.com", "2025-07-24 10:05:00"),
]
assert got == want, f"customers:\n{got}\n!=\n{want}"
cols = [r[0] for r in rows(f"DESCRIBE SELECT * FROM {customers}")]
assert "etl_processed_at" in cols and {"processing_year", "processing_month", "processing_day"} <= set(cols), cols
types = dict(rows(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {orders})"))
assert (types["year"], types["month"], types["day"]) == ("BIGINT", "BIGINT", "BIGINT"), types
print(f"quickstart lake OK: {len(want)} customers rows, 13 orders rows, read back by DuckDB {duckdb.__version__}")
