-- The Nexmark input: the JSON lines Weir's nexmark generator writes (bench/lib/bench.py
-- prepares the file), one flat record per event with a `type` field. Included by every
-- q*.sql (bench.py prepends it). Event time: dateTime (epoch ms), watermark 2 s behind.
CREATE TABLE events (
  `type` STRING,
  id BIGINT,
  name STRING,
  emailAddress STRING,
  creditCard STRING,
  city STRING,
  state STRING,
  itemName STRING,
  description STRING,
  initialBid BIGINT,
  reserve BIGINT,
  expires BIGINT,
  seller BIGINT,
  category BIGINT,
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel STRING,
  url STRING,
  `dateTime` BIGINT,
  extra STRING,
  rt AS TO_TIMESTAMP_LTZ(`dateTime`, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${INPUT}', 'format' = 'json');

CREATE VIEW person AS
  SELECT id, name, emailAddress, creditCard, city, state, rt AS `dateTime`, `dateTime` AS ts, extra
  FROM events WHERE `type` = 'person';

CREATE VIEW auction AS
  SELECT id, itemName, description, initialBid, reserve, rt AS `dateTime`, `dateTime` AS ts,
         expires, seller, category, extra
  FROM events WHERE `type` = 'auction';

CREATE VIEW bid AS
  SELECT auction, bidder, price, channel, url, rt AS `dateTime`, `dateTime` AS ts, extra
  FROM events WHERE `type` = 'bid';
