-- examples/effective-click.yaml: the driver's EffectiveClick process function
-- (bench/flink/WeirFlinkBench.java) runs between `events` and `results`
-- (bench.py passes --process effective-click).
CREATE TABLE results (requestId STRING, adId STRING, clickTs BIGINT, heartbeats BIGINT,
                      watchedUntil BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');
