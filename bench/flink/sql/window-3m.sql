-- examples/window-3m.yaml: impressions and distinct requests per ad in 3-minute tumbling windows.
CREATE TABLE results (key STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3),
                      impressions BIGINT, requests BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results
SELECT adId, window_start, window_end, COUNT(*), COUNT(DISTINCT requestId)
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(rt), INTERVAL '3' MINUTE))
WHERE `type` = 'impression'
GROUP BY adId, window_start, window_end;
