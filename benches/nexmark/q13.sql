-- q13: bounded side input join: bids joined with a side table by
-- processing time.
-- unsupported: a lookup join (FOR SYSTEM_TIME AS OF) against a side input is not built yet
SELECT B.auction, B.bidder, B.price, B.date_time, S.value
FROM (SELECT *, PROCTIME() AS p_time FROM bid) B
JOIN side_input FOR SYSTEM_TIME AS OF B.p_time AS S ON MOD(B.auction, 10000) = S.key
