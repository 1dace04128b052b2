-- q18: the last bid of each bidder on each auction (deduplication).
-- batch: same
SELECT auction, bidder, price, channel, url, date_time
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC) AS rank_number FROM bid)
WHERE rank_number <= 1
