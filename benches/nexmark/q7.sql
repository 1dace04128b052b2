-- q7: the highest bid of each 10-second window (a stream joined with a
-- window aggregate).
SELECT B.auction, B.price, B.bidder, B.date_time
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end AS date_time
  FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
  GROUP BY window_start, window_end
) B1 ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time
-- batch:
SELECT B.auction, B.price, B.bidder, B.date_time FROM bid B
JOIN (SELECT MAX(price) AS maxprice, date_bin(INTERVAL '10' SECOND, date_time) + INTERVAL '10' SECOND AS date_time
      FROM bid GROUP BY date_bin(INTERVAL '10' SECOND, date_time)) B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time
