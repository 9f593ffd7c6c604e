-- Nexmark q5: hot items, the auctions with the most bids in each 10 s window sliding by 2 s
-- (all of them on a tie). Flink's Window Top-N only supports ROW_NUMBER (one winner), so
-- the ties are kept the standard way: a window join of the per-auction counts with their
-- per-window maximum (both re-windowed on the count's window_time so the join stays
-- append-only).
CREATE TABLE results (auction BIGINT, num BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3))
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

CREATE VIEW auction_bids AS
  SELECT auction, COUNT(*) AS num, window_start AS ws, window_end AS we, window_time AS wt
  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
  GROUP BY auction, window_start, window_end, window_time;

INSERT INTO results
SELECT L.auction, L.num, L.ws, L.we
FROM (SELECT * FROM TABLE(TUMBLE(TABLE auction_bids, DESCRIPTOR(wt), INTERVAL '2' SECOND))) L
JOIN (
  SELECT MAX(num) AS maxn, window_start, window_end
  FROM TABLE(TUMBLE(TABLE auction_bids, DESCRIPTOR(wt), INTERVAL '2' SECOND))
  GROUP BY window_start, window_end
) R
ON L.window_start = R.window_start AND L.window_end = R.window_end AND L.num = R.maxn;
