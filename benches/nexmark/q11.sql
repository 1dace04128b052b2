-- q11: user sessions: bids per bidder in sessions with 10-second gaps.
SELECT B.bidder, COUNT(*) AS bid_count,
  SESSION_START(B.date_time, INTERVAL '10' SECOND) AS starttime,
  SESSION_END(B.date_time, INTERVAL '10' SECOND) AS endtime
FROM bid B
GROUP BY B.bidder, SESSION(B.date_time, INTERVAL '10' SECOND)
-- batch:
WITH ordered AS (
  SELECT bidder, date_time,
    CASE WHEN date_time < LAG(date_time) OVER (PARTITION BY bidder ORDER BY date_time) + INTERVAL '10' SECOND
         THEN 0 ELSE 1 END AS starts
  FROM bid
),
numbered AS (
  SELECT bidder, date_time,
    SUM(starts) OVER (PARTITION BY bidder ORDER BY date_time ROWS UNBOUNDED PRECEDING) AS session
  FROM ordered
)
SELECT bidder, COUNT(*) AS bid_count, MIN(date_time) AS starttime,
  MAX(date_time) + INTERVAL '10' SECOND AS endtime
FROM numbered GROUP BY bidder, session
