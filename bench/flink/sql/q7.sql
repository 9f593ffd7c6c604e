-- Nexmark q7: highest bid, the bids with the highest price of each 10 s tumbling window
-- (an interval join of the bids with the window's maximum, on price and window).
CREATE TABLE results (auction BIGINT, price BIGINT, bidder BIGINT, `dateTime` BIGINT, extra STRING)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results
SELECT B.auction, B.price, B.bidder, B.ts, B.extra
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_time AS wt
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '10' SECOND))
  GROUP BY window_start, window_end, window_time
) B1
ON B.price = B1.maxprice
WHERE B.`dateTime` > B1.wt - INTERVAL '10' SECOND AND B.`dateTime` <= B1.wt;
