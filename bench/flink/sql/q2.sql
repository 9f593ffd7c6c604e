-- Nexmark q2: selection of bids on every 123rd auction.
CREATE TABLE results (auction BIGINT, price BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0;
