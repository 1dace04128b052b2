-- q5: hot items: the auctions with the most bids in each 10-second window,
-- every 2 seconds (a window aggregate joined with its maximum).
SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
FROM (
  SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
  FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
  GROUP BY auction, window_start, window_end
) AS AuctionBids
JOIN (
  SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
  FROM (
    SELECT COUNT(*) AS num, window_start AS starttime, window_end AS endtime
    FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
    GROUP BY auction, window_start, window_end
  ) AS CountBids
  GROUP BY CountBids.starttime, CountBids.endtime
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
   AND AuctionBids.num >= MaxBids.maxn
-- batch:
WITH hopped AS (
  SELECT auction, date_bin(INTERVAL '2' SECOND, date_time) - k.d AS starttime
  FROM bid CROSS JOIN (VALUES (INTERVAL '0' SECOND), (INTERVAL '2' SECOND), (INTERVAL '4' SECOND),
                              (INTERVAL '6' SECOND), (INTERVAL '8' SECOND)) AS k(d)
),
counts AS (SELECT auction, starttime, COUNT(*) AS num FROM hopped GROUP BY auction, starttime)
SELECT c.auction, c.num, c.starttime FROM counts c
JOIN (SELECT starttime, MAX(num) AS maxn FROM counts GROUP BY starttime) m
ON c.starttime = m.starttime AND c.num >= m.maxn
