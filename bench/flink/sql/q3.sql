-- Nexmark q3: local item suggestion, a regular (unbounded) join of sellers in OR/ID/CA with
-- their category-10 auctions.
CREATE TABLE results (name STRING, city STRING, state STRING, id BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'json');

INSERT INTO results
SELECT P.name, P.city, P.state, A.id
FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
