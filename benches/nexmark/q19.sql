-- q19: the ten highest bids of each auction (ranks of tied prices swap
-- between equal rows, so the ranked prices are compared).
-- batch: same
SELECT auction, price, rank_number
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
WHERE rank_number <= 10
