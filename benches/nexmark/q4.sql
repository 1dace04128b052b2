-- q4: average closing price per category: the highest bid of each auction
-- while it was open, averaged by category (a join, an aggregate of an
-- aggregate).
-- batch: same
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
  SELECT MAX(B.price) AS final, A.category
  FROM auction A, bid B
  WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
  GROUP BY A.id, A.category
) Q
GROUP BY Q.category
