-- Nexmark q1: currency conversion (integer cents: price * 908 / 1000, as Weir's pipeline).
CREATE TABLE results (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` BIGINT, extra STRING)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results SELECT auction, bidder, CAST(price * 908 / 1000 AS BIGINT), ts, extra FROM bid;
