-- Nexmark q4: average closing price per category (the updating SQL form: the highest bid so far
-- per auction, averaged per category). The result is a changelog; the debezium-json format lets
-- the filesystem sink write it (inserts as "c", retractions as "d"), and bench.py replays it to
-- the final price per category.
CREATE TABLE results (category BIGINT, avgprice BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'debezium-json');

INSERT INTO results
SELECT Q.category, AVG(Q.final)
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.`dateTime` BETWEEN A.`dateTime` AND TO_TIMESTAMP_LTZ(A.expires, 3)
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category;
