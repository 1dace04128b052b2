-- q12: bids per bidder in 10-second processing-time windows (Flink's
-- query windows a subquery's PROCTIME(); here the bid table declares it).
-- no-batch: processing time has no batch equivalent; checked to run
SELECT bidder, COUNT(*) AS bid_count, window_start, window_end
FROM TUMBLE(bid, p_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end
