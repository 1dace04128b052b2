-- q8: new users: people who opened an auction in the same 10-second window
-- as they registered (a window join).
SELECT P.id, P.name, P.starttime
FROM (
  SELECT id, name, window_start AS starttime, window_end AS endtime
  FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
  GROUP BY id, name, window_start, window_end
) P
JOIN (
  SELECT seller, window_start AS starttime, window_end AS endtime
  FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
  GROUP BY seller, window_start, window_end
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime
-- batch:
SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, date_bin(INTERVAL '10' SECOND, date_time) AS starttime FROM person
      GROUP BY id, name, date_bin(INTERVAL '10' SECOND, date_time)) P
JOIN (SELECT seller, date_bin(INTERVAL '10' SECOND, date_time) AS starttime FROM auction
      GROUP BY seller, date_bin(INTERVAL '10' SECOND, date_time)) A
ON P.id = A.seller AND P.starttime = A.starttime
