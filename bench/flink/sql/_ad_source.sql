-- The ad-event input: the JSON lines Weir's adEvents generator writes (bench/lib/bench.py
-- prepares the file). Event time: ts (epoch ms), watermark 5 s behind, as in examples/*.yaml.
-- Prepended to every workload script by bench.py.
CREATE TABLE events (
  `type` STRING,
  requestId STRING,
  adId STRING,
  userId STRING,
  ts BIGINT,
  playMs BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}', 'format' = 'json');
