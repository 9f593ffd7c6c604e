-- examples/impression-click.yaml: an impression followed by its click (same request and ad)
-- within 5 minutes, with MATCH_RECOGNIZE. Same-millisecond impression and click: the
-- impression sorts first (secondary order on type), like Weir's sameTimestampOrder.
-- The generator gives a session at most one click, so `A B` matches what Weir's
-- `imp, click+ (followedBy)` matches.
CREATE TABLE results (requestId STRING, adId STRING, impressionTs BIGINT, clicks BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results
SELECT requestId, adId, impressionTs, clicks
FROM (SELECT * FROM events WHERE `type` IN ('impression', 'click'))
MATCH_RECOGNIZE (
  PARTITION BY requestId, adId
  ORDER BY rt, `type` DESC
  MEASURES A.ts AS impressionTs, COUNT(B.ts) AS clicks
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A B) WITHIN INTERVAL '5' MINUTE
  DEFINE A AS A.`type` = 'impression', B AS B.`type` = 'click'
);
