-- q0: pass-through.
-- batch: same
SELECT auction, bidder, price, date_time FROM bid
