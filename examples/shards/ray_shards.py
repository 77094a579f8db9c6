"""A pipeline's load as a shard plan on a Ray cluster, with no scheduler of our own.

    python ray_shards.py CONFIG [TABLE ...] --plans s3://bucket/plans --shards 8 [--etl PATH]

One TABLE: a plan of that table; several, or none (every table of the pipeline): one plan
of those tables, their shards numbered together (--shards is per table).

`etl plan` runs here (the driver) and stores the plan under --plans; each shard is one Ray
task running `etl shard --plan … --index N` on a worker node; Ray retries a task whose
process or worker dies (`max_retries`, `retry_exceptions`), and a shard run twice stages
once. When every task has returned, `etl commit` makes all the shards visible in one commit
and moves the watermark once. Prints one JSON line: the plan, each shard's node, the report.

Every node needs the `etl` binary and the configuration file at the same paths, and reaches
the source and the plans' store itself. Secrets stay references in the file (`${env:…}`,
`${ssm:…}`, `${secretsmanager:…}`), resolved where each worker runs; --env NAME passes a
variable of the driver's environment to the workers (Ray's runtime_env).
"""

import argparse
import json
import os
import subprocess

import ray


def etl(binary, *args):
    """Runs the etl command; its JSON line, or an error carrying its stderr."""
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"etl {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return json.loads(r.stdout)


@ray.remote(num_cpus=1, max_retries=3, retry_exceptions=True)
def run_shard(binary, config, plan, index):
    out = etl(binary, "shard", config, "--plan", plan, "--index", str(index))
    return {
        "index": index,
        "node": ray.util.get_node_ip_address(),
        "recorded": out["recorded"],
        "rows": out["manifest"]["written"],
        "attempt": out["manifest"]["attempt"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("tables", nargs="*", help="the tables (none: every table)")
    ap.add_argument("--plans", required=True, help="where plans are kept (s3://bucket/prefix, a folder)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--etl", default="etl", help="the etl binary, at the same path on every node")
    ap.add_argument("--address", default="auto", help="the Ray cluster (default: the one this node is in)")
    ap.add_argument("--env", action="append", default=[], help="a variable to pass to the workers")
    args = ap.parse_args()
    env = {k: os.environ[k] for k in args.env if k in os.environ}
    ray.init(address=args.address, runtime_env={"env_vars": env}, log_to_driver=False)
    tables = [a for t in args.tables for a in ("--table", t)]
    plan = etl(args.etl, "plan", args.config, *tables, "--shards", str(args.shards), "--plans", args.plans)
    shards = ray.get([run_shard.remote(args.etl, args.config, plan["plan"], i) for i in range(plan["shards"])])
    report = etl(args.etl, "commit", args.config, "--plan", plan["plan"])
    print(json.dumps({"plan": plan, "shards": shards, "report": report}))


if __name__ == "__main__":
    main()
