-- q2: selection of some auctions (RisingWave's form: every 123rd).
-- batch: same
SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0
