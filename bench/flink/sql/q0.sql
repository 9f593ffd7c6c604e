-- Nexmark q0: passthrough of every bid.
CREATE TABLE results (auction BIGINT, bidder BIGINT, price BIGINT, `dateTime` BIGINT, extra STRING)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results SELECT auction, bidder, price, ts, extra FROM bid;
