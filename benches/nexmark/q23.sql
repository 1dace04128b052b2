-- q23: a multi-way join: bids of category-10 auctions with their sellers.
-- batch: same
SELECT B.auction, B.price, A.category, P.name, P.city
FROM bid B
JOIN auction A ON B.auction = A.id
JOIN person P ON A.seller = P.id
WHERE A.category = 10
