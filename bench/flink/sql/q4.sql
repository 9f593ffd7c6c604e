-- Nexmark q4: average closing price per category. Flink only (Weir cannot express it yet:
-- it needs non-windowed, updating aggregations with retractions). The result is a changelog,
-- so it goes to a blackhole sink; bench.py reports Flink's figures without a Weir row.
CREATE TABLE results (category BIGINT, avgprice BIGINT) WITH ('connector' = 'blackhole');

INSERT INTO results
SELECT Q.category, AVG(Q.final)
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND TO_TIMESTAMP_LTZ(A.expires, 3)
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
