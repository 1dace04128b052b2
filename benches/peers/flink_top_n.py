#!/usr/bin/env python3
"""Flink's side of the `topn` pipeline benchmark: an unbounded Top-N (the
three highest bids of each of 1,000 auctions) over the same Bid-shaped
datagen table as ../shared/peers/flink/flink_bench.py, in a PyFlink local
mini-cluster with heap state.

usage: python flink_top_n.py PARALLELISM ROWS   (with the peers' virtualenv:
       ~/.cache/weir-peers/flink-venv/bin/python, made by ../shared/peers/flink/run.sh)
Prints one JSON line; compare on events_per_cpu_s (the JVM's user+system CPU
seconds from submission to completion), as the peers' script does.
"""
import json, os, sys, time

from pyflink.table import EnvironmentSettings, TableEnvironment

par, rows = int(sys.argv[1]), int(sys.argv[2])
t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
conf = t_env.get_config()
conf.set("parallelism.default", str(par))
conf.set("pipeline.object-reuse", "true")
t_env.execute_sql(f"""
CREATE TABLE bid (
  id BIGINT, auction BIGINT, bidder BIGINT, price BIGINT, channel STRING,
  ts AS TO_TIMESTAMP_LTZ(id, 3), WATERMARK FOR ts AS ts
) WITH (
  'connector' = 'datagen', 'number-of-rows' = '{rows}', 'rows-per-second' = '1000000000',
  'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '{rows}',
  'fields.auction.min' = '1000', 'fields.auction.max' = '1999',
  'fields.bidder.min' = '1000', 'fields.bidder.max' = '10999',
  'fields.price.min' = '1', 'fields.price.max' = '100000',
  'fields.channel.length' = '8'
)""")
t_env.execute_sql(
    "CREATE TABLE sink (auction BIGINT, price BIGINT, id BIGINT, rn BIGINT) WITH ('connector'='blackhole')")
dml = ("INSERT INTO sink SELECT auction, price, id, rn FROM ("
       " SELECT auction, price, id, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn"
       " FROM bid) WHERE rn <= 3")


def jvm_cpu_s():
    """utime+stime (all threads) of the gateway JVM, a child of this process."""
    total = 0.0
    for tid in os.listdir("/proc/self/task"):
        for pid in open(f"/proc/self/task/{tid}/children").read().split():
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return total


cpu_before, t_before = jvm_cpu_s(), time.time()
result = t_env.execute_sql(dml)
job = result.get_job_client().get_job_execution_result().result()
cpu = jvm_cpu_s() - cpu_before
print(json.dumps({
    "query": "topn", "parallelism": par, "rows": rows,
    "submit_to_done_s": round(time.time() - t_before, 2),
    "job_net_runtime_s": round(job.get_net_runtime() / 1000.0, 2),
    "jvm_cpu_s_submit_to_done": round(cpu, 1),
    "events_per_cpu_s": int(rows / max(cpu, 1e-9)),
}), flush=True)
