-- examples/splice.yaml: the driver's Splice process function (bench/flink/WeirFlinkBench.java)
-- runs between `events` and `results` (bench.py passes --process splice).
CREATE TABLE results (requestId STRING, firstSeen BIGINT, lastSeen BIGINT, impressions BIGINT,
                      clicks BIGINT, heartbeats BIGINT, impressedAds ARRAY<STRING>,
                      watchedMs BIGINT, heartbeatMsTotal BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');
